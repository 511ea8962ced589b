import assert from 'node:assert/strict';
import { GpuUsageHistory, HISTORY_SAMPLES, IDLE_AFTER_MS, idleForMs, idleWindowMs, sparkline } from '../../server/core/gpuUsage.ts';
import { jobGpuView } from '../../extension/core/gpuText.ts';
import { keepUsage } from '../../server/store/gpuUsageStore.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { idleNotice } from '../../extension/core/notice.ts';
import { gpuUsageLines, jobGpuUsage } from '../../server/cli/format.ts';
import type { Gpu, HostInfo, Job } from '../../server/protocol/jobs.ts';

const gpu = (index: number, pct: number): Gpu => ({ index, uuid: `GPU-${index}`, name: 'NVIDIA A100-SXM4-80GB', memoryTotalMiB: 81920, memoryUsedMiB: 12288, utilizationPct: pct });
const T0 = Date.parse('2026-12-01T10:00:00Z');

describe('GPU usage', () => {
  it('keeps the last samples per GPU and since when a GPU reads 0 %', () => {
    const h = new GpuUsageHistory();
    h.record('g1', [gpu(0, 50), gpu(1, 0)], T0);
    h.record('g1', [gpu(0, 0), gpu(1, 0)], T0 + 30_000);
    h.record('g1', [gpu(0, 0), gpu(1, 20)], T0 + 60_000);
    assert.deepEqual(h.view('g1', 0), { history: [50, 0, 0], idleSince: '2026-12-01T10:00:30.000Z' });
    assert.deepEqual(h.view('g1', 1), { history: [0, 0, 20], idleSince: null });
    assert.deepEqual(h.view('g2', 0), { history: [], idleSince: null });
    for (let i = 0; i < HISTORY_SAMPLES + 5; i++) h.record('g1', [gpu(0, i % 100)], T0 + i);
    assert.equal(h.view('g1', 0).history.length, HISTORY_SAMPLES);
  });
  it('counts idle time from no earlier than the job start', () => {
    assert.equal(idleForMs('2026-12-01T10:00:00Z', '2026-12-01T10:05:00Z', T0 + 15 * 60_000), 10 * 60_000);
    assert.equal(idleForMs(null, '2026-12-01T10:05:00Z', T0), 0);
  });
  it('draws a bar per sample', () => {
    assert.equal(sparkline([0, 50, 100]), '▁▅█');
    assert.equal(sparkline([0, 0, 0, 100], 2), '▁█');
  });
  it('shows a running job\'s GPUs in ls and show, and says when they sit idle', () => {
    const job = { id: 'j1', name: 'train.py', state: 'running', host: 'g1', gpuIndices: [0], exitCode: null, command: ['python3', 'train.py'], workspace: '/w', queue: 'online', reason: 'running', createdAt: '2026-12-01T09:59:00Z', startedAt: '2026-12-01T10:00:00Z', endedAt: null, resources: { gpus: 1, cpus: 1, memoryMiB: 1024, timeLimitSec: 0 } } as unknown as Job;
    const hosts = [{ name: 'g1', gpus: [{ ...gpu(0, 0), jobId: 'j1', history: [80, 40, 0], idleSince: '2026-12-01T10:01:00Z' }] }] as unknown as HostInfo[];
    assert.equal(jobGpuUsage(job, hosts, T0 + 5 * 60_000), '0:0% 12G/80G');
    assert.equal(jobGpuUsage(job, hosts, T0 + 13 * 60_000), '0:0% 12G/80G idle 12m');
    const d = gpuUsageLines(job, hosts, T0 + 13 * 60_000);
    assert.match(d, /GPU 0:   0%  12G\/80G  ▇▄▁  \(NVIDIA A100-SXM4-80GB\)/);
    assert.match(d, /its GPUs have sat idle \(0 %\) for 12m: a data-loading bottleneck, or a hung job\?/);
    assert.equal(gpuUsageLines({ ...job, state: 'succeeded' } as Job, hosts), '');
  });
  it('takes the idle window a person sets: a duration, off, or the 10 minutes default', () => {
    assert.equal(idleWindowMs(undefined), IDLE_AFTER_MS);
    assert.equal(idleWindowMs('90s'), 90_000);
    assert.equal(idleWindowMs('5'), 5 * 60_000);
    assert.equal(idleWindowMs('off'), Infinity);
    assert.equal(idleWindowMs('0'), Infinity);
    assert.match(idleWindowMs('soon') as string, /^idle window: .*; or "off"$/);
  });
  it('says a job is idle after the window it is given, in ls, show, the sidebar row and the notification', () => {
    const job = { id: 'j1', name: 'train.py', state: 'running', host: 'g1', gpuIndices: [0], exitCode: null, command: ['python3', 'train.py'], workspace: '/w', queue: 'online', reason: 'running', createdAt: '2026-12-01T09:59:00Z', startedAt: '2026-12-01T10:00:00Z', endedAt: null, resources: { gpus: 1, cpus: 1, memoryMiB: 1024, timeLimitSec: 0 } } as unknown as Job;
    const hosts = [{ name: 'g1', gpus: [{ ...gpu(0, 0), jobId: 'j1', history: [0, 0], idleSince: '2026-12-01T09:58:00Z' }] }] as unknown as HostInfo[];
    const at = T0 + 3 * 60_000;
    assert.equal(jobGpuUsage(job, hosts, at), '0:0% 12G/80G');
    assert.equal(jobGpuUsage(job, hosts, at, 2 * 60_000), '0:0% 12G/80G idle 3m');
    assert.equal(jobGpuUsage(job, hosts, T0 + 60 * 60_000, Infinity), '0:0% 12G/80G');
    const v = jobGpuView(job, hosts, at, 2 * 60_000)!;
    assert.equal(v.idle, true);
    assert.equal(v.short, 'GPUs idle 3m');
    assert.equal(jobGpuView(job, hosts, at)!.idle, false);
    assert.equal(idleNotice(job, v.idleMs), 'GPU Run: job j1 train.py has had its GPU at 0 % for 3 min: a data-loading bottleneck, or a hung job? (setting gpurun.idleGpuWarning)');
  });
  it('keeps the history in its SQLite file across a broker restart; a stale one is dropped', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpurun-usage-'));
    try {
      const file = join(dir, 'gpu-usage.db');
      const first = new GpuUsageHistory();
      const s1 = keepUsage(first, file, () => assert.fail('no warning'))!;
      const now = Date.now();
      first.record('g1', [gpu(0, 70), gpu(1, 0)], now - 60_000);
      first.record('g1', [gpu(0, 30), gpu(1, 0)], now - 30_000);
      first.record('old', [gpu(0, 90)], now - 60 * 60_000);
      s1.close();
      const second = new GpuUsageHistory();
      keepUsage(second, file, () => assert.fail('no warning'))!.close();
      assert.deepEqual(second.view('g1', 0), { history: [70, 30], idleSince: null });
      assert.deepEqual(second.view('g1', 1), { history: [0, 0], idleSince: new Date(now - 60_000).toISOString() });
      assert.deepEqual(second.view('old', 0), { history: [], idleSince: null });
      // A file that cannot be opened costs only the history.
      const warned: string[] = [];
      assert.equal(keepUsage(new GpuUsageHistory(), join(dir, 'no', 'such', 'dir.db'), (m) => warned.push(m)), undefined);
      assert.match(warned[0], /not kept across restarts/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
