/**
 * The environment a job starts with. Pure.
 *
 * - A team broker gives every job a clean base (TEAM_BASE_ENV_NAMES, taken from the broker's environment, with
 *   defaults), never the broker's whole environment: no SSH_AUTH_SOCK, no secrets the broker was started with.
 * - The embedded single-user broker passes its user's environment (so an activated virtualenv's python3 is used),
 *   without gpurun's own and the GPU visibility variables.
 * - On top: PYTHONUNBUFFERED=1, then the job's own env, then the variables gpurun sets (GPU visibility, job id),
 *   which always win. A job env that names one of those is refused at submit (reservedEnvName).
 */

/** Variables gpurun sets for every job; a job may not set them itself. */
export const GPU_ENV_NAMES = ['CUDA_VISIBLE_DEVICES', 'NVIDIA_VISIBLE_DEVICES', 'CUDA_DEVICE_ORDER'] as const;

/** Whether a job env may not name `name`: the GPU visibility variables and every GPURUN_* variable are the broker's. */
export function reservedEnvName(name: string): boolean {
  return (GPU_ENV_NAMES as readonly string[]).includes(name) || name.startsWith('GPURUN_');
}

/** Of the broker's environment, only these reach a job on a team broker (README: "Job identity and environment"). */
export const TEAM_BASE_ENV_NAMES = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'TZ'] as const;

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The base environment of a team broker's local jobs. */
export function teamBaseEnv(brokerEnv: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = { PATH: DEFAULT_PATH, LANG: 'C.UTF-8', TERM: 'dumb' };
  for (const k of TEAM_BASE_ENV_NAMES) {
    const v = brokerEnv[k];
    if (v !== undefined && v !== '') out[k] = v;
  }
  return out;
}

/**
 * The environment of a team broker's Slurm commands on a `local` login node. sbatch hands its own environment to the
 * batch job (--export=ALL), so it gets the team base and Slurm's own settings (SLURM_CONF, SBATCH_*), never the
 * broker's secrets.
 */
export function teamSlurmEnv(brokerEnv: Record<string, string | undefined>): Record<string, string> {
  const out = teamBaseEnv(brokerEnv);
  for (const [k, v] of Object.entries(brokerEnv)) if (v !== undefined && /^(SLURM|SBATCH|SQUEUE|SACCT|SCANCEL)_/.test(k)) out[k] = v;
  return out;
}

/** The base environment of the embedded broker's jobs: the user's own, less gpurun's and the GPU variables. */
export function embeddedBaseEnv(userEnv: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(userEnv)) if (v !== undefined && !reservedEnvName(k)) out[k] = v;
  return out;
}

/** The job env without reserved names (jobs stored before the submit check). */
export function withoutReserved(env: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !reservedEnvName(k)));
}

/** The env without the GPU visibility variables (a runtime sets its own: runtimes/docker.ts gpuSettings). */
export function withoutGpuVars(env: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !(GPU_ENV_NAMES as readonly string[]).includes(k) && k !== 'GPURUN_GPUS'));
}

export interface JobEnvInput {
  base: Record<string, string>;
  job: Record<string, string>;
  jobId: string;
  gpuIndices: number[];
  /** More variables the broker sets (the attempt's GPURUN_ATTEMPT, …): after the job's own. */
  broker?: Record<string, string>;
}

/** The full environment of a job on a local host (SSH hosts take only the job's part: runtimes/mounted.ts). */
export function jobEnv(i: JobEnvInput): Record<string, string> {
  const gpus = i.gpuIndices.join(',');
  return {
    ...i.base,
    PYTHONUNBUFFERED: '1',
    ...withoutReserved(i.job),
    ...i.broker,
    // Exactly the assigned GPUs, numbered as nvidia-smi numbers them.
    CUDA_DEVICE_ORDER: 'PCI_BUS_ID',
    CUDA_VISIBLE_DEVICES: gpus,
    GPURUN_GPUS: gpus,
    GPURUN_JOB_ID: i.jobId,
  };
}
