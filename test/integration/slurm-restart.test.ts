/**
 * The broker is killed (-9) while its job runs in Slurm; a new broker process on the same data folder finds the job
 * by its Slurm id and follows it to its end: the whole output exactly once, the right state and exit code.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { gpurun, scratch, waitFor } from '../support/harness.ts';
import { clusterConfig, requireSlurm, startSlurmBroker, tearDownSlurmSuite, type SlurmBroker } from '../support/slurm.ts';
import type { Job } from '../../server/protocol/jobs.ts';

describe('slurm: broker restart', function () {
  this.timeout(90_000);
  let home: string;
  let ws: string;
  let s: SlurmBroker | undefined;

  before(function () {
    requireSlurm(this);
    home = scratch('gpurun-slurm-restart-');
    ws = join(home, 'ws');
    mkdirSync(ws);
  });
  after(() => tearDownSlurmSuite(home, s));

  it('a job running in Slurm survives kill -9 of the broker and is followed to its end', async () => {
    s = await startSlurmBroker(home, clusterConfig(home));
    const script = 'import time, sys\nfor i in range(1, 13):\n    print("line", i, flush=True)\n    time.sleep(0.5)\nsys.exit(3)\n';
    const sub = await gpurun(['run', '--detach', '--workspace', ws, '--gpus', '1', '--memory', '100M', '--', 'python3', '-c', script], s.env);
    assert.equal(sub.code, 0, sub.stderr);
    const id = sub.stdout.trim();
    await waitFor('some output', async () => (await gpurun(['logs', id], s!.env)).stdout.includes('line 2\n'), 30_000);
    await s.broker.kill9();

    // The job goes on in Slurm without the broker.
    await new Promise((r) => setTimeout(r, 2500));
    s = await startSlurmBroker(home, clusterConfig(home));
    const logs = await gpurun(['logs', '-f', id], s.env, { timeoutMs: 60_000 });
    // `logs -f` exits with the job's own code, as `run` does.
    assert.equal(logs.code, 3, logs.stderr);
    assert.equal(logs.stdout, Array.from({ length: 12 }, (_, i) => `line ${i + 1}\n`).join(''));
    const job = (JSON.parse((await gpurun(['ls', '--json'], s.env)).stdout) as Job[]).find((j) => j.id === id)!;
    assert.equal(job.state, 'failed');
    assert.equal(job.exitCode, 3);
    assert.equal(job.reason, 'exited with code 3');
    assert.match(s.broker.log(), /following slurm job again after restart/);
  });
});
