import assert from 'node:assert/strict';
import { MemoryStore } from '../../server/store/memory.ts';
import { resilientStore } from '../../server/store/resilient.ts';
import { GpurunError } from '../../server/protocol/errors.ts';
import { silentLogger } from '../../server/logger.ts';
import type { StoredJob } from '../../server/core/store.ts';

/** A memory store whose writes fail like SQLite on a full disk while `full` is set. */
class FullDisk extends MemoryStore {
  full = false;
  override updateJob(...a: Parameters<MemoryStore['updateJob']>) {
    if (this.full) throw new GpurunError('E_STORAGE', "the broker's disk is full: it could not write its database x");
    return super.updateJob(...a);
  }
  override insertJob(...a: Parameters<MemoryStore['insertJob']>) {
    if (this.full) throw new GpurunError('E_STORAGE', "the broker's disk is full: it could not write its database x");
    return super.insertJob(...a);
  }
}

const job = (id: string): Omit<StoredJob, 'seq'> => ({ id, owner: 'alice', name: id, command: ['true'], workspace: '/w', resources: { gpus: 0, cpus: 1, memoryMiB: 1, timeLimitSec: 0 }, queue: 'online', env: {}, state: 'running', reason: 'running', exitCode: null, host: 'h', gpuIndices: [], createdAt: 't0', startedAt: 't0', endedAt: null, runtimeRef: null, stopIntent: null });

describe('resilient store (full disk)', () => {
  it('holds a job end it cannot write, shows it everywhere, and writes it when there is room', () => {
    const inner = new FullDisk();
    const s = resilientStore(inner, silentLogger);
    s.insertJob(job('a'), 't0');
    inner.full = true;
    const ended = s.updateJob('a', { state: 'failed', reason: 'exited with code 1', exitCode: 1, endedAt: 't1' }, 't1');
    assert.equal(ended?.state, 'failed');
    assert.equal(s.getJob('a')?.reason, 'exited with code 1');
    assert.deepEqual(s.activeJobs(), []);
    assert.deepEqual(s.transitions('a').map((t) => t.to), ['running', 'failed']);
    assert.match(s.storageProblem()!, /disk is full/);
    assert.equal(s.pendingWrites(), 1);
    assert.throws(() => s.insertJob(job('b'), 't2'), /disk is full/);
    assert.equal(inner.getJob('a')?.state, 'running', 'not written yet');
    inner.full = false;
    s.updateJob('a', { reason: 'exited with code 1' }, 't3');
    assert.equal(inner.getJob('a')?.state, 'failed');
    assert.equal(s.pendingWrites(), 0);
    assert.equal(s.storageProblem(), undefined);
    assert.deepEqual(s.transitions('a').map((t) => t.to), ['running', 'failed']);
    s.close();
  });
});
