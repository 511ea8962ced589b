/**
 * Jobs on a real Slurm through the CLI and a real broker process: output streams, exit codes propagate (hostile
 * argv arrives intact through the batch script), a time limit ends the job timed_out.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gpurun, gpurunSpawn, waitFor } from '../support/harness.ts';
import { setUpSlurmSuite, slurmState, tearDownSlurmSuite, type SlurmBroker } from '../support/slurm.ts';
import type { Job } from '../../server/protocol/jobs.ts';

const BROKER_SECRET = 'broker-secret-7f3a9c';

describe('slurm: run, output, exit codes, time limits', function () {
  this.timeout(90_000);
  let home: string;
  let ws: string;
  let s: SlurmBroker;

  before(async function () {
    ({ home, ws, s } = await setUpSlurmSuite(this, 'gpurun-slurm-run-', {
      prepare: (dir) => writeFileSync(join(dir, 'steps.py'), 'import time, os\nprint("first", flush=True)\ntime.sleep(4)\nprint("second", os.environ.get("CUDA_VISIBLE_DEVICES"))\n'),
      brokerEnv: { SECRET_OF_BROKER: BROKER_SECRET },
    }));
  });
  after(() => tearDownSlurmSuite(home, s));

  async function job(id: string): Promise<Job> {
    const r = await gpurun(['ls', '--all', '--json'], s.env);
    return (JSON.parse(r.stdout) as Job[]).find((j) => j.id === id)!;
  }

  it('runs the job on Slurm and streams its output while it runs', async () => {
    const child = gpurunSpawn(['run', '--workspace', ws, '--gpus', '1', '--cpus', '1', '--memory', '100M', '--', 'python3', 'steps.py'], s.env);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    await waitFor('the first line', () => out.includes('first\n'), 30_000);
    // The job is still running when its first line is shown.
    assert.ok(!out.includes('second'), out);
    const id = /job (\w+) submitted/.exec(err)![1];
    const running = await job(id);
    assert.equal(running.state, 'running');
    assert.equal(running.backend, 'test');
    // The node it runs on, from the next squeue poll.
    await waitFor('its node', async () => (await job(id)).host === 'test/localhost', 10_000);
    const code = await new Promise<number | null>((r) => child.on('close', r));
    assert.equal(code, 0, err);
    // Slurm gave it one of the two GPUs (gres), as CUDA_VISIBLE_DEVICES.
    assert.match(out, /^first\nsecond [01]\n$/);
    const done = await job(id);
    assert.equal(done.state, 'succeeded');
    assert.equal(done.exitCode, 0);
    assert.match(done.cluster!.slurmJobId!, /^\d+$/);
    assert.equal(slurmState(done.cluster!.slurmJobId!), 'COMPLETED');
  });

  it('propagates the exit code and passes hostile arguments intact', async () => {
    const hostile = ["it's", 'a b', '$HOME', '`id`', '; rm -rf /', 'x\ny', '"q"', '*', '\\', ''];
    const r = await gpurun(['run', '--workspace', ws, '--gpus', '0', '--memory', '100M', '--', 'python3', '-c', 'import sys, json; print(json.dumps(sys.argv[1:])); sys.exit(7)', ...hostile], s.env);
    assert.equal(r.code, 7, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), hostile);
    assert.match(r.stderr, /failed: exited with code 7/);
  });

  it("gives a team broker's Slurm job its own env, never the broker's", async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpus', '0', '--memory', '100M', '--env', 'MINE=yes', '--', 'env'], s.env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^MINE=yes$/m);
    assert.match(r.stdout, /^GPURUN_JOB_ID=\w+$/m);
    assert.ok(!r.stdout.includes(BROKER_SECRET), `the job saw the broker's env:\n${r.stdout}`);
  });

  it('a command that is not there fails with exit code 127', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpus', '0', '--memory', '100M', '--', 'no-such-program-xyz'], s.env);
    assert.equal(r.code, 127, r.stderr);
    assert.match(r.stdout + r.stderr, /no-such-program-xyz/);
  });

  it('a --time shorter than the job ends it timed_out (exit code 124)', async () => {
    const t0 = Date.now();
    const r = await gpurun(['run', '--workspace', ws, '--gpus', '0', '--memory', '100M', '--time', '3s', '--', 'python3', '-c', 'import time; print("started", flush=True); time.sleep(60); print("never")'], s.env);
    assert.equal(r.code, 124, r.stderr);
    assert.match(r.stdout, /^started\n/);
    assert.ok(!r.stdout.includes('never'), r.stdout + r.stderr);
    assert.match(r.stderr, /timed out: stopped after reaching its time limit of 3s/);
    assert.ok(Date.now() - t0 < 30_000, `took ${Date.now() - t0} ms`);
  });

  it('a request the cluster can never satisfy fails with sbatch\'s message (exit code 125)', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpus', '9', '--memory', '100M', '--', 'true'], s.env);
    assert.equal(r.code, 125, r.stderr);
    assert.match(r.stderr, /could not start: sbatch on local failed \(exit code 1\): .*Requested node configuration is not available/);
  });

  it('an unknown --backend is refused with the known ones', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--backend', 'nope', '--', 'true'], s.env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /backend: "nope" is not a backend of this broker; known: test/);
    assert.equal((await gpurun(['ls', '--json'], s.env)).stdout.includes('nope'), false);
  });
});
