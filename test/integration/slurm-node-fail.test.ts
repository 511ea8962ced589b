/**
 * A Slurm node fails under a running job (set down with scontrol, as slurmctld does for a dead node): Slurm ends the
 * job NODE_FAIL, and with --restarts the broker submits it again as attempt 2 of the same staged workspace, with the
 * marker line in the log. The node is resumed in the test and in after(), also on failure.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gpurun, waitFor } from '../support/harness.ts';
import { setUpSlurmSuite, tearDownSlurmSuite, type SlurmBroker } from '../support/slurm.ts';
import type { Job } from '../../server/protocol/jobs.ts';

function node(state: 'down' | 'resume'): void {
  const r = spawnSync('scontrol', ['update', 'nodename=localhost', `state=${state}`, ...(state === 'down' ? ['reason=gpurun-test'] : [])], { encoding: 'utf8' });
  if (r.status !== 0 && state === 'down') throw new Error(`scontrol update failed: ${r.stderr}`);
}

describe('slurm: node failure restarts the job', function () {
  this.timeout(120_000);
  let home: string;
  let ws: string;
  let s: SlurmBroker | undefined;

  before(async function () {
    ({ home, ws, s } = await setUpSlurmSuite(this, 'gpurun-slurm-nodefail-', {
      prepare: (dir) => writeFileSync(join(dir, 'job.py'), 'import os, time\nprint("attempt", os.environ["GPURUN_ATTEMPT"], flush=True)\nif os.environ["GPURUN_ATTEMPT"] == "1":\n    time.sleep(120)\nprint("done", flush=True)\n'),
    }));
  });
  after(async () => {
    node('resume');
    await tearDownSlurmSuite(home, s);
  });

  const show = async (id: string): Promise<Job> => JSON.parse((await gpurun(['show', '--json', id], s!.env)).stdout);

  it('NODE_FAIL → attempt 2 submitted again; it runs once the node is back', async () => {
    const sub = await gpurun(['run', '--detach', '--workspace', ws, '--gpus', '1', '--memory', '100M', '--restarts', '2', '--', 'python3', 'job.py'], s!.env);
    assert.equal(sub.code, 0, sub.stderr);
    const id = sub.stdout.trim();
    await waitFor('attempt 1 to print', async () => (await gpurun(['logs', id], s!.env)).stdout.includes('attempt 1\n'), 30_000);
    const first = (await show(id)).cluster!.slurmJobId;
    node('down');
    const queued = await waitFor('attempt 2 to be submitted', async () => {
      const j = await show(id);
      return j.attempts!.length === 2 && !!j.cluster?.slurmJobId && j.cluster.slurmJobId !== first ? j : undefined;
    }, 60_000);
    assert.equal(queued.attempts![0].fault, 'node_fail');
    assert.equal(queued.attempts![0].evidence.slurm?.state, 'NODE_FAIL');
    node('resume');
    const done = await waitFor('the job to end', async () => {
      const j = await show(id);
      return ['succeeded', 'failed', 'lost', 'cancelled', 'timed_out'].includes(j.state) && j;
    }, 60_000);
    assert.equal(done.state, 'succeeded', done.reason);
    assert.deepEqual(done.attempts!.map((a) => [a.n, a.fault]), [[1, 'node_fail'], [2, null]]);
    const log = (await gpurun(['logs', id], s!.env)).stdout;
    // Slurm's own line about the node failure is part of attempt 1's output, as the user would see it.
    assert.match(log, /^attempt 1\n(slurmstepd.*NODE FAILURE.*\n)?── attempt 2\/3 after node_fail on test\/localhost \(Slurm NODE_FAIL.*\) ──\nattempt 2\ndone\n$/);
  });
});
