/**
 * Waiting in Slurm's queue, through the CLI: a job that does not fit shows Slurm's own reason and its place in the
 * partition's queue; cancel works on a pending and on a running job, and takes the job out of Slurm too.
 */
import assert from 'node:assert/strict';
import { gpurun, gpurunSpawn, waitFor } from '../support/harness.ts';
import { setUpSlurmSuite, slurmState, tearDownSlurmSuite, type SlurmBroker } from '../support/slurm.ts';
import type { Job } from '../../server/protocol/jobs.ts';

describe('slurm: queue reasons and cancel', function () {
  this.timeout(90_000);
  let home: string;
  let ws: string;
  let s: SlurmBroker;

  before(async function () {
    ({ home, ws, s } = await setUpSlurmSuite(this, 'gpurun-slurm-queue-'));
  });
  after(() => tearDownSlurmSuite(home, s));

  async function jobs(): Promise<Job[]> {
    const r = await gpurun(['ls', '--json'], s.env);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Job[];
  }
  const byId = async (id: string) => (await jobs()).find((j) => j.id === id)!;
  const submit = async (args: string[]) => {
    const r = await gpurun(['run', '--detach', '--workspace', ws, '--memory', '100M', ...args], s.env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };

  it('a job waiting for GPUs shows Slurm\'s reason; pending and running jobs can be cancelled', async () => {
    // Both GPUs of the node, held by a running job that `gpurun run` is attached to.
    const holder = gpurunSpawn(['run', '--workspace', ws, '--gpus', '2', '--memory', '100M', '--queue', 'offline', '--', 'python3', '-c', 'import time; print("holding", flush=True); time.sleep(120)'], s.env);
    let holderOut = '';
    let holderErr = '';
    holder.stdout!.on('data', (d) => (holderOut += d));
    holder.stderr!.on('data', (d) => (holderErr += d));
    await waitFor('the holder to run', () => holderOut.includes('holding'), 30_000);
    const holderId = /job (\w+) submitted/.exec(holderErr)![1];

    const waiting = await submit(['--gpus', '1', '--', 'echo', 'never runs']);
    const behind = await submit(['--gpus', '1', '--', 'echo', 'never runs either']);
    const w = await waitFor('Slurm\'s reason', async () => {
      const j = await byId(waiting);
      return j.state === 'queued' && /Slurm: Resources/.test(j.reason) && j;
    });
    assert.equal(w.reason, 'waiting for free resources on cluster test (Slurm: Resources)');
    assert.equal(w.queuePosition, 1);
    const b = await waitFor('the second waiting job\'s reason', async () => {
      const j = await byId(behind);
      return /Slurm: (Priority|Resources)/.test(j.reason) && j;
    });
    assert.equal(b.queuePosition, 2);
    // The table a user reads.
    const table = (await gpurun(['ls'], s.env)).stdout;
    assert.match(table, new RegExp(`${waiting}\\s+echo\\s+queued #1\\s+online.*waiting for free resources on cluster test \\(Slurm: Resources\\)`));
    assert.match(table, new RegExp(`${holderId}\\s+python3\\s+running\\s+offline\\s+test/localhost`));

    // Cancel the pending one: gone from Slurm too.
    const slurmId = w.cluster!.slurmJobId!;
    const c1 = await gpurun(['cancel', waiting], s.env);
    assert.equal(c1.code, 0, c1.stderr);
    assert.match(c1.stdout, new RegExp(`job ${waiting} cancelled: cancelled by alice while queued`));
    await waitFor('Slurm to cancel the pending job', () => slurmState(slurmId) === 'CANCELLED');

    // Cancel the running one: the attached `gpurun run` ends with 130.
    const c2 = await gpurun(['cancel', holderId], s.env);
    assert.match(c2.stdout, new RegExp(`job ${holderId} cancelled: cancelled by alice`));
    const code = await new Promise<number | null>((r) => (holder.exitCode !== null ? r(holder.exitCode) : holder.on('close', r)));
    assert.equal(code, 130, holderErr);
    const h = await byId(holderId);
    assert.equal(h.state, 'cancelled');
    assert.equal(slurmState(h.cluster!.slurmJobId!), 'CANCELLED');

    // With the GPUs free, the job behind runs.
    await waitFor('the job behind to run', async () => (await byId(behind)).state === 'succeeded', 30_000);
    assert.equal((await gpurun(['logs', behind], s.env)).stdout, 'never runs either\n');
  });
});
