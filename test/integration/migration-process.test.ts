/**
 * Moving running jobs between SSH hosts that run them as plain processes (`runtime: "process"`), through the CLI
 * against a real broker process: two such hosts on loopback (127.0.36.1, 127.0.36.2: real sshd, sshfs) and a Docker
 * host (127.0.36.3). The cooperative checkpoint works there as in a container: the job's process group gets its
 * signal, it writes its state into GPURUN_CHECKPOINT_DIR (the host's folder itself, no container to mount it into),
 * exits, and goes on on the other host from GPURUN_RESUME_FROM. A job moves only between hosts of the same kind.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createToken, gpurun, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';
import { endHostSuite, makeSshHosts, type TestHostSet } from '../support/sshHosts.ts';
import { counterWorkspace, dockerHostConfigs, jobViews, loadMoves, requireMigrationParts } from '../support/migrationHosts.ts';

describe('migration between hosts that run jobs as plain processes', function () {
  this.timeout(180_000);
  let dir: string, ws: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let adminEnv: NodeJS.ProcessEnv;
  let workDirs: string[] = [];

  before(async function () {
    requireMigrationParts(this);
    dir = scratch('gpurun-migration-process-');
    const gpu = [{ name: 'NVIDIA L4', memoryMiB: 23034 }];
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'p1', address: '127.0.36.1', gpus: gpu },
      { name: 'p2', address: '127.0.36.2', gpus: gpu },
      { name: 'dk', address: '127.0.36.3', gpus: [{ name: 'Tesla T4', memoryMiB: 15360 }] },
    ]);
    ws = counterWorkspace(dir);
    const cfg = dockerHostConfigs(set, dir, (name) => (name === 'dk' ? {} : { runtime: 'process' }));
    workDirs = cfg.workDirs;
    broker = await startBrokerProcess(join(dir, 'home'), { hosts: cfg.hosts, defaults: { image: 'local/python:3', gpus: 1, memory: '256M' }, migration: { checkpointTimeout: '10s', threshold: { cpu: 0.2 }, window: '4s', sampleEvery: '1s' } });
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'proc-mover') };
    adminEnv = { ...env, GPURUN_TOKEN: await createToken(broker, 'root', true) };
    await waitFor('the hosts up', async () => {
      const out = (await gpurun(['hosts'], env)).stdout;
      return ['p1', 'p2', 'dk'].every((n) => new RegExp(`${n}\\s+up`).test(out));
    }, 60_000, 300);
  });

  after(async function () {
    await endHostSuite(broker, set, 'proc-mover', workDirs, dir);
  });

  const { submit, show, logs, ended, assertSteps } = jobViews(() => env, () => ws);

  it('gpurun hosts says a process host checkpoints cooperatively, and why not transparently', async () => {
    const out = (await gpurun(['hosts'], env)).stdout;
    assert.match(out, /^p1: checkpoint: cooperative \(transparent unavailable: jobs here are plain processes; CRIU is used through Docker only\)$/m);
  });

  it('gpurun migrate moves a checkpointing job from one process host to the other: same id, one log, every step once', async () => {
    const id = await submit(['--gpu-type', 'L4', '--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'count.py'], { STEPS: '30' });
    await waitFor('step 5', async () => /^step 5$/m.test(await logs(id)), 90_000, 200);
    const from = (await show(id)).host!;
    assert.ok(from === 'p1' || from === 'p2', `the job runs on ${from}`);
    const to = from === 'p1' ? 'p2' : 'p1';
    const follow = gpurun(['logs', '-f', id], env, { timeoutMs: 150_000 });
    const mv = await gpurun(['migrate', id, '--to', to], env, { timeoutMs: 120_000 });
    assert.equal(mv.code, 0, mv.stderr + mv.stdout);
    assert.match(mv.stdout, new RegExp(`runs on ${to} \\(attempt 2\\)`));
    const done = await ended(id);
    assert.equal(done.state, 'succeeded', done.reason);
    const log = await logs(id);
    assertSteps(log, 30);
    assert.match(log, new RegExp(`^── moved from ${from} to ${to}: gpurun migrate by proc-mover; resumed from checkpoint at \\d\\d:\\d\\d:\\d\\d ──$`, 'm'));
    // Each attempt wrote its checkpoints into its own host's folder, and the second started from the first's.
    const fromDir = workDirs[from === 'p1' ? 0 : 1];
    const toDir = workDirs[to === 'p1' ? 0 : 1];
    assert.match(log, new RegExp(`^start at 1 attempt 1\ncheckpoints in ${fromDir}/checkpoints/${id}$`, 'm'));
    assert.match(log, new RegExp(`^start at \\d+ attempt 2\ncheckpoints in ${toDir}/checkpoints/${id}$`, 'm'));
    assert.notEqual(/^start at (\d+) attempt 2/m.exec(log)![1], '1', 'the second attempt resumed from the checkpoint');
    assert.equal((await follow).stdout, log);
    assert.deepEqual(done.attempts!.map((a) => [a.n, a.host, a.fault]), [[1, from, 'migrated'], [2, to, null]]);
    assert.equal(done.attempts![0].evidence.move!.method, 'cooperative');
    await waitFor('checkpoint folders removed', () => [fromDir, toDir].every((w) => !existsSync(join(w, 'checkpoints', id))), 20_000, 200);
  });

  it("an online job's real CPU load on a process host moves the offline job to the other process host; the online job stays", async () => {
    // Both on p1: p2 and the Docker host take no jobs while they start. The load is read from /proc of the online
    // job's processes, and shown as for a Docker host.
    await loadMoves({ env, adminEnv, ws, brokerLog: () => broker.log(), from: 'p1', to: 'p2', away: ['p2', 'dk'], offline: ['--gpu-type', 'L4'] });
  });
  it('a job on a process host does not move to a Docker host: the refusal says why, and it runs on', async () => {
    const id = await submit(['--gpu-type', 'L4', '--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'count.py'], { STEPS: '16' });
    await waitFor('step 2', async () => /^step 2$/m.test(await logs(id)), 90_000, 200);
    const mv = await gpurun(['migrate', id, '--to', 'dk'], env);
    assert.equal(mv.code, 1, mv.stdout);
    assert.match(mv.stderr, /dk cannot take job \w+ now: it runs jobs in containers and this job runs as plain processes; a job moves only between hosts of the same kind/);
    const done = await ended(id);
    assert.equal(done.state, 'succeeded', done.reason);
    assertSteps(await logs(id), 16);
    assert.equal(done.attempts!.length, 1);
  });
});
