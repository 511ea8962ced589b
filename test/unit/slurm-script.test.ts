/** The batch script builder (the quoting function itself: shellQuote.test.ts). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { gresArg, sbatchScript, slurmTime, type ScriptCluster, type ScriptJob } from '../../server/slurm/script.ts';

const CLUSTER: ScriptCluster = { partitions: { online: 'gpu-interactive', offline: 'gpu-batch' }, gres: 'gpu', account: 'ml-team' };
const JOB: ScriptJob = {
  id: 'abc23def',
  command: ['python3', 'train.py', '--name', "bob's run", '$(reboot)'],
  queue: 'offline',
  resources: { gpus: 2, gpuType: 'A100', cpus: 8, memoryMiB: 32768, timeLimitSec: 2 * 86400 + 3723 },
  env: { WANDB_MODE: 'offline', MSG: 'a "b" $c' },
};
const PATHS = { workdir: '/shared/gpurun/alice/proj-0123456789', output: '/shared/gpurun/alice/.gpurun-jobs/abc23def.out' };

describe('slurm: sbatchScript', () => {
  it('writes #SBATCH lines, the working folder, env and the quoted command', () => {
    assert.equal(
      sbatchScript(JOB, CLUSTER, PATHS),
      `#!/bin/bash
#SBATCH --job-name=gpurun-abc23def
#SBATCH --partition=gpu-batch
#SBATCH --account=ml-team
#SBATCH --gres=gpu:a100:2
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32768M
#SBATCH --time=2-01:02:03
#SBATCH --output=/shared/gpurun/alice/.gpurun-jobs/abc23def.out
#SBATCH --open-mode=append
#SBATCH --chdir=/shared/gpurun/alice/proj-0123456789
#SBATCH --no-requeue

# Written by gpurun; every word below is quoted.
cd /shared/gpurun/alice/proj-0123456789 || exit 125
export PYTHONUNBUFFERED=1
export WANDB_MODE=offline
export MSG='a "b" $c'
export GPURUN_JOB_ID=abc23def
exec python3 train.py --name 'bob'\\''s run' '$(reboot)'
`,
    );
  });

  it('no GPU: no --gres; no time limit: no --time; the online queue\'s partition', () => {
    const s = sbatchScript({ ...JOB, queue: 'online', resources: { gpus: 0, cpus: 1, memoryMiB: 100, timeLimitSec: 0 } }, { partitions: CLUSTER.partitions, gres: 'gpu' }, PATHS);
    assert.match(s, /#SBATCH --partition=gpu-interactive\n/);
    assert.doesNotMatch(s, /--gres|--time|--account/);
  });

  it('runs the command in the image through pyxis when the cluster has containers', () => {
    const s = sbatchScript({ ...JOB, image: 'nvcr.io/nvidia/pytorch:24.01-py3' }, { ...CLUSTER, container: 'pyxis' }, PATHS);
    assert.match(s, /\nexec srun --container-image=nvcr.io\/nvidia\/pytorch:24.01-py3 --container-mounts=\/shared\/gpurun\/alice\/proj-0123456789:\/shared\/gpurun\/alice\/proj-0123456789 --container-workdir=\/shared\/gpurun\/alice\/proj-0123456789 python3 train.py/);
    // Without container support the image is not used.
    assert.doesNotMatch(sbatchScript({ ...JOB, image: 'x:1' }, CLUSTER, PATHS), /srun|container/);
  });

  it("points the cache variables into the owner's cache folder (the job's own win), mounted in a pyxis container too", () => {
    const cache = '/shared/gpurun/alice/.gpurun-cache';
    const s = sbatchScript({ ...JOB, env: { ...JOB.env, HF_HOME: '/mine/hf' } }, CLUSTER, { ...PATHS, cache });
    assert.match(s, /\nexport PYTHONUNBUFFERED=1\nexport XDG_CACHE_HOME=\/shared\/gpurun\/alice\/\.gpurun-cache\nexport HF_HOME=\/mine\/hf\nexport PIP_CACHE_DIR=\/shared\/gpurun\/alice\/\.gpurun-cache\/pip\nexport TORCH_HOME=\/shared\/gpurun\/alice\/\.gpurun-cache\/torch\n/);
    const p = sbatchScript({ ...JOB, image: 'x:1' }, { ...CLUSTER, container: 'pyxis' }, { ...PATHS, cache });
    assert.match(p, /--container-mounts=\/shared\/gpurun\/alice\/proj-0123456789:\/shared\/gpurun\/alice\/proj-0123456789,\/shared\/gpurun\/alice\/\.gpurun-cache:\/shared\/gpurun\/alice\/\.gpurun-cache /);
    assert.doesNotMatch(sbatchScript(JOB, CLUSTER, PATHS), /XDG_CACHE_HOME/);
  });

  it('refuses values that an #SBATCH line cannot carry', () => {
    assert.throws(() => sbatchScript(JOB, { ...CLUSTER, partitions: { online: 'a b', offline: 'a b' } }, PATHS), /#SBATCH --partition/);
    assert.throws(() => sbatchScript(JOB, CLUSTER, { ...PATHS, output: '/x/my out' }), /#SBATCH --output/);
  });

  it('the script runs under bash with hostile env values and argv intact', () => {
    const hostile = { ...JOB, command: ['printf', '%s|', "it's", '$HOME', 'x\ny'], env: { V: "'$(id)'\n`x`" } };
    const script = sbatchScript(hostile, CLUSTER, { workdir: '/tmp', output: '/tmp/o' }).replace('exec printf', 'printf "%s|" "$V"; exec printf');
    const r = spawnSync('bash', ['-s'], { input: script, encoding: 'utf8' });
    assert.equal(r.stdout, `'$(id)'\n\`x\`|it's|$HOME|x\ny|`);
  });

  it('slurmTime and gresArg', () => {
    assert.equal(slurmTime(5), '0-00:00:05');
    assert.equal(slurmTime(90 * 60), '0-01:30:00');
    assert.equal(slurmTime(7 * 86400), '7-00:00:00');
    assert.equal(gresArg('gpu', { gpus: 1, cpus: 1, memoryMiB: 1, timeLimitSec: 0 }), 'gpu:1');
    assert.equal(gresArg('gpu', { gpus: 0, cpus: 1, memoryMiB: 1, timeLimitSec: 0 }), null);
  });
});
