/**
 * Moving running jobs between hosts, through the CLI against a real broker process: two SSH hosts on loopback
 * (127.0.11.1, 127.0.11.2: real sshd, the real Docker engine, sshfs), a Python job that counts steps and saves them
 * with examples/gpurun_checkpoint.py. `gpurun migrate` moves it with its state (same id, one log with a marker, no
 * step lost or repeated); a job that ignores the signal keeps running; a failed copy leaves the job where it was;
 * a broker killed -9 mid-move ends with the job run exactly once; the destination's GPU is held during the move;
 * `gpurun drain` moves jobs off a host.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createToken, gpurun, restartBroker, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';
import { endHostSuite, makeSshHosts, type TestHostSet } from '../support/sshHosts.ts';
import { counterWorkspace, dockerHostConfigs, jobViews, loadMoves, requireMigrationParts } from '../support/migrationHosts.ts';

describe('migration: moving running jobs between hosts', function () {
  this.timeout(180_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let adminEnv: NodeJS.ProcessEnv;
  let ws: string;
  let workDirs: string[] = [];

  before(async function () {
    requireMigrationParts(this);
    dir = scratch('gpurun-migration-');
    const gpu = [{ name: 'NVIDIA L4', memoryMiB: 23034 }];
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'h1', address: '127.0.11.1', gpus: gpu },
      { name: 'h2', address: '127.0.11.2', gpus: gpu },
    ]);
    ws = counterWorkspace(dir);
    const cfg = dockerHostConfigs(set, dir);
    workDirs = cfg.workDirs;
    broker = await startBrokerProcess(join(dir, 'home'), { hosts: cfg.hosts, defaults: { image: 'local/python:3', gpus: 1, memory: '256M' }, migration: { checkpointTimeout: '8s', threshold: { cpu: 0.2 }, window: '4s', sampleEvery: '1s', preempt: true }, restartBackoff: { first: '1s', max: '2s' } });
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'mover') };
    adminEnv = { ...env, GPURUN_TOKEN: await createToken(broker, 'root', true) };
    await waitFor('both hosts up', async () => /h1\s+up/.test((await gpurun(['hosts'], env)).stdout) && /h2\s+up/.test((await gpurun(['hosts'], env)).stdout), 60_000);
  });

  after(async function () {
    await endHostSuite(broker, set, 'mover', workDirs, dir);
  });

  const { submit, show, logs, ended, assertSteps } = jobViews(() => env, () => ws);

  it('gpurun migrate moves a checkpointing job to the other host: same id, one log, no step lost or repeated', async () => {
    const id = await submit(['--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'count.py'], { STEPS: '30' });
    await waitFor('step 5', async () => /step 5\n/.test(await logs(id)), 90_000, 200);
    const from = (await show(id)).host!;
    const to = from === 'h1' ? 'h2' : 'h1';
    // Logs followed across the move: what `gpurun logs -f` prints is the log, byte for byte.
    const follow = gpurun(['logs', '-f', id], env, { timeoutMs: 150_000 });
    const mv = await gpurun(['migrate', id, '--to', to], env, { timeoutMs: 120_000 });
    assert.equal(mv.code, 0, mv.stderr + mv.stdout);
    assert.match(mv.stdout, new RegExp(`moving from ${from} to ${to} \\(gpurun migrate by mover\\)`));
    assert.match(mv.stdout, new RegExp(`runs on ${to} \\(attempt 2\\)`));
    const done = await ended(id);
    assert.equal(done.state, 'succeeded', done.reason);
    const log = await logs(id);
    assertSteps(log, 30);
    assert.match(log, new RegExp(`^── moved from ${from} to ${to}: gpurun migrate by mover; resumed from checkpoint at \\d\\d:\\d\\d:\\d\\d ──$`, 'm'));
    assert.match(log, /^start at 1 attempt 1$/m);
    assert.match(log, /^start at \d+ attempt 2$/m);
    assert.equal((await follow).stdout, log);
    // The same place on the network: the address, and the name peers resolve, are those it had on the source.
    const addrs = log.split('\n').filter((l) => l.startsWith('address '));
    assert.equal(addrs.length, 2, log);
    assert.equal(addrs[0], addrs[1]);
    assert.match(addrs[0], /^address (\d+\.\d+\.\d+\.\d+), gpurun-\w+ is \1$/);
    assert.deepEqual(done.attempts!.map((a) => [a.n, a.host, a.fault]), [[1, from, 'migrated'], [2, to, null]]);
    // A move is no restart: the job says it moved, and its restart budget is untouched.
    assert.equal(done.attempt!.moves, 1);
    assert.match(done.attempts![0].reason!, new RegExp(`^moved to ${to} \\(gpurun migrate by mover\\); downtime [\\d.]+ s; copied .+ while running \\+ .+ after the checkpoint$`));
    const text = (await gpurun(['show', id], env)).stdout;
    assert.match(text, new RegExp(`^1 +${from} .*migrated`, 'm'));
    assert.match(text, new RegExp(`move ${from} → ${to} \\(cooperative\\): gpurun migrate by mover; checkpoint at .*; downtime [\\d.]+ s; copied \\d+ B while running, \\d+ B after \\(a full copy: \\d+ B\\)`));
    // The checkpoint folder is gone from both hosts once the job has ended.
    await waitFor('checkpoint folders removed', () => workDirs.every((w) => spawnSync('test', ['-e', join(w, 'checkpoints', id)]).status !== 0), 20_000, 200);
  });

  it('another user cannot move the job (not found); a job that did not ask to checkpoint is refused', async () => {
    const id = await submit(['--', 'sh', '-c', 'sleep 30']);
    await waitFor('running', async () => (await show(id)).state === 'running', 60_000, 200);
    const bob = { ...env, GPURUN_TOKEN: await createToken(broker, 'bob') };
    const r = await gpurun(['migrate', id], bob);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`no job ${id}`));
    const mine = await gpurun(['migrate', id], env);
    assert.notEqual(mine.code, 0);
    assert.match(mine.stderr, /did not say it can checkpoint/);
    assert.match(mine.stderr, /--checkpoint/);
    assert.equal((await show(id)).attempts!.length, 1);
    await gpurun(['cancel', id], env);
  });

  it('a job that ignores its checkpoint signal is not killed: the move is given up, it runs on', async () => {
    const id = await submit(['--checkpoint-signal', 'SIGUSR1', '--', 'sh', '-c', 'trap "" USR1; i=1; while [ $i -le 60 ]; do echo "step $i"; i=$((i+1)); sleep 0.25; done']);
    await waitFor('step 3', async () => /step 3\n/.test(await logs(id)), 60_000, 200);
    const from = (await show(id)).host;
    const mv = await gpurun(['migrate', id], env, { timeoutMs: 60_000 });
    assert.equal(mv.code, 1, mv.stdout);
    assert.match(mv.stderr, /given up: the job did not checkpoint within 8 s of SIGUSR1/);
    const j = await show(id);
    assert.equal(j.state, 'running');
    assert.equal(j.host, from);
    assert.equal(j.attempts!.length, 1);
    const done = await ended(id);
    assert.equal(done.state, 'succeeded', done.reason);
    assertSteps(await logs(id), 60);
  });

  it('a copy that fails before the checkpoint leaves the job running where it was, untouched', async () => {
    const id = await submit(['--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'count.py'], { STEPS: '24' });
    await waitFor('step 3', async () => /step 3\n/.test(await logs(id)), 60_000, 200);
    const from = (await show(id)).host!;
    const toIdx = from === 'h1' ? 1 : 0;
    // The destination cannot hold the folder: a file where its checkpoints folder goes.
    mkdirSync(workDirs[toIdx], { recursive: true });
    rmSync(join(workDirs[toIdx], 'checkpoints'), { recursive: true, force: true });
    writeFileSync(join(workDirs[toIdx], 'checkpoints'), 'not a folder');
    try {
      const mv = await gpurun(['migrate', id], env, { timeoutMs: 60_000 });
      assert.equal(mv.code, 1, mv.stdout);
      assert.match(mv.stderr, /given up/);
      const j = await show(id);
      assert.equal(j.state, 'running');
      assert.equal(j.host, from);
    } finally {
      rmSync(join(workDirs[toIdx], 'checkpoints'), { force: true });
    }
    const done = await ended(id);
    assert.equal(done.state, 'succeeded', done.reason);
    assert.equal(done.attempts!.length, 1);
    assertSteps(await logs(id), 24);
  });

  it('the broker killed -9 mid-move: after its restart the job runs exactly once, on the destination; the reserved GPU is not given away', async () => {
    const id = await submit(['--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'count.py'], { STEPS: '30', SLOW_CHECKPOINT: '4' });
    await waitFor('step 4', async () => /step 4\n/.test(await logs(id)), 60_000, 200);
    const from = (await show(id)).host!;
    const to = from === 'h1' ? 'h2' : 'h1';
    const mv = await gpurun(['migrate', id, '--no-wait'], env);
    assert.equal(mv.code, 0, mv.stderr);
    await waitFor('the checkpoint under way', async () => (await show(id)).move?.detail === 'waiting for its checkpoint', 30_000, 100);
    // Submitted while the move holds the destination's only GPU: it must not get it.
    const other = await submit(['--', 'sh', '-c', 'echo other; sleep 1']);
    await new Promise((r) => setTimeout(r, 1_000));
    const o1 = await show(other);
    assert.notEqual(o1.host, to, `the job submitted during the move got the reserved GPU: ${o1.reason}`);
    await broker.kill9();
    broker = await restartBroker(broker);
    const done = await ended(id);
    assert.equal(done.state, 'succeeded', done.reason);
    assert.deepEqual(done.attempts!.map((a) => [a.n, a.host, a.fault]), [[1, from, 'migrated'], [2, to, null]]);
    const log = await logs(id);
    assertSteps(log, 30);
    assert.equal(log.split('\n').filter((l) => l.startsWith('start at')).length, 2, log);
    const o = await ended(other);
    assert.equal(o.state, 'succeeded', o.reason);
    assert.equal(o.attempts![0].host, from, 'the other job ran where the moved job left');
  });

  it('gpurun drain moves the offline jobs off a host and takes no new ones there (one that does not checkpoint starts again, as its --restarts allow); undrain puts it back', async () => {
    // Both jobs on h1: h2 takes none while they start.
    assert.equal((await gpurun(['drain', 'h2'], adminEnv)).code, 0);
    let id = '';
    let stuck = '';
    try {
      id = await submit(['--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'count.py'], { STEPS: '40' });
      stuck = await submit(['--gpus', '0', '--restarts', '1', '--checkpoint-signal', 'SIGUSR1', '--', 'sh', '-c', 'trap "" USR1; echo "attempt $GPURUN_ATTEMPT"; sleep 60']);
      await waitFor('step 3', async () => /step 3\n/.test(await logs(id)), 60_000, 200);
      await waitFor('the other job running', async () => (await show(stuck)).state === 'running', 60_000, 200);
    } finally {
      assert.equal((await gpurun(['undrain', 'h2'], adminEnv)).code, 0);
    }
    assert.equal((await show(id)).host, 'h1');
    assert.equal((await show(stuck)).host, 'h1');
    const refused = await gpurun(['drain', 'h1'], env);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /only an admin can drain a host/);
    const r = await gpurun(['drain', 'h1'], adminEnv);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /h1 is draining/);
    assert.match(r.stdout, /h1: draining: 2 jobs moving, 0 running/);
    await waitFor('the job on the other host', async () => {
      const j = await show(id);
      return j.host === 'h2' && j.state === 'running' && !j.move;
    }, 60_000, 200);
    // The job that ignores its signal is not waited for: after the checkpoint timeout it starts again, on h2.
    const again = await waitFor('the stuck job restarted on h2', async () => {
      const j = await show(stuck);
      return j.host === 'h2' && j.state === 'running' && j.attempts!.length === 2 && j;
    }, 60_000, 300);
    assert.equal(again.attempts![0].fault, 'preempted');
    assert.match(again.attempts![0].reason!, /h1 drained by root: it did not checkpoint in time, so it starts again from the beginning/);
    assert.match((await gpurun(['hosts'], env)).stdout, /h1: draining: 0 jobs moving, 0 running/);
    const done = await ended(id);
    assert.equal(done.state, 'succeeded', done.reason);
    assertSteps(await logs(id), 40);
    assert.match(await logs(id), /── moved from h1 to h2: h1 drained by root; resumed/);
    await gpurun(['cancel', stuck], env);
    const back = await gpurun(['undrain', 'h1'], adminEnv);
    assert.equal(back.code, 0, back.stderr);
    assert.match((await gpurun(['hosts'], env)).stdout, /h1\s+up/);
  });

  it('an online job\'s real CPU load over the threshold moves the offline job off its host; the online job stays', async () => {
    // Both on h1: h2 takes no jobs while they start.
    await loadMoves({ env, adminEnv, ws, brokerLog: () => broker.log(), from: 'h1', to: 'h2', away: ['h2'], offline: [] });
  });
  it('preemption: an online job that needs the GPUs offline jobs hold runs; the checkpointing offline job resumes after it', async () => {
    const id = await submit(['--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'count.py'], { STEPS: '30' });
    const plain = await submit(['--', 'sh', '-c', 'sleep 120']);
    await waitFor('step 3', async () => /step 3\n/.test(await logs(id)), 60_000, 200);
    await waitFor('both running', async () => (await show(plain)).state === 'running', 60_000, 200);
    const host = (await show(id)).host!;
    try {
      const r = await gpurun(['run', '--workspace', ws, '--queue', 'online', '--gpus', '1', '--', 'sh', '-c', 'echo online on $GPURUN_GPUS; sleep 2'], env, { timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^online on 0$/m);
      const done = await ended(id);
      assert.equal(done.state, 'succeeded', done.reason);
      assert.deepEqual(done.attempts!.map((a) => [a.n, a.fault]), [[1, 'preempted'], [2, null]]);
      assert.equal(done.attempts![0].host, host);
      assert.match(done.attempts![0].reason!, /preempted for online job \w+/);
      const log = await logs(id);
      assertSteps(log, 30);
      assert.match(log, /^── attempt 2\/2 after preempted on h\d .*──$/m);
      assert.match(log, /^start at ([2-9]|\d\d+) attempt 2$/m);
      assert.equal((await show(plain)).attempts!.length, 1, 'the job that does not checkpoint is not preempted');
    } finally {
      await gpurun(['cancel', plain], env);
    }
  });
});
