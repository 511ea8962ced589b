/** A job as the broker's API returns it, with fields overridden per test. */
import type { HostInfo, Job } from '../../../server/protocol/jobs.ts';

export function job(over: Partial<Job> = {}): Job {
  return {
    id: 'a1b2c3d4',
    owner: 'alice',
    name: 'train.py',
    command: ['python3', 'train.py', '--lr', '3e-4'],
    workspace: '/home/alice/project',
    resources: { gpus: 2, gpuType: 'A100', cpus: 8, memoryMiB: 32768, timeLimitSec: 7200 },
    queue: 'online',
    env: {},
    state: 'queued',
    reason: 'waiting for its turn in the queue',
    exitCode: null,
    host: null,
    gpuIndices: [],
    createdAt: '2026-11-22T10:00:00.000Z',
    startedAt: null,
    endedAt: null,
    ...over,
  };
}

export function host(name: string, gpus: Array<{ name: string; jobId?: string }>, state: HostInfo['state'] = 'up'): HostInfo {
  return {
    name,
    state,
    lastError: null,
    runtime: 'process',
    gpus: gpus.map((g, index) => ({ index, uuid: `GPU-${index}`, name: g.name, memoryTotalMiB: 81920, memoryUsedMiB: 0, utilizationPct: 0, jobId: g.jobId ?? null })),
    cpus: 16,
    cpusUsed: 0,
    memoryMiB: 65536,
    memoryUsedMiB: 0,
    labels: {},
  };
}
