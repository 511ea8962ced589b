/**
 * A broker killed with SIGKILL loses nothing: its jobs keep running and writing their logs, and a restarted broker
 * finds them, follows them to their end with the right state and exit code, and a follower resumes by byte offset.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Job } from '../../server/protocol/jobs.ts';
import { cleanup, createToken, gpurun, gpurunSpawn, restartBroker, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';

/** A job that prints `n` numbered lines over about `n * 0.3` s, then exits with `code`. */
function ticker(tag: string, n: number, code: number): string[] {
  return ['python3', '-c', `import time, sys\nfor i in range(${n}):\n    print("${tag} line", i, "é" * i, flush=True)\n    time.sleep(0.3)\nsys.exit(${code})`];
}
function expected(tag: string, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += `${tag} line ${i} ${'é'.repeat(i)}\n`;
  return s;
}

describe('broker restart (kill -9)', function () {
  this.timeout(90_000);
  let dir: string;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;

  beforeEach(async () => {
    dir = scratch();
    broker = await startBrokerProcess(join(dir, 'broker'), { hosts: [{ name: 'local', type: 'local', cpus: 8, memory: '8G' }] });
    env = testEnv(join(dir, 'client'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'alice') });
  });
  afterEach(async () => {
    await broker.stop();
    cleanup(dir);
  });

  const ls = async (): Promise<Job[]> => JSON.parse((await gpurun(['ls', '--all', '--json'], env)).stdout);
  const submit = async (cmd: string[]) => {
    const r = await gpurun(['run', '--detach', '--gpus', '0', '--', ...cmd], env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };

  it('ends 3 running jobs correctly, with complete logs, after the broker is killed and restarted', async () => {
    const jobs = [
      { tag: 'a', n: 12, code: 0, id: '' },
      { tag: 'b', n: 14, code: 4, id: '' },
      { tag: 'c', n: 16, code: 0, id: '' },
    ];
    for (const j of jobs) j.id = await submit(ticker(j.tag, j.n, j.code));
    await waitFor('all three to run', async () => (await ls()).filter((j) => j.state === 'running').length === 3);
    // A follower that is attached across the restart.
    const follower = gpurunSpawn(['logs', '-f', jobs[2].id], env);
    let followed = '';
    let followerErr = '';
    follower.stdout!.on('data', (d) => (followed += d));
    follower.stderr!.on('data', (d) => (followerErr += d));
    await waitFor('the follower to get output', () => followed.length > 0);

    await broker.kill9();
    await new Promise((r) => setTimeout(r, 1500)); // the jobs keep printing meanwhile
    broker = await restartBroker(broker);

    for (const j of jobs) {
      const done = await waitFor(`job ${j.tag} to end`, async () => {
        const job = (await ls()).find((x) => x.id === j.id)!;
        return job.state !== 'running' && job;
      });
      assert.equal(done.state, j.code === 0 ? 'succeeded' : 'failed', `${j.tag}: ${done.reason}`);
      assert.equal(done.exitCode, j.code);
      const logs = await gpurun(['logs', j.id], env);
      assert.equal(logs.stdout, expected(j.tag, j.n), `log of ${j.tag} byte for byte`);
      assert.equal(readFileSync(join(broker.home, 'data', 'logs', `${j.id}.log`), 'utf8'), expected(j.tag, j.n));
    }
    const code = await new Promise((r) => (follower.exitCode !== null ? r(follower.exitCode) : follower.on('close', r)));
    assert.equal(code, 0, followerErr);
    assert.equal(followed, expected('c', 16), 'the follower got every byte once: no gap, no repeat');
    assert.match(followerErr, /lost the broker at byte \d+; reconnecting/);
    assert.match(broker.log(), /following job again after restart/);
  });

  it('marks a job lost, with the reason, when its process vanished while the broker was down', async () => {
    const id = await submit(['sleep', '30']);
    await waitFor('it to run', async () => (await ls()).find((j) => j.id === id)?.state === 'running');
    await broker.kill9();
    const pids = JSON.parse(readFileSync(join(broker.home, 'data', 'run', id, 'pid.json'), 'utf8')) as { shimPid: number; pid: number };
    process.kill(pids.shimPid, 'SIGKILL');
    process.kill(-pids.pid, 'SIGKILL');
    broker = await restartBroker(broker);
    const job = await waitFor('it to be settled', async () => {
      const j = (await ls()).find((x) => x.id === id)!;
      return j.state !== 'running' && j;
    });
    assert.equal(job.state, 'lost');
    assert.match(job.reason, /supervisor process is gone and left no exit status/);
    const r = await gpurun(['logs', id], env);
    assert.equal(r.code, 0);
  });

  it('still enforces a time limit that ran out while the broker was down', async () => {
    const r = await gpurun(['run', '--detach', '--gpus', '0', '--time', '2s', '--', 'sleep', '30'], env);
    const id = r.stdout.trim();
    await waitFor('it to run', async () => (await ls()).find((j) => j.id === id)?.state === 'running');
    await broker.kill9();
    await new Promise((res) => setTimeout(res, 2500));
    broker = await restartBroker(broker);
    const job = await waitFor('it to time out', async () => {
      const j = (await ls()).find((x) => x.id === id)!;
      return j.state !== 'running' && j;
    });
    assert.equal(job.state, 'timed_out');
  });
});
