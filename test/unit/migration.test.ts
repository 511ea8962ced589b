import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { copyPlan, parseManifest } from '../../server/migration/copyPlan.ts';
import { moveMarker, moveWords } from '../../server/migration/words.ts';
import { validateMigration, DEFAULT_MIGRATION } from '../../server/migration/config.ts';
import { validateSubmit } from '../../server/core/submit.ts';
import { classify } from '../../server/core/outcome.ts';
import { hostLoad, overloaded, overloadWords, parseDockerStats, parseProcUsage, procUsageArgs, procUsageBetween } from '../../server/migration/load.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');

describe('migration: incremental copy plan', () => {
  const find = (lines: string[]) => parseManifest(lines.join('\n') + '\n');

  it('parses find -printf output, skipping lines that do not fit', () => {
    const m = find(['state.json\t12\t1796180883.2269611150', 'model/w.pt\t1048576\t1796180880.0000000000', 'bad line', 'x\tNaN\t1']);
    assert.deepEqual([...m.keys()], ['state.json', 'model/w.pt']);
    assert.deepEqual(m.get('model/w.pt'), { size: 1048576, mtime: '1796180880.0000000000' });
  });

  it('a first round copies everything; a later one only what changed; files gone at the source go', () => {
    const src = find(['a\t10\t1.1', 'b\t20\t2.2', 'c\t30\t3.3']);
    const first = copyPlan(src, new Map());
    assert.deepEqual(first, { copy: ['a', 'b', 'c'], remove: [], bytes: 60, totalBytes: 60 });
    // After the pre-copy the destination has what the source had; then the job rewrote b (same size, new mtime),
    // wrote d and removed c.
    const later = find(['a\t10\t1.1', 'b\t20\t2.3', 'd\t5\t4.4']);
    assert.deepEqual(copyPlan(later, src), { copy: ['b', 'd'], remove: ['c'], bytes: 25, totalBytes: 35 });
    assert.deepEqual(copyPlan(later, later), { copy: [], remove: [], bytes: 0, totalBytes: 35 });
  });
});

describe('migration: words', () => {
  const ev = { from: 'gpu2', to: 'gpu4', gpus: [0], cause: 'online load 94% > 90% for 60 s', method: 'cooperative' as const, checkpointAt: '2026-12-02T14:02:11.345Z', precopyBytes: 104857600, finalBytes: 1048576, downtimeSec: 1.4 };
  it('the log marker names both hosts, the cause and the checkpoint time', () => {
    assert.equal(moveMarker(ev), '── moved from gpu2 to gpu4: online load 94% > 90% for 60 s; resumed from checkpoint at 14:02:11 ──\n');
    assert.equal(moveMarker(ev, 'the copy to gpu4 failed: disk full'), '── not moved to gpu4 (the copy to gpu4 failed: disk full); resumed on gpu2 from checkpoint at 14:02:11 ──\n');
  });
  it('the moved attempt says where, why, the downtime and the bytes', () => {
    assert.match(moveWords(ev), /^moved to gpu4 \(online load 94% > 90% for 60 s\); downtime 1\.4 s; copied 100(\.0)? ?MiB while running \+ 1(\.0)? ?MiB after the checkpoint$/);
  });
});

describe('migration: config', () => {
  const fail = (p: string, m: string): never => {
    throw new Error(`${p}: ${m}`);
  };
  it('defaults: 60 s to checkpoint, no load moves, no preemption', () => {
    assert.deepEqual(validateMigration(undefined, fail), DEFAULT_MIGRATION);
  });
  it('reads threshold, window and preempt', () => {
    const c = validateMigration({ checkpointTimeout: '30s', threshold: { cpu: 0.9, memory: 0.8 }, window: '60s', preempt: true }, fail);
    assert.deepEqual(c, { checkpointTimeoutMs: 30_000, threshold: { cpu: 0.9, memory: 0.8, gpu: 1, gpuMemory: 1 }, windowMs: 60_000, sampleMs: 5_000, preempt: true, method: 'cooperative' });
  });
  it('reads GPU thresholds: the online jobs\' GPUs\' time and memory; each one left out is 1 (never over)', () => {
    assert.deepEqual(validateMigration({ threshold: { gpu: 0.85 } }, fail).threshold, { cpu: 1, memory: 1, gpu: 0.85, gpuMemory: 1 });
    assert.deepEqual(validateMigration({ threshold: { gpuMemory: 0.5, cpu: 0.9 } }, fail).threshold, { cpu: 0.9, memory: 1, gpu: 1, gpuMemory: 0.5 });
    assert.throws(() => validateMigration({ threshold: { gpuMemory: 0 } }, fail), /migration\.threshold\.gpuMemory: must be a fraction above 0 and at most 1/);
    assert.throws(() => validateMigration({ threshold: { gpu: '90%' } }, fail), /migration\.threshold\.gpu: must be a fraction/);
  });
  it('reads the method: transparent (CRIU where both hosts have it), else cooperative', () => {
    assert.equal(validateMigration({ method: 'transparent' }, fail).method, 'transparent');
    assert.throws(() => validateMigration({ method: 'criu' }, fail), /migration\.method: must be "cooperative" or "transparent"/);
  });
  it('refuses what it cannot use, naming the setting', () => {
    assert.throws(() => validateMigration({ threshold: { cpu: 1.5 } }, fail), /migration\.threshold\.cpu: must be a fraction/);
    assert.throws(() => validateMigration({ threshold: { gpuUtil: 0.5 } }, fail), /migration\.threshold\.gpuUtil: unknown setting; known here: cpu, memory, gpu, gpuMemory/);
    assert.throws(() => validateMigration({ window: 'soon' }, fail), /migration\.window/);
    assert.throws(() => validateMigration({ treshold: {} }, fail), /migration\.treshold: unknown setting/);
  });
});

describe('migration: the checkpoint signal at submit', () => {
  const d = { gpus: 0, cpus: 1, memoryMiB: 100, queues: { online: { maxTimeSec: 0, defaultTimeSec: 0, restarts: 0 }, offline: { maxTimeSec: 0, defaultTimeSec: 0, restarts: 0 } } };
  it('is kept as GPURUN_CHECKPOINT_SIGNAL, which the job reads back', () => {
    const v = validateSubmit({ command: ['python3', 'train.py'], workspace: '/ws', checkpointSignal: 'SIGUSR2' }, d);
    assert.equal(v.env.GPURUN_CHECKPOINT_SIGNAL, 'SIGUSR2');
  });
  it('a signal outside the list is refused; a user may not set the variable itself', () => {
    assert.throws(() => validateSubmit({ command: ['x'], workspace: '/ws', checkpointSignal: 'SIGKILL' }, d), /checkpointSignal/);
    assert.throws(() => validateSubmit({ command: ['x'], workspace: '/ws', env: { GPURUN_CHECKPOINT_SIGNAL: 'SIGUSR1' } }, d), /env\.GPURUN_CHECKPOINT_SIGNAL/);
  });
});

describe('migration: online load', () => {
  it('parses docker stats lines (CPU percent of one core, memory used)', () => {
    const m = parseDockerStats('gpurun-a\t93.52%\t12.5MiB / 256MiB\ngpurun-b\t0.00%\t1.2GiB / 4GiB\nbroken\n');
    assert.deepEqual(m.get('gpurun-a'), { cpuPct: 93.52, memBytes: 12.5 * 1024 * 1024 });
    assert.equal(m.get('gpurun-b')!.memBytes, 1.2 * 1024 ** 3);
    assert.equal(m.size, 2);
  });
  it("reads a process host's sessions from /proc: CPU time and memory summed per session, CPU over the interval", () => {
    // utime 150 and stime 50 ticks, rss 100 pages; a command name with spaces and parentheses.
    const stat = (pid: number, comm: string, u: number, st: number, rss: number) => `${pid} (${comm}) R 1 ${pid} ${pid} 0 -1 4194304 10 0 0 0 ${u} ${st} 0 0 20 0 1 0 100 2000000 ${rss} 18446744073709551615`;
    const before = parseProcUsage(`100\n4096\n1000.00\n7 ${stat(7, 'sh', 100, 0, 50)}\n7 ${stat(8, 'py (x) y', 50, 50, 50)}\n`)!;
    assert.deepEqual(before.sessions.get(7), { cpuSec: 2, memBytes: 100 * 4096, pids: [7, 8] });
    const now = parseProcUsage(`100\n4096\n1002.00\n7 ${stat(7, 'sh', 100, 0, 50)}\n7 ${stat(8, 'py (x) y', 150, 150, 150)}\n9 ${stat(9, 'new', 500, 0, 1)}\n`)!;
    // 2 s of CPU time over 2 s: one core; session 9 has no earlier reading yet.
    assert.deepEqual(procUsageBetween(before, now), [{ cpuPct: 100, memBytes: 200 * 4096 }]);
    assert.equal(parseProcUsage('sh: getconf: not found\n'), null);
    assert.deepEqual(procUsageArgs([7, 9]).slice(3), ['sh', '7', '9']);
  });
  it('turns the containers of a host into fractions of its CPUs and memory', () => {
    const s = hostLoad([{ cpuPct: 150, memBytes: 512 * 1024 ** 2 }, { cpuPct: 30, memBytes: 0 }], { cpus: 2, memoryMiB: 1024 }, 5);
    assert.deepEqual(s, { at: 5, cpu: 0.9, memory: 0.5 });
  });
  it('is over only when every sample of the whole window is over the threshold', () => {
    const t = { cpu: 0.9, memory: 0.9, gpu: 1, gpuMemory: 1 };
    const at = (ms: number, cpu: number, memory = 0) => ({ at: ms, cpu, memory });
    assert.equal(overloaded([at(0, 0.95), at(5_000, 0.95)], t, 10_000), null, 'not for long enough yet');
    const o = overloaded([at(0, 0.5), at(5_000, 0.95), at(10_000, 0.97), at(15_000, 0.94)], t, 10_000);
    assert.deepEqual(o, { what: 'cpu', value: 0.94, limit: 0.9, forMs: 10_000 });
    assert.equal(overloadWords(o!), 'online load 94% > 90% for 10 s');
    assert.equal(overloaded([at(0, 0.95), at(5_000, 0.5), at(10_000, 0.95), at(15_000, 0.95)], t, 10_000), null, 'a dip restarts the window');
    assert.equal(overloaded([at(0, 0, 0.95), at(20_000, 0, 0.96)], t, 10_000)?.what, 'memory');
  });
});

describe('examples/train.py with gpurun_checkpoint.py', () => {
  const py = spawnSync('python3', ['--version']);
  const run = (env: Record<string, string>, signalAfterMs?: number): Promise<{ code: number | null; out: string }> =>
    new Promise((resolve) => {
      const p = spawn('python3', [join(ROOT, 'examples', 'train.py')], { env: { PATH: process.env.PATH ?? '', EPOCHS: '6', ...env } });
      let out = '';
      p.stdout.on('data', (d) => (out += d));
      if (signalAfterMs !== undefined) setTimeout(() => p.kill('SIGUSR1'), signalAfterMs);
      p.on('close', (code) => resolve({ code, out }));
    });

  it('checkpoints on its signal (exit 85) and resumes to the same output as a run that was never stopped', async function () {
    if (py.status !== 0) this.skip();
    const ck = mkdtempSync(join(tmpdir(), 'gpurun-ck-'));
    try {
      const whole = await run({ EPOCH_SECONDS: '0.01' });
      const first = await run({ EPOCH_SECONDS: '0.3', GPURUN_CHECKPOINT_DIR: ck, GPURUN_CHECKPOINT_SIGNAL: 'SIGUSR1' }, 1_000);
      assert.equal(first.code, 85, first.out);
      const rest = await run({ EPOCH_SECONDS: '0.01', GPURUN_CHECKPOINT_DIR: ck, GPURUN_RESUME_FROM: ck, GPURUN_CHECKPOINT_SIGNAL: 'SIGUSR1' });
      assert.equal(rest.code, 0);
      const epochs = (s: string) => s.split('\n').filter((l) => l.startsWith('epoch '));
      assert.deepEqual([...epochs(first.out), ...epochs(rest.out)], epochs(whole.out));
    } finally {
      rmSync(ck, { recursive: true, force: true });
    }
  });
});

describe('migration: a job stopped to be placed again', () => {
  it('is preempted and restartable, whatever it exited with after the TERM', () => {
    const o = classify({ end: { exitCode: 143, signal: null, endedAt: '2026-12-02T00:00:00Z' }, stopIntent: 'requeue', stopReason: 'h1 drained by root: it did not checkpoint in time, so it starts again from the beginning', host: 'h1' });
    assert.equal(o.fault, 'preempted');
    assert.equal(o.restartable, true);
    assert.match(o.reason, /did not checkpoint in time/);
  });
});
