import assert from 'node:assert/strict';
import { JobNarrator, TerminalEncoder } from '../../../extension/core/terminalText.ts';
import { terminalName } from '../../../extension/core/format.ts';
import { job } from './fixtures.ts';

const plain = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');

describe('extension core: terminal text', () => {
  it('turns \\n into \\r\\n and leaves \\r\\n and lone \\r alone', () => {
    const e = new TerminalEncoder();
    assert.equal(e.write(Buffer.from('a\nb\r\nc\rd\n')), 'a\r\nb\r\nc\rd\r\n');
  });

  it('does not double a \\r\\n split across two chunks', () => {
    const e = new TerminalEncoder();
    assert.equal(e.write(Buffer.from('loss 0.5\r')) + e.write(Buffer.from('\nloss 0.4\n')), 'loss 0.5\r\nloss 0.4\r\n');
  });

  it('decodes a UTF-8 character split across chunks', () => {
    const e = new TerminalEncoder();
    const bytes = Buffer.from('ε=0.1 ✓\n');
    const out = e.write(bytes.subarray(0, 1)) + e.write(bytes.subarray(1, 9)) + e.write(bytes.subarray(9)) + e.end();
    assert.equal(out, 'ε=0.1 ✓\r\n');
  });

  it('keeps a progress bar that redraws with \\r as it is', () => {
    const e = new TerminalEncoder();
    assert.equal(e.write(Buffer.from('10%\r50%\r100%\n')), '10%\r50%\r100%\r\n');
  });

  it('says the queue position once per change, where the job started, and how it ended', () => {
    const n = new JobNarrator();
    const lines: string[] = [];
    const feed = (j: ReturnType<typeof job>) => lines.push(...plain(n.update(j)).split('\r\n').filter(Boolean));
    feed(job({ state: 'queued', queuePosition: 2, reason: 'waiting for 2 GPUs' }));
    feed(job({ state: 'queued', queuePosition: 2, reason: 'waiting for 2 GPUs' }));
    feed(job({ state: 'queued', queuePosition: 1, reason: 'waiting for 2 GPUs' }));
    feed(job({ state: 'running', host: 'gpu-1', gpuIndices: [2, 3], startedAt: '2026-11-22T10:01:00.000Z' }));
    feed(job({ state: 'running', host: 'gpu-1', gpuIndices: [2, 3], startedAt: '2026-11-22T10:01:00.000Z' }));
    assert.equal(n.done, false);
    feed(job({ state: 'failed', exitCode: 137, reason: 'killed by signal 9 (out of memory?)', host: 'gpu-1', gpuIndices: [2, 3], startedAt: '2026-11-22T10:01:00.000Z' }));
    assert.equal(n.done, true);
    assert.deepEqual(lines, [
      '[gpurun] queued (position 2 in online): waiting for 2 GPUs',
      '[gpurun] queued (position 1 in online): waiting for 2 GPUs',
      '[gpurun] running on gpu-1, GPU 2,3 (2×A100, 8 CPUs, 32G, limit 2h)',
      '[gpurun] job a1b2c3d4 failed (exit code 137): killed by signal 9 (out of memory?)',
    ]);
  });

  it('says where a job ran even when the first snapshot it sees is the final one', () => {
    const n = new JobNarrator();
    const out = plain(n.update(job({ state: 'succeeded', exitCode: 0, host: 'local', gpuIndices: [], startedAt: '2026-11-22T10:01:00.000Z', resources: { gpus: 0, cpus: 1, memoryMiB: 1024, timeLimitSec: 0 } })));
    assert.equal(out, '[gpurun] running on local, no GPU (CPU only, 1 CPU, 1G, no time limit)\r\n[gpurun] job a1b2c3d4 succeeded (exit code 0)\r\n');
  });

  it('names the terminal "gpurun: <id> <script>"', () => {
    assert.equal(terminalName(job({ id: 'x9y8', command: ['python3', 'experiments/train.py'] })), 'gpurun: x9y8 train.py');
  });
});

describe('the queued line of a job terminal', () => {
  it('is said only when the job still waits a second after it was submitted', () => {
    const n = new JobNarrator();
    const j = job({ state: 'queued', queuePosition: 1, reason: 'waiting for its turn in the queue', createdAt: '2026-11-22T10:00:00.000Z' });
    const t0 = Date.parse('2026-11-22T10:00:00.000Z');
    assert.equal(n.update(j, t0 + 200), '');
    assert.match(n.update(j, t0 + 1100), /queued \(position 1 in online\): waiting for its turn/);
  });
});
