import assert from 'node:assert/strict';
import { HOLD_ROWS_MS, JobList, jobItem, statusText } from '../../../extension/core/jobTree.ts';
import { job } from './fixtures.ts';

const NOW = Date.parse('2026-11-22T10:05:30.000Z');

describe('extension core: the jobs tree model', () => {
  it('groups jobs into Running, Queued (by position) and Recent (newest end first)', () => {
    const list = new JobList();
    list.reset([
      job({ id: 'q2', state: 'queued', queuePosition: 2 }),
      job({ id: 'q1', state: 'queued', queuePosition: 1 }),
      job({ id: 'r1', state: 'running', host: 'gpu-1', gpuIndices: [0, 1], startedAt: '2026-11-22T10:01:00.000Z' }),
      job({ id: 's1', state: 'starting', host: 'gpu-2', startedAt: '2026-11-22T10:02:00.000Z' }),
      job({ id: 'e1', state: 'succeeded', exitCode: 0, endedAt: '2026-11-22T10:03:00.000Z' }),
      job({ id: 'e2', state: 'failed', exitCode: 1, endedAt: '2026-11-22T10:04:00.000Z' }),
    ]);
    assert.deepEqual(list.group('running').map((j) => j.id), ['r1', 's1']);
    assert.deepEqual(list.group('queued').map((j) => j.id), ['q1', 'q2']);
    assert.deepEqual(list.group('recent').map((j) => j.id), ['e2', 'e1']);
    assert.deepEqual(list.counts(), { running: 2, queued: 2 });
    assert.equal(statusText(list.counts()), '$(server-process) 2 running, 2 queued');
  });

  it('moves a job between groups as its events arrive, and ignores a stale event after the final one', () => {
    const list = new JobList();
    list.reset([job({ id: 'j', state: 'queued', queuePosition: 1 })]);
    assert.equal(list.apply(job({ id: 'j', state: 'running', host: 'h' })), true);
    assert.deepEqual(list.group('running').map((j) => j.id), ['j']);
    assert.equal(list.apply(job({ id: 'j', state: 'cancelled', endedAt: '2026-11-22T10:05:00.000Z' })), true);
    assert.equal(list.apply(job({ id: 'j', state: 'running', host: 'h' })), false);
    assert.equal(list.get('j')!.state, 'cancelled');
    assert.deepEqual(list.group('recent').map((j) => j.id), ['j']);
    assert.deepEqual(list.counts(), { running: 0, queued: 0 });
  });

  it('shows a running job with host, GPUs, elapsed time, a spinning icon and a cancel action', () => {
    const v = jobItem(job({ state: 'running', host: 'gpu-1', gpuIndices: [0, 1], startedAt: '2026-11-22T10:04:00.000Z' }), NOW);
    assert.equal(v.label, 'a1b2c3d4 train.py');
    assert.equal(v.description, 'gpu-1 · GPU 0,1 · 1m');
    assert.deepEqual(v.icon, { id: 'sync~spin', color: 'charts.blue' });
    assert.equal(v.contextValue, 'job-running');
  });

  it('shows the time of a job still going on in whole minutes, so its row does not change every second', () => {
    const at = (sec: number) => jobItem(job({ state: 'running', host: 'gpu-1', gpuIndices: [0], startedAt: new Date(NOW - sec * 1000).toISOString() }), NOW).description;
    assert.equal(at(0), 'gpu-1 · GPU 0 · <1m');
    assert.equal(at(59), 'gpu-1 · GPU 0 · <1m');
    assert.equal(at(60), 'gpu-1 · GPU 0 · 1m');
    assert.equal(at(119), 'gpu-1 · GPU 0 · 1m');
    assert.equal(at(3 * 3600 + 125), 'gpu-1 · GPU 0 · 3h2m');
    assert.equal(at(2 * 86400 + 3 * 3600 + 59), 'gpu-1 · GPU 0 · 2d3h');
  });

  it('shows a restarted job\'s attempt, and in the tooltip what ended the one before', () => {
    const v = jobItem(job({ state: 'running', host: 'gpu-2', gpuIndices: [0], startedAt: '2026-11-22T10:04:00.000Z', attempt: { n: 2, of: 4 }, reason: 'running on gpu-2 (GPU 0) · attempt 2/4 · after host_lost on gpu-1 (unreachable 72 s)' }), NOW);
    assert.equal(v.description, 'attempt 2/4 · gpu-2 · GPU 0 · 1m');
    assert.match(v.tooltip, /- reason: running on gpu-2 \(GPU 0\) · attempt 2\/4 · after host_lost on gpu-1 \(unreachable 72 s\)/);
    assert.match(v.tooltip, /- attempt: 2 of at most 4/);
  });

  it('shows a moved job as moved, not as a restart that used up its budget', () => {
    const moved = jobItem(job({ state: 'running', host: 'gpu-2', gpuIndices: [0], startedAt: '2026-11-22T10:04:00.000Z', attempt: { n: 2, of: 2, moves: 1 } }), NOW);
    assert.equal(moved.description, 'moved · gpu-2 · GPU 0 · 1m');
    assert.match(moved.tooltip, /- attempt: 2: moved 1×, no restart of at most 0/);
    const both = jobItem(job({ state: 'running', host: 'gpu-1', gpuIndices: [0], startedAt: '2026-11-22T10:04:00.000Z', attempt: { n: 4, of: 5, moves: 2 } }), NOW);
    assert.equal(both.description, 'attempt 2/3 · moved 2× · gpu-1 · GPU 0 · 1m');
    assert.match(both.tooltip, /- attempt: 4: moved 2×, restart 1 of at most 2/);
  });

  it('shows a queued job with its place in the queue and what it asks for', () => {
    const v = jobItem(job({ state: 'queued', queuePosition: 3, queue: 'offline' }), NOW);
    assert.equal(v.description, '#3 in offline · 2×A100 · 5m');
    assert.equal(v.icon.id, 'clock');
    assert.equal(v.contextValue, 'job-queued');
  });

  it('shows an ended job with its state and duration, and the failure reason in the tooltip', () => {
    const v = jobItem(
      job({ state: 'failed', exitCode: 3, reason: 'exited with code 3', host: 'gpu-1', gpuIndices: [1], startedAt: '2026-11-22T10:00:10.000Z', endedAt: '2026-11-22T10:01:15.000Z' }),
      NOW,
    );
    assert.equal(v.description, 'failed (exit 3) · gpu-1 · GPU 1 · 1m5s');
    assert.deepEqual(v.icon, { id: 'error', color: 'testing.iconFailed' });
    assert.equal(v.contextValue, 'job-ended');
    assert.match(v.tooltip, /python3 train\.py --lr 3e-4/);
    assert.match(v.tooltip, /resources: 2×A100, 8 CPUs, 32G, limit 2h/);
    // Local time and how long ago, not UTC ISO strings.
    assert.doesNotMatch(v.tooltip, /2026-11-22T/);
    assert.match(v.tooltip, /started: 5 min ago \(.*\d\d:\d\d:\d\d\)/);
    assert.match(v.tooltip, /ended: 4 min ago \(/);
    assert.match(v.tooltip, /exit code: 3/);
    assert.match(v.tooltip, /reason: exited with code 3/);
  });

  it('uses the script name for the label even with an interpreter and arguments before it', () => {
    assert.equal(jobItem(job({ command: ['python3', '-u', 'src/models/train.py', '--epochs', '3'] }), NOW).label, 'a1b2c3d4 train.py');
    assert.equal(jobItem(job({ command: ['nvidia-smi'], name: 'nvidia-smi' }), NOW).label, 'a1b2c3d4 nvidia-smi');
  });
});

describe('rows under the pointer', () => {
  const NOW2 = Date.parse('2026-11-22T10:05:30.000Z');
  it('stay where they are after an inline action: a cancelled job keeps its row, the next job does not move up', () => {
    const list = new JobList();
    const a = job({ id: 'aaaa', state: 'running', startedAt: '2026-11-22T10:00:00.000Z' });
    const b = job({ id: 'bbbb', state: 'running', startedAt: '2026-11-22T10:01:00.000Z' });
    list.reset([a, b]);
    assert.deepEqual(list.group('running', NOW2).map((j) => j.id), ['aaaa', 'bbbb']);
    list.holdRows(NOW2);
    list.apply({ ...a, state: 'cancelled', endedAt: '2026-11-22T10:05:31.000Z' });
    list.apply(job({ id: 'cccc', state: 'running', startedAt: '2026-11-22T10:05:31.000Z' }));
    const held = list.group('running', NOW2 + 1000);
    assert.deepEqual(held.map((j) => [j.id, j.state]), [['aaaa', 'cancelled'], ['bbbb', 'running']]);
    assert.deepEqual(list.group('recent', NOW2 + 1000).map((j) => j.id), [], 'the new job and the moved one wait for the hold to end');
    assert.deepEqual(list.group('running', NOW2 + HOLD_ROWS_MS + 1).map((j) => j.id), ['bbbb', 'cccc']);
    assert.deepEqual(list.group('recent', NOW2 + HOLD_ROWS_MS + 1).map((j) => j.id), ['aaaa']);
  });
  it('filter and Clear Finished choose what is shown', () => {
    const list = new JobList();
    list.reset([job({ id: 'aaaa', name: 'train.py', state: 'failed', endedAt: '2026-11-22T10:01:00.000Z' }), job({ id: 'bbbb', name: 'eval.py', command: ['python3', 'eval.py'], state: 'running' })]);
    list.filter = 'EVAL';
    assert.deepEqual([...list.group('running'), ...list.group('recent')].map((j) => j.id), ['bbbb']);
    list.filter = '';
    list.clearedBefore = '2026-11-22T10:02:00.000Z';
    assert.deepEqual(list.group('recent').map((j) => j.id), []);
    assert.deepEqual(list.group('running').map((j) => j.id), ['bbbb']);
  });
});
