import assert from 'node:assert/strict';
import { embeddedBaseEnv, jobEnv, reservedEnvName, teamBaseEnv, teamSlurmEnv } from '../../server/core/jobEnv.ts';
import { systemClock } from '../../server/core/clock.ts';

describe('job environment', () => {
  const broker = { PATH: '/opt/bin:/usr/bin', HOME: '/var/lib/gpurun', USER: 'gpurun', LANG: 'en_US.UTF-8', SSH_AUTH_SOCK: '/tmp/agent.1', AWS_SECRET_ACCESS_KEY: 'sekrit', NVIDIA_VISIBLE_DEVICES: 'all', GPURUN_TOKEN: 'gpr_x' };

  it("a team broker's jobs get a clean base: PATH, HOME, USER, LANG, TERM; no agent socket, no secrets", () => {
    assert.deepEqual(teamBaseEnv(broker), { PATH: '/opt/bin:/usr/bin', HOME: '/var/lib/gpurun', USER: 'gpurun', LANG: 'en_US.UTF-8', TERM: 'dumb' });
    assert.deepEqual(teamBaseEnv({}), { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', TERM: 'dumb' });
  });

  it("a team broker's Slurm commands get the clean base and Slurm's own settings, never the broker's secrets", () => {
    const e = teamSlurmEnv({ ...broker, SLURM_CONF: '/etc/slurm/other.conf', SBATCH_ACCOUNT: 'ml' });
    assert.deepEqual(e, { PATH: '/opt/bin:/usr/bin', HOME: '/var/lib/gpurun', USER: 'gpurun', LANG: 'en_US.UTF-8', TERM: 'dumb', SLURM_CONF: '/etc/slurm/other.conf', SBATCH_ACCOUNT: 'ml' });
  });

  it("the embedded broker passes its user's environment, less gpurun's and the GPU variables", () => {
    const e = embeddedBaseEnv(broker);
    assert.equal(e.PATH, '/opt/bin:/usr/bin');
    assert.equal(e.SSH_AUTH_SOCK, '/tmp/agent.1');
    assert.equal(e.NVIDIA_VISIBLE_DEVICES, undefined);
    assert.equal(e.GPURUN_TOKEN, undefined);
  });

  it("GPU visibility and job id are always the broker's, over the job's own env", () => {
    const e = jobEnv({ base: teamBaseEnv(broker), job: { SEED: '1', CUDA_VISIBLE_DEVICES: '0,1,2,3', NVIDIA_VISIBLE_DEVICES: 'all', GPURUN_GPUS: '0-7', PATH: '/mine' }, jobId: 'j1', gpuIndices: [2] });
    assert.equal(e.SEED, '1');
    assert.equal(e.PATH, '/mine', 'a job may set its own PATH');
    assert.equal(e.CUDA_VISIBLE_DEVICES, '2');
    assert.equal(e.GPURUN_GPUS, '2');
    assert.equal(e.NVIDIA_VISIBLE_DEVICES, undefined);
    assert.equal(e.CUDA_DEVICE_ORDER, 'PCI_BUS_ID');
    assert.equal(e.GPURUN_JOB_ID, 'j1');
    assert.equal(jobEnv({ base: {}, job: { GPURUN_ATTEMPT: '9' }, jobId: 'j1', gpuIndices: [], broker: { GPURUN_ATTEMPT: '2' } }).GPURUN_ATTEMPT, '2', "the broker's own GPURUN_ variables");
    assert.equal(e.PYTHONUNBUFFERED, '1');
    assert.equal(e.SSH_AUTH_SOCK, undefined);
  });

  it('names the variables a job may not set', () => {
    for (const n of ['CUDA_VISIBLE_DEVICES', 'NVIDIA_VISIBLE_DEVICES', 'CUDA_DEVICE_ORDER', 'GPURUN_GPUS', 'GPURUN_JOB_ID', 'GPURUN_ANYTHING']) assert.equal(reservedEnvName(n), true, n);
    for (const n of ['PATH', 'SEED', 'CUDA_HOME', 'gpurun_x']) assert.equal(reservedEnvName(n), false, n);
  });
});

describe('long timers (the broker\'s clock)', () => {
  it('a 25-day timeout does not fire at once (a plain setTimeout would, after a warning)', async () => {
    let fired = false;
    const t = systemClock.after(25 * 86_400_000, () => (fired = true));
    await new Promise((r) => setTimeout(r, 50));
    t.cancel();
    assert.equal(fired, false);
  });
});
