/**
 * The cluster preempts a running job: a job of Slurm's higher-tier partition `urgent` (test/setup/50-slurm.sh, set
 * up as a site's preemption with PreemptMode=CANCEL) needs the GPUs that a gpurun job holds. Slurm ends the gpurun
 * job PREEMPTED; preemption is a recoverable fault, so with --restarts the broker submits it again as attempt 2, which
 * waits for the GPUs and runs once the urgent job is done. Without --restarts the job ends failed, saying why.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gpurun, waitFor } from '../support/harness.ts';
import { scancelAllGpurun, setUpSlurmSuite, tearDownSlurmSuite, type SlurmBroker } from '../support/slurm.ts';
import type { Job } from '../../server/protocol/jobs.ts';

const URGENT_NAME = 'gpurun-test-urgent';

/** Another user's job in the urgent partition that needs both GPUs of the node; returns its Slurm id. */
function submitUrgent(seconds: number): string {
  const r = spawnSync('sbatch', ['--parsable', '-p', 'urgent', '-J', URGENT_NAME, '--gres=gpu:2', '--mem=100M', '-o', '/dev/null', '--wrap', `sleep ${seconds}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sbatch of the urgent job failed: ${r.stderr}`);
  return r.stdout.trim().split(';')[0];
}

function cancelUrgent(): void {
  spawnSync('scancel', ['-n', URGENT_NAME]);
}

describe('slurm: preemption by the cluster', function () {
  this.timeout(150_000);
  let home: string;
  let ws: string;
  let s: SlurmBroker | undefined;

  before(async function () {
    ({ home, ws, s } = await setUpSlurmSuite(this, 'gpurun-slurm-preempt-', {
      prepare: (dir) => writeFileSync(join(dir, 'job.py'), 'import os, time\nprint("attempt", os.environ["GPURUN_ATTEMPT"], flush=True)\nif os.environ["GPURUN_ATTEMPT"] == "1":\n    time.sleep(120)\nprint("done", flush=True)\n'),
    }));
  });
  afterEach(() => {
    cancelUrgent();
    scancelAllGpurun();
  });
  after(async () => {
    cancelUrgent();
    await tearDownSlurmSuite(home, s);
  });

  const show = async (id: string): Promise<Job> => JSON.parse((await gpurun(['show', '--json', id], s!.env)).stdout);
  const ended = (j: Job): boolean => ['succeeded', 'failed', 'lost', 'cancelled', 'timed_out'].includes(j.state);

  async function runUntilPrinting(restarts: string[]): Promise<{ id: string; slurmId: string }> {
    const sub = await gpurun(['run', '--detach', '--workspace', ws, '--gpus', '2', '--memory', '100M', ...restarts, '--', 'python3', 'job.py'], s!.env);
    assert.equal(sub.code, 0, sub.stderr);
    const id = sub.stdout.trim();
    await waitFor('attempt 1 to print', async () => (await gpurun(['logs', id], s!.env)).stdout.includes('attempt 1\n'), 30_000);
    return { id, slurmId: (await show(id)).cluster!.slurmJobId! };
  }

  it('PREEMPTED → attempt 2 submitted again; it runs once the urgent job is done', async () => {
    const { id, slurmId } = await runUntilPrinting(['--restarts', '2']);
    submitUrgent(10);
    const queued = await waitFor('attempt 2 to be submitted', async () => {
      const j = await show(id);
      return j.attempts!.length === 2 && !!j.cluster?.slurmJobId && j.cluster.slurmJobId !== slurmId ? j : undefined;
    }, 60_000);
    assert.equal(queued.attempts![0].fault, 'preempted');
    assert.equal(queued.attempts![0].evidence.slurm?.state, 'PREEMPTED');
    const done = await waitFor('the job to end', async () => {
      const j = await show(id);
      return ended(j) && j;
    }, 90_000);
    assert.equal(done.state, 'succeeded', done.reason);
    assert.deepEqual(done.attempts!.map((a) => [a.n, a.fault]), [[1, 'preempted'], [2, null]]);
    const log = (await gpurun(['logs', id], s!.env)).stdout;
    assert.match(log, /── attempt 2\/3 after preempted on test\/localhost \(.*PREEMPTED.*\) ──\nattempt 2\ndone\n$/);
    assert.match(log, /^attempt 1\n/);
  });

  it('without --restarts the preempted job ends failed and says the cluster preempted it', async () => {
    const { id } = await runUntilPrinting(['--restarts', '0']);
    submitUrgent(5);
    const done = await waitFor('the job to end', async () => {
      const j = await show(id);
      return ended(j) && j;
    }, 60_000);
    assert.equal(done.state, 'failed');
    assert.match(done.reason ?? '', /preempted by the cluster/);
    assert.equal(done.attempts!.length, 1);
    const ls = (await gpurun(['show', id], s!.env)).stdout;
    assert.match(ls, /preempted/);
  });
});
