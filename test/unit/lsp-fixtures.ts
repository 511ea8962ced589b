/** A pool snapshot as `GET /v1/pool` answers it: gpu1 with 2×L4 (free), gpu4 with 8×A100 (5 taken), one queued job. */
import type { HostInfo } from '../../server/protocol/jobs.ts';
import type { PoolSnapshot } from '../../server/protocol/pool.ts';

function host(name: string, gpuName: string, n: number, taken: number, extra: Partial<HostInfo> = {}): HostInfo {
  return {
    name,
    state: 'up',
    lastError: null,
    runtime: 'process',
    gpus: Array.from({ length: n }, (_, i) => ({ index: i, uuid: `GPU-${name}-${i}`, name: gpuName, memoryTotalMiB: 81920, memoryUsedMiB: 0, utilizationPct: 0, jobId: i < taken ? `job${i}` : null })),
    cpus: 32,
    cpusUsed: taken,
    memoryMiB: 256 * 1024,
    memoryUsedMiB: taken * 1024,
    labels: {},
    ...extra,
  };
}

export function pool(over: Partial<PoolSnapshot> = {}): PoolSnapshot {
  return {
    at: '2026-12-01T12:00:00.000Z',
    hosts: [host('gpu1', 'NVIDIA L4', 2, 0), host('gpu4', 'NVIDIA A100-SXM4-80GB', 8, 5)],
    queues: [
      { name: 'online', maxTimeSec: 8 * 3600, defaultTimeSec: 3600, queued: 0 },
      { name: 'offline', maxTimeSec: 7 * 86400, defaultTimeSec: 0, queued: 2 },
    ],
    clusters: [],
    backends: ['hosts'],
    defaultBackend: 'hosts',
    images: ['python:3.12'],
    ...over,
  };
}

export { host };
