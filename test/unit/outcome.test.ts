import assert from 'node:assert/strict';
import { classify, summarize, type ClassifyInput } from '../../server/core/outcome.ts';
import { avoidOf, backoffMs, decideRestart, usedMs } from '../../server/core/restartPolicy.ts';
import type { Fault } from '../../server/protocol/jobs.ts';

const T = '2026-12-01T10:00:00.000Z';
const exit = (exitCode: number | null, more: Record<string, unknown> = {}) => ({ exitCode, signal: null, endedAt: T, ...more });
const xid = (code: number, gpu = 1) => ({ gpuFaults: [{ gpu, xid: code, detail: `NVRM: Xid (PCI:0000:3b:00): ${code}`, at: T }] });

/** [what happened, input, state, fault, restartable, reason pattern] */
const CASES: Array<[string, ClassifyInput, string, Fault | null, boolean, RegExp]> = [
  ['exit 0', { end: exit(0), stopIntent: null }, 'succeeded', null, false, /^exited with code 0$/],
  ['exit 1', { end: exit(1), stopIntent: null }, 'failed', 'user_error', false, /^exited with code 1$/],
  ['killed by a signal', { end: { exitCode: null, signal: 'SIGSEGV', endedAt: T }, stopIntent: null }, 'failed', 'user_error', false, /killed by signal SIGSEGV/],
  ['OOM', { end: exit(137, { oomKilled: true }), stopIntent: null }, 'failed', 'oom', false, /out of memory/],
  ['OOM even with restart-on-exit 137', { end: exit(137, { oomKilled: true }), stopIntent: null, restartOnExit: [137] }, 'failed', 'oom', false, /out of memory/],
  ['exit 75 asked for', { end: exit(75), stopIntent: null, restartOnExit: [75, 143] }, 'failed', 'user_error', true, /asks to be restarted on/],
  ['exit 76 not asked for', { end: exit(76), stopIntent: null, restartOnExit: [75] }, 'failed', 'user_error', false, /^exited with code 76$/],
  ['cancelled (TERM → 143)', { end: exit(143), stopIntent: 'cancel', stopReason: 'cancelled by alice', restartOnExit: [143] }, 'cancelled', 'cancelled', false, /^cancelled by alice$/],
  ['time limit', { end: exit(143), stopIntent: 'timeout', stopReason: 'stopped after reaching its time limit of 1h' }, 'timed_out', 'timed_out', false, /time limit of 1h/],
  ['time limit wins over a lost host', { end: { lost: 'gone', evidence: { hostUnreachableSec: 90 } }, stopIntent: 'timeout' }, 'timed_out', 'timed_out', false, /time limit/],
  ['could not start', { end: { startError: 'image x is not on host gpu1' }, stopIntent: null }, 'failed', 'start_failed', false, /^could not start: image x/],
  ['command not found', { end: exit(127, { startError: 'command not found: pyhton' }), stopIntent: null }, 'failed', 'start_failed', false, /could not start: command not found/],
  ['host unreachable past the grace', { end: { lost: 'no answer', evidence: { hostUnreachableSec: 72 } }, stopIntent: null, host: 'gpu1' }, 'lost', 'host_lost', true, /lost its host gpu1: unreachable 72 s/],
  ['host rebooted', { end: { lost: 'gone', evidence: { bootIdChanged: true, runtimeGone: 'container gone after reboot' } }, stopIntent: null, host: 'gpu1' }, 'lost', 'host_lost', true, /rebooted, container gone after reboot/],
  ['container removed, host fine', { end: { lost: 'the container gpurun-x vanished from gpu1', evidence: { runtimeGone: 'container missing' } }, stopIntent: null, host: 'gpu1' }, 'lost', 'runtime_lost', true, /vanished/],
  ['lost with no evidence (today\'s runtimes)', { end: { lost: 'the container gpurun-x vanished from gpu1' }, stopIntent: null, host: 'gpu1' }, 'lost', 'runtime_lost', true, /vanished/],
  ['engine died with an exit status', { end: exit(137, { evidence: { engineDown: 'dockerd restarted' } }), stopIntent: null }, 'lost', 'runtime_lost', true, /dockerd restarted/],
  ['workspace lost: developer\'s files', { end: exit(143, { evidence: { workspaceLost: { reason: 'sshfs: read error', controlPlane: false } } }), stopIntent: null }, 'failed', 'workspace_lost', false, /^workspace_lost: sshfs/],
  ['workspace lost: relay dropped', { end: exit(143, { evidence: { workspaceLost: { reason: 'the relay stream ended', controlPlane: true } } }), stopIntent: null }, 'failed', 'workspace_lost', true, /^workspace_lost: the relay/],
  ['workspace lost, as text only', { end: exit(143, { failure: 'workspace_lost: the mount is gone' }), stopIntent: null }, 'failed', 'workspace_lost', false, /^workspace_lost: the mount/],
  ['Xid 79: GPU fell off the bus', { end: exit(1, { evidence: xid(79) }), stopIntent: null, host: 'gpu1' }, 'failed', 'gpu_fault', true, /GPU 1 on gpu1 failed \(Xid 79\)/],
  ['nvidia-smi: uncorrectable ECC', { end: exit(1, { evidence: { gpuFaults: [{ gpu: 0, detail: 'uncorrectable ECC errors', at: T }] } }), stopIntent: null, host: 'gpu1' }, 'failed', 'gpu_fault', true, /uncorrectable ECC/],
  ['Xid 13: the application\'s own error', { end: exit(1, { evidence: xid(13) }), stopIntent: null, host: 'gpu1' }, 'failed', 'user_error', false, /Xid 13, the application's own error/],
  ['Slurm COMPLETED', { end: exit(0), stopIntent: null, slurm: { state: 'COMPLETED', exitCode: 0, signal: 0 } }, 'succeeded', null, false, /code 0/],
  ['Slurm FAILED', { end: exit(2), stopIntent: null, slurm: { state: 'FAILED', reason: 'JobLaunchFailure', exitCode: 2, signal: 0 } }, 'failed', 'user_error', false, /^exited with code 2 \(Slurm: JobLaunchFailure\)$/],
  ['Slurm NODE_FAIL', { end: exit(0), stopIntent: null, slurm: { state: 'NODE_FAIL', reason: 'NodeDown', exitCode: 0, signal: 0 } }, 'lost', 'node_fail', true, /NODE_FAIL, NodeDown/],
  ['Slurm BOOT_FAIL', { end: exit(0), stopIntent: null, slurm: { state: 'BOOT_FAIL', exitCode: 0, signal: 0 } }, 'failed', 'node_fail', true, /BOOT_FAIL/],
  ['Slurm PREEMPTED', { end: exit(0), stopIntent: null, slurm: { state: 'PREEMPTED', exitCode: 0, signal: 15 } }, 'failed', 'preempted', true, /PREEMPTED/],
  ['Slurm OUT_OF_MEMORY', { end: exit(0), stopIntent: null, slurm: { state: 'OUT_OF_MEMORY', exitCode: 0, signal: 9 } }, 'failed', 'oom', false, /OUT_OF_MEMORY/],
  ['Slurm TIMEOUT', { end: exit(0), stopIntent: null, slurm: { state: 'TIMEOUT', exitCode: 0, signal: 15 } }, 'timed_out', 'timed_out', false, /Slurm: TIMEOUT/],
  ['Slurm CANCELLED from outside', { end: exit(0), stopIntent: null, slurm: { state: 'CANCELLED', exitCode: 0, signal: 15 } }, 'cancelled', 'cancelled', false, /cancelled on the cluster/],
  ['scancel for a time limit', { end: exit(0), stopIntent: 'timeout', slurm: { state: 'CANCELLED', exitCode: 0, signal: 15 } }, 'timed_out', 'timed_out', false, /time limit/],
];

describe('outcome classifier', () => {
  for (const [what, input, state, fault, restartable, reason] of CASES) {
    it(`${what} → ${state}${fault ? `, ${fault}` : ''}${restartable ? ', restartable' : ''}`, () => {
      const o = classify(input);
      assert.equal(o.state, state);
      assert.equal(o.fault, fault);
      assert.equal(o.restartable, restartable);
      assert.match(o.reason, reason);
    });
  }

  it('classifies every Xid of the catalogue: application errors are the user\'s, GPU faults move the job', () => {
    for (const code of [13, 31, 43, 45, 68]) assert.equal(classify({ end: exit(1, { evidence: xid(code) }), stopIntent: null }).fault, 'user_error', `Xid ${code}`);
    for (const code of [48, 62, 64, 74, 79, 92, 93, 94, 95, 109, 119, 120]) assert.equal(classify({ end: exit(1, { evidence: xid(code) }), stopIntent: null }).fault, 'gpu_fault', `Xid ${code}`);
    // One GPU fault among application errors is a GPU fault.
    const mixed = classify({ end: exit(1, { evidence: { gpuFaults: [...xid(13, 0).gpuFaults, ...xid(94, 1).gpuFaults] } }), stopIntent: null, host: 'h' });
    assert.equal(mixed.fault, 'gpu_fault');
    assert.deepEqual(mixed.avoid, { host: 'h', gpus: [1] });
  });

  it('says where the next attempt must not go: the lost host, the failed GPU; a dead container allows the same host', () => {
    assert.deepEqual(classify({ end: { lost: 'x', evidence: { hostUnreachableSec: 61 } }, stopIntent: null, host: 'gpu1' }).avoid, { host: 'gpu1' });
    assert.equal(classify({ end: { lost: 'x' }, stopIntent: null, host: 'gpu1' }).avoid, null);
  });

  it('keeps the evidence it decided on, and sums it up in a few words', () => {
    const o = classify({ end: { lost: 'x', evidence: { hostUnreachableSec: 72.4, notes: ['container gone after reboot'] } }, stopIntent: null, host: 'gpu1' });
    assert.deepEqual(o.evidence, { hostUnreachableSec: 72.4, notes: ['container gone after reboot'] });
    assert.equal(summarize(o.evidence), 'unreachable 72 s, container gone after reboot');
    assert.deepEqual(classify({ end: exit(3), stopIntent: null }).evidence, { exitCode: 3 });
  });
});

describe('restart policy', () => {
  const backoff = { firstMs: 5000, maxMs: 30_000 };
  const lost = classify({ end: { lost: 'x', evidence: { hostUnreachableSec: 70 } }, stopIntent: null, host: 'h1' });

  it('restarts a recoverable fault while restarts are left, with a doubling, capped backoff', () => {
    assert.deepEqual(decideRestart(lost, 1, 3, backoff), { restart: true, next: 2, delayMs: 5000 });
    assert.deepEqual(decideRestart(lost, 2, 3, backoff), { restart: true, next: 3, delayMs: 10_000 });
    assert.deepEqual(decideRestart(lost, 3, 3, backoff), { restart: true, next: 4, delayMs: 20_000 });
    assert.deepEqual(decideRestart(lost, 4, 3, backoff), { restart: false, why: 'no restarts left (3 used)' });
    assert.equal(backoffMs(9, backoff), 30_000);
    assert.equal(backoffMs(1000, backoff), 30_000);
  });

  it('never restarts what a restart cannot help, and says so only for faults that could', () => {
    for (const o of [classify({ end: exit(1), stopIntent: null }), classify({ end: exit(137, { oomKilled: true }), stopIntent: null }), classify({ end: exit(0), stopIntent: 'timeout' })]) {
      assert.deepEqual(decideRestart(o, 1, 3, backoff), { restart: false, why: null });
    }
    assert.deepEqual(decideRestart(lost, 1, 0, backoff), { restart: false, why: 'the job allows no restarts (--restarts N)' });
  });

  it('counts running time over all attempts', () => {
    const t = (s: number) => new Date(Date.parse(T) + s * 1000).toISOString();
    assert.equal(usedMs([{ startedAt: t(0), endedAt: t(60) }, { startedAt: null, endedAt: t(70) }, { startedAt: t(100), endedAt: null }], Date.parse(t(130))), 90_000);
  });

  it('avoids lost hosts and failed GPUs of earlier attempts', () => {
    const a = (host: string, fault: Fault | null, gpus: number[] = [], ev = {}) => ({ host, fault, gpuIndices: gpus, evidence: ev });
    assert.deepEqual(avoidOf([a('h1', 'host_lost'), a('h2', 'runtime_lost'), a('h3', 'gpu_fault', [0, 1], xid(1 /* index */, 1)), a('h4', 'gpu_fault', [2])]), {
      hosts: ['h1'],
      gpus: [{ host: 'h3', index: 1 }, { host: 'h4', index: 2 }],
    });
  });
});
