import assert from 'node:assert/strict';
import { gpuMatches, schedule, unsatisfiableReason, waitReason, type HostCapacity, type QueuedJob } from '../../server/core/scheduler.ts';
import type { Resources } from '../../server/protocol/jobs.ts';

const gpus = (n: number, name: string) => Array.from({ length: n }, (_, index) => ({ index, name }));
const host = (name: string, g: Array<{ index: number; name: string }>, cpus = 32, memoryMiB = 256_000, up = true): HostCapacity => ({ name, up, gpus: g, cpus, memoryMiB });
const res = (r: Partial<Resources> = {}): Resources => ({ gpus: 1, cpus: 1, memoryMiB: 1024, timeLimitSec: 0, ...r });
const job = (id: string, r: Partial<Resources> = {}, queue: 'online' | 'offline' = 'online'): QueuedJob => ({ id, queue, resources: res(r) });

describe('scheduler', () => {
  const a100 = host('a', gpus(2, 'NVIDIA A100-SXM4-80GB'));
  const l4 = host('b', gpus(4, 'NVIDIA L4'));

  it('places by GPU count and type and never gives a GPU twice', () => {
    const p = schedule([a100, l4], [], [job('j1', { gpus: 2, gpuType: 'a100' }), job('j2', { gpus: 3, gpuType: 'L4' }), job('j3', { gpus: 1, gpuType: 'L4' }), job('j4', { gpus: 1 })]);
    assert.deepEqual(p, [
      { jobId: 'j1', host: 'a', gpuIndices: [0, 1] },
      { jobId: 'j2', host: 'b', gpuIndices: [0, 1, 2] },
      { jobId: 'j3', host: 'b', gpuIndices: [3] },
    ]);
  });

  it('matches a GPU type by whole words of the name: A10 is not an A100', () => {
    const a10 = host('c', gpus(1, 'NVIDIA A10'));
    assert.deepEqual(schedule([a100, a10], [], [job('j', { gpuType: 'A10' })]), [{ jobId: 'j', host: 'c', gpuIndices: [0] }]);
    assert.equal(gpuMatches('NVIDIA A100-SXM4-80GB', 'A10'), false);
    assert.equal(gpuMatches('NVIDIA A100-SXM4-80GB', 'a100 80gb'), true);
    assert.equal(gpuMatches('NVIDIA GeForce RTX 4090', 'RTX 4090'), true);
    assert.equal(gpuMatches('NVIDIA GeForce RTX 4090', '409'), false);
    assert.equal(gpuMatches('Tesla T4', 't4'), true);
  });

  it('subtracts what running jobs hold', () => {
    const p = schedule([a100], [{ jobId: 'r', host: 'a', gpuIndices: [0], cpus: 1, memoryMiB: 1 }], [job('j1', { gpus: 2 }), job('j2', { gpus: 1 })]);
    assert.deepEqual(p, [{ jobId: 'j2', host: 'a', gpuIndices: [1] }]);
  });

  it('serves online before offline, FIFO within a queue', () => {
    const p = schedule([host('h', gpus(1, 'L4'))], [], [job('off', {}, 'offline'), job('on1'), job('on2')]);
    assert.deepEqual(p.map((x) => x.jobId), ['on1']);
  });

  it('backfills: a small job does not wait behind a big one that cannot start', () => {
    const p = schedule([host('h', gpus(2, 'L4'))], [{ jobId: 'r', host: 'h', gpuIndices: [0], cpus: 1, memoryMiB: 1 }], [job('big', { gpus: 2 }), job('small', { gpus: 1 })]);
    assert.deepEqual(p.map((x) => x.jobId), ['small']);
  });

  it('picks the best-fitting host, keeping big holes for big jobs', () => {
    const p = schedule([host('eight', gpus(8, 'H100')), host('two', gpus(2, 'H100'))], [], [job('one', { gpus: 1 }), job('eight', { gpus: 8 })]);
    assert.deepEqual(p, [
      { jobId: 'one', host: 'two', gpuIndices: [0] },
      { jobId: 'eight', host: 'eight', gpuIndices: [0, 1, 2, 3, 4, 5, 6, 7] },
    ]);
  });

  it('respects CPUs and memory, and skips hosts that are not up', () => {
    const hosts = [host('down', gpus(4, 'L4'), 64, 512_000, false), host('small', gpus(4, 'L4'), 4, 8192)];
    assert.deepEqual(schedule(hosts, [], [job('j', { cpus: 8 })]), []);
    assert.deepEqual(schedule(hosts, [], [job('j', { memoryMiB: 16384 })]), []);
    assert.deepEqual(schedule(hosts, [], [job('j', { cpus: 4, memoryMiB: 8192 })]), [{ jobId: 'j', host: 'small', gpuIndices: [0] }]);
  });

  it('runs CPU-only jobs without taking GPUs', () => {
    assert.deepEqual(schedule([a100], [], [job('cpu', { gpus: 0 })]), [{ jobId: 'cpu', host: 'a', gpuIndices: [] }]);
  });

  it('refuses what no host could ever run, saying what the largest host has', () => {
    const why = unsatisfiableReason([a100, l4], res({ gpus: 8 }));
    assert.match(why!, /asks for 8 GPUs, 1 CPU and 1G memory; the largest host, b, has 4 GPUs \(NVIDIA L4\), 32 CPUs/);
    assert.match(unsatisfiableReason([a100, l4], res({ gpus: 1, gpuType: 'H100' }))!, /of type H100/);
    assert.equal(unsatisfiableReason([a100, l4], res({ gpus: 4 })), null);
    assert.match(unsatisfiableReason([], res())!, /no hosts/);
  });

  it('says why a job waits', () => {
    const held = [{ jobId: 'r', host: 'a', gpuIndices: [0, 1], cpus: 1, memoryMiB: 1 }];
    assert.equal(waitReason([a100], held, res({ gpus: 1 })), 'waiting for 1 free GPU on one host (most free now: 0)');
  });
});
