/**
 * The batch script a job is submitted with (`sbatch --parsable` reads it on stdin). Pure: the same job and cluster
 * give the same text. Every word that comes from a user (command, env values, paths) goes through quoteShell; #SBATCH
 * lines carry only values gpurun made or validated (numbers, the partition and account from the broker's config, the
 * gres name, paths under the configured staging folder).
 */
import type { Resources, Queue } from '../protocol/jobs.ts';
import { quoteShell, shellCommand } from '../core/shellQuote.ts';
import { cacheEnv } from '../core/userCache.ts';

/** What of a cluster's config the script needs. */
export interface ScriptCluster {
  partitions: Record<Queue, string>;
  /** gres name of GPUs, usually "gpu". */
  gres: string;
  account?: string;
  /** "pyxis": run the command in `image` through srun --container-image. */
  container?: 'pyxis';
}

export interface ScriptJob {
  id: string;
  command: string[];
  queue: Queue;
  resources: Resources;
  env: Record<string, string>;
  image?: string;
}

export interface ScriptPaths {
  /** The staged workspace on the cluster's shared storage; the job runs in it. */
  workdir: string;
  /** The file Slurm writes the job's stdout and stderr to. */
  output: string;
  /** The owner's persistent cache on the shared storage (XDG_CACHE_HOME and the others point into it); absent: none. */
  cache?: string;
}

/** Seconds → Slurm's "days-hours:minutes:seconds". */
export function slurmTime(sec: number): string {
  const d = Math.floor(sec / 86400);
  const h = Math.floor((sec % 86400) / 3600);
  const m = Math.floor((sec % 3600) / 60);
  const s = sec % 60;
  const two = (n: number) => String(n).padStart(2, '0');
  return `${d}-${two(h)}:${two(m)}:${two(s)}`;
}

/** `--gres` value: gpu:2, gpu:a100:2; null for no GPU. */
export function gresArg(gres: string, r: Resources): string | null {
  if (r.gpus <= 0) return null;
  return r.gpuType ? `${gres}:${r.gpuType.toLowerCase()}:${r.gpus}` : `${gres}:${r.gpus}`;
}

/** Slurm's job name of a gpurun job: how a restarted broker finds a job it submitted but had not recorded yet. */
export function slurmJobName(jobId: string): string {
  return `gpurun-${jobId}`;
}

/** #SBATCH values may not hold whitespace or quotes: sbatch splits those lines itself, with no shell. */
const SBATCH_SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

function sbatchLine(opt: string, value: string | number): string {
  const v = String(value);
  if (!SBATCH_SAFE.test(v)) throw new Error(`#SBATCH ${opt}: "${v}" holds characters sbatch cannot take on a directive line`);
  return `#SBATCH ${opt}=${v}`;
}

export function sbatchScript(job: ScriptJob, cluster: ScriptCluster, paths: ScriptPaths): string {
  const r = job.resources;
  const lines = ['#!/bin/bash', sbatchLine('--job-name', slurmJobName(job.id)), sbatchLine('--partition', cluster.partitions[job.queue])];
  if (cluster.account) lines.push(sbatchLine('--account', cluster.account));
  const gres = gresArg(cluster.gres, r);
  if (gres) lines.push(sbatchLine('--gres', gres));
  lines.push(sbatchLine('--nodes', 1), sbatchLine('--ntasks', 1), sbatchLine('--cpus-per-task', r.cpus), sbatchLine('--mem', `${r.memoryMiB}M`));
  if (r.timeLimitSec > 0) lines.push(sbatchLine('--time', slurmTime(r.timeLimitSec)));
  lines.push(sbatchLine('--output', paths.output), sbatchLine('--open-mode', 'append'), sbatchLine('--chdir', paths.workdir));
  // Slurm does not requeue on its own: a node failure ends the job (NODE_FAIL), and the broker's restart policy
  // decides whether it runs again, as a new attempt with its own output file.
  lines.push('#SBATCH --no-requeue');
  lines.push('', '# Written by gpurun; every word below is quoted.', `cd ${quoteShell(paths.workdir)} || exit 125`);
  // The cache's variables first: a variable the job sets itself wins.
  const env: Record<string, string> = { PYTHONUNBUFFERED: '1', ...(paths.cache ? cacheEnv(paths.cache) : {}), ...job.env, GPURUN_JOB_ID: job.id };
  for (const [k, v] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`"${k}" is not an environment variable name`);
    lines.push(`export ${k}=${quoteShell(v)}`);
  }
  if (cluster.container === 'pyxis' && job.image) {
    const mounts = [paths.workdir, ...(paths.cache ? [paths.cache] : [])].map((d) => `${d}:${d}`).join(',');
    lines.push(`exec srun --container-image=${quoteShell(job.image)} --container-mounts=${quoteShell(mounts)} --container-workdir=${quoteShell(paths.workdir)} ${shellCommand(job.command)}`);
  } else {
    lines.push(`exec ${shellCommand(job.command)}`);
  }
  return `${lines.join('\n')}\n`;
}
