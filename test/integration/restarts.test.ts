/**
 * Restarts through the CLI against a real broker process on the local host: a job that asks to be restarted by its
 * exit code, one whose own error is never restarted, one that runs out of restarts, and a broker killed with -9
 * while a job is on its second attempt.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Job } from '../../server/protocol/jobs.ts';
import { cleanup, createToken, gpurun, restartBroker, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';

/** Exits 75 the first time (leaving a file in the workspace as its checkpoint), then resumes and prints `lines` lines. */
const RESUMING = `import os, sys, time
print("attempt", os.environ["GPURUN_ATTEMPT"], os.environ.get("GPURUN_PREVIOUS_FAULT", "-"), flush=True)
if not os.path.exists("checkpoint"):
    open("checkpoint", "w").write("1")
    sys.exit(75)
for i in range(int(sys.argv[1])):
    print("resumed", i, flush=True)
    time.sleep(0.3)
`;

describe('restarts (CLI, real broker)', function () {
  this.timeout(90_000);
  let dir: string;
  let ws: string;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;

  beforeEach(async () => {
    dir = scratch();
    ws = join(dir, 'ws');
    mkdirSync(ws);
    writeFileSync(join(ws, 'job.py'), RESUMING);
    broker = await startBrokerProcess(join(dir, 'broker'), { hosts: [{ name: 'local', type: 'local', cpus: 8, memory: '8G' }], restartBackoff: { first: '1s', max: '2s' } });
    env = testEnv(join(dir, 'client'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'alice') });
  });
  afterEach(async () => {
    await broker.stop();
    cleanup(dir);
  });

  const show = async (id: string): Promise<Job> => JSON.parse((await gpurun(['show', '--json', id], env)).stdout);
  const idOf = (stderr: string) => /job (\w+) submitted/.exec(stderr)![1];

  it('--restart-on-exit 75: attempt 2 resumes from the workspace, the log has the marker line, gpurun run exits 0', async () => {
    const r = await gpurun(['run', '--gpus', '0', '--restart-on-exit', '75', '--', 'python3', 'job.py', '2'], env, { cwd: ws });
    assert.equal(r.code, 0, r.stderr);
    const marker = '── attempt 2/2 after user_error on local (exit 75) ──\n';
    const expected = `attempt 1 -\n${marker}attempt 2 user_error\nresumed 0\nresumed 1\n`;
    assert.equal(r.stdout, expected);
    const id = idOf(r.stderr);
    assert.equal((await gpurun(['logs', id], env)).stdout, expected);
    const job = await show(id);
    assert.equal(job.state, 'succeeded');
    assert.deepEqual(job.attempts!.map((a) => [a.n, a.host, a.state, a.fault, a.exitCode]), [[1, 'local', 'failed', 'user_error', 75], [2, 'local', 'succeeded', null, 0]]);
    assert.equal(job.attempts![1].logOffset, Buffer.byteLength(`attempt 1 -\n${marker}`));
    const text = (await gpurun(['show', id], env)).stdout;
    assert.match(text, /attempts \(of at most 2\):/);
    assert.match(text, /^1 +local +- +\S+ +\S+ +failed +user_error +0 +exited with code 75, which it asks to be restarted on$/m);
    assert.match(text, /evidence of attempt 1:\n  exit code 75\n/);
  });

  it('exit 1 with --restarts 3: no restart, the job\'s own code', async () => {
    const r = await gpurun(['run', '--gpus', '0', '--restarts', '3', '--', 'python3', '-c', 'import sys; print("boom"); sys.exit(1)'], env, { cwd: ws });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, 'boom\n');
    const job = await show(idOf(r.stderr));
    assert.equal(job.state, 'failed');
    assert.equal(job.reason, 'exited with code 1');
    assert.deepEqual(job.attempts!.map((a) => a.fault), ['user_error']);
  });

  it('runs out of restarts: three attempts, two marker lines, the last attempt\'s exit code', async () => {
    const r = await gpurun(['run', '--gpus', '0', '--restarts', '2', '--restart-on-exit', '3', '--', 'sh', '-c', 'echo try $GPURUN_ATTEMPT; exit 3'], env, { cwd: ws });
    assert.equal(r.code, 3);
    assert.equal(r.stdout, 'try 1\n── attempt 2/3 after user_error on local (exit 3) ──\ntry 2\n── attempt 3/3 after user_error on local (exit 3) ──\ntry 3\n');
    const job = await show(idOf(r.stderr));
    assert.equal(job.state, 'failed');
    assert.match(job.reason, /exited with code 3, which it asks to be restarted on \(not restarted: no restarts left \(2 used\)\)/);
    assert.equal(job.attempts!.length, 3);
    assert.match(r.stderr, /job \w+ failed: exited with code 3/);
  });

  it('keeps attempts intact across kill -9 of the broker while a job runs its second attempt', async () => {
    const sub = await gpurun(['run', '--detach', '--gpus', '0', '--restart-on-exit', '75', '--', 'python3', 'job.py', '12'], env, { cwd: ws });
    assert.equal(sub.code, 0, sub.stderr);
    const id = sub.stdout.trim();
    await waitFor('attempt 2 to run', async () => {
      const j = await show(id);
      return j.state === 'running' && j.attempt?.n === 2 && (await gpurun(['logs', id], env)).stdout.includes('resumed 0');
    }, 30_000);
    const ls = (await gpurun(['ls'], env)).stdout;
    assert.match(ls, /running +online +local +- +\S+ +running on local \(no GPU\) · attempt 2\/2 · after user_error on local \(exit 75\)/);
    await broker.kill9();
    await new Promise((r) => setTimeout(r, 1000));
    broker = await restartBroker(broker);
    const done = await waitFor('the job to end', async () => {
      const j = await show(id);
      return j.state !== 'running' && j;
    }, 30_000);
    assert.equal(done.state, 'succeeded', done.reason);
    assert.deepEqual(done.attempts!.map((a) => [a.n, a.state]), [[1, 'failed'], [2, 'succeeded']]);
    let expected = 'attempt 1 -\n── attempt 2/2 after user_error on local (exit 75) ──\nattempt 2 user_error\n';
    for (let i = 0; i < 12; i++) expected += `resumed ${i}\n`;
    assert.equal(readFileSync(join(broker.home, 'data', 'logs', `${id}.log`), 'utf8'), expected);
  });
});
