/**
 * A move whose destination cannot start the job, through the CLI against a real broker process: three SSH hosts on
 * loopback (127.0.21.1–3: real sshd, the real Docker engine, sshfs). h2's Docker has no NVIDIA runtime although its
 * config says `gpuMode: "nvidia"`, so its containers are created but `docker start` fails; h3's work folder cannot
 * hold the job's env file. A destination that fails while it is made ready (during the pre-copy) gives the move up
 * with the job untouched on the source; one that fails to start after the source's checkpoint has the job resume on
 * the source from that checkpoint. A destination whose link goes silent (iptables) while the checkpoint is copied
 * there: the copy is given up and the job resumes on the source. Never two containers of the job at once, every step
 * once.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createToken, gpurun, iptables, requirePart, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';
import { endHostSuite, makeSshHosts, type TestHostSet } from '../support/sshHosts.ts';
import { counterWorkspace, dockerHostConfigs, jobViews, requireMigrationParts } from '../support/migrationHosts.ts';

describe('migration: a destination that cannot start the job', function () {
  this.timeout(180_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let ws: string;
  let workDirs: string[] = [];
  const owner = 'mover-fail';

  before(async function () {
    requireMigrationParts(this);
    dir = scratch('gpurun-migration-fail-');
    const gpu = [{ name: 'NVIDIA L4', memoryMiB: 23034 }];
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'h1', address: '127.0.21.1', gpus: gpu },
      { name: 'h2', address: '127.0.21.2', gpus: gpu },
      { name: 'h3', address: '127.0.21.3', gpus: gpu },
    ]);
    ws = counterWorkspace(dir);
    // h2: `--gpus` needs the NVIDIA container runtime, which this engine lacks (docker start fails).
    const cfg = dockerHostConfigs(set, dir, (name) => (name === 'h2' ? { gpuMode: 'nvidia' } : {}));
    workDirs = cfg.workDirs;
    // h3: a file where the folder of its jobs' env files goes.
    mkdirSync(workDirs[2]!, { recursive: true });
    writeFileSync(join(workDirs[2]!, 'run'), 'not a folder');
    broker = await startBrokerProcess(join(dir, 'home'), { hosts: cfg.hosts, defaults: { image: 'local/python:3', gpus: 1, memory: '256M' }, migration: { checkpointTimeout: '8s' } });
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, owner) };
    await waitFor('the hosts up', async () => (await gpurun(['hosts'], env)).stdout.split('\n').filter((l) => /^h\d\s+up/.test(l)).length === 3, 60_000);
  });

  /** Addresses blocked by a test, let through again after it whatever happened. */
  const blocked: string[] = [];
  afterEach(() => {
    for (const a of blocked.splice(0)) iptables('-D', a);
  });

  after(async function () {
    await endHostSuite(broker, set, owner, workDirs, dir);
  });

  const { show, logs, ended: finished, steps } = jobViews(() => env);
  const containers = (id: string, all = false) => execFileSync('docker', ['ps', ...(all ? ['-a'] : []), '-q', '--filter', `label=gpurun.job=${id}`], { encoding: 'utf8' }).split('\n').filter(Boolean).length;
  /** Submits the counter to h1 (the other hosts drained meanwhile), waits for step 3, and watches for a second container. */
  const startOnH1 = async (steps: number, extraEnv: string[] = []): Promise<{ id: string; most: () => number; stop: () => void }> => {
    const admin = { ...env, GPURUN_TOKEN: await createToken(broker, 'root', true) };
    for (const h of ['h2', 'h3']) assert.equal((await gpurun(['drain', h], admin)).code, 0);
    const r = await gpurun(['run', '--detach', '--workspace', ws, '--queue', 'offline', '--env', `STEPS=${steps}`, ...extraEnv.flatMap((e) => ['--env', e]), '--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'count.py'], env);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    await waitFor('step 3', async () => /step 3\n/.test(await logs(id)), 90_000, 200);
    for (const h of ['h2', 'h3']) assert.equal((await gpurun(['undrain', h], admin)).code, 0);
    assert.equal((await show(id)).host, 'h1');
    let most = 0;
    const t = setInterval(() => (most = Math.max(most, containers(id))), 100);
    return { id, most: () => most, stop: () => clearInterval(t) };
  };

  it('a destination that cannot be made ready gives the move up before the checkpoint: the job runs on, untouched', async () => {
    const { id, most, stop } = await startOnH1(24);
    try {
      const mv = await gpurun(['migrate', id, '--to', 'h3'], env, { timeoutMs: 60_000 });
      assert.equal(mv.code, 1, mv.stdout);
      assert.match(mv.stderr, /the move of job \w+ was given up: h3 cannot start the job: writing the job's env file .* failed/);
      const j = await show(id);
      assert.equal(j.state, 'running');
      assert.equal(j.host, 'h1');
      assert.equal(j.attempts!.length, 1);
      const done = await finished(id);
      assert.equal(done.state, 'succeeded', done.reason);
      assert.deepEqual(steps(await logs(id)), Array.from({ length: 24 }, (_, i) => i + 1));
      assert.doesNotMatch(await logs(id), /moved|resumed/);
      assert.equal(most(), 1, 'two containers of the job ran at once');
    } finally {
      stop();
    }
  });

  it('a destination whose link goes silent while the checkpoint is copied there: the copy is given up, the job resumes on the source, once', async function () {
    requirePart(this, 'iptables', spawnSync('iptables', ['-L', '-n']).status === 0, 'iptables -L fails (apt-get install iptables)');
    // A slow checkpoint (3 s) holds the move in "waiting for its checkpoint" long enough to see it there.
    const { id, most, stop } = await startOnH1(60, ['SLOW_CHECKPOINT=3']);
    try {
      // h2 is made ready while the job runs (its container created); its link goes silent before the checkpoint's
      // copy, which then never gets there.
      const mv = gpurun(['migrate', id, '--to', 'h2'], env, { timeoutMs: 150_000 });
      await waitFor('the move waiting for the checkpoint', async () => (await show(id)).move?.detail === 'waiting for its checkpoint', 60_000, 100);
      iptables('-I', '127.0.21.2');
      blocked.push('127.0.21.2');
      const r = await mv;
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, /job \w+ was not moved; it runs on h1 again \(attempt \d\), from its checkpoint: .*the copy to h2 failed: /);
      iptables('-D', '127.0.21.2');
      blocked.splice(0);
      const done = await finished(id, 150_000);
      assert.equal(done.state, 'succeeded', done.reason);
      const log = await logs(id);
      assert.deepEqual(steps(log), Array.from({ length: 60 }, (_, i) => i + 1), log);
      assert.match(log, /^── not moved to h2 \(the copy to h2 failed: .*\); resumed on h1 from checkpoint at \d\d:\d\d:\d\d ──$/m);
      assert.doesNotMatch(log, /^── moved from/m);
      assert.ok(done.attempts!.every((a) => a.host === 'h1' || a.fault !== null), JSON.stringify(done.attempts));
      assert.equal(done.attempts!.at(-1)!.host, 'h1');
      assert.equal(most(), 1, 'two containers of the job ran at once');
      await waitFor('containers removed', () => containers(id, true) === 0, 60_000, 200);
    } finally {
      stop();
    }
  });

  it('a destination whose docker start fails after the checkpoint: the job resumes on the source from it, once', async () => {
    const { id, most, stop } = await startOnH1(30);
    try {
      const mv = await gpurun(['migrate', id, '--to', 'h2'], env, { timeoutMs: 90_000 });
      assert.equal(mv.code, 1, mv.stdout);
      assert.match(mv.stderr, /job \w+ was not moved; it runs on h1 again \(attempt 3\), from its checkpoint: .*h2 could not start it: docker start failed on h2/);
      const done = await finished(id);
      assert.equal(done.state, 'succeeded', done.reason);
      const log = await logs(id);
      assert.deepEqual(steps(log), Array.from({ length: 30 }, (_, i) => i + 1), log);
      assert.match(log, /^── not moved to h2 \(h2 could not start it: docker start failed on h2 .*\); resumed on h1 from checkpoint at \d\d:\d\d:\d\d ──$/m);
      // The job never ran on h2, and its log does not say it did.
      assert.doesNotMatch(log, /^── moved from/m);
      assert.match(log, /^start at \d+ attempt 3$/m);
      assert.deepEqual(done.attempts!.map((a) => [a.n, a.host, a.fault]), [[1, 'h1', 'migrated'], [2, 'h2', 'migrated'], [3, 'h1', null]]);
      assert.equal(most(), 1, 'two containers of the job ran at once');
      // Nothing of the job is left on either engine: the prepared container on h2 and the source's on h1 are gone.
      await waitFor('containers removed', () => containers(id, true) === 0, 20_000, 200);
    } finally {
      stop();
    }
  });
});
