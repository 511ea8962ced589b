/**
 * The GPU part of a host's online load: the utilisation of the GPUs its online jobs hold (nvidia-smi's per-GPU
 * reading) and the GPU memory their processes use (nvidia-smi's compute-apps, one line per process, where the driver
 * reports it). Queries are fixed argv; the parsers and the sum are pure and tested on captured output.
 */
import type { Gpu } from '../protocol/jobs.ts';

/** argv of the per-process query (run without a shell): pid on the host, the GPU's uuid, memory in MiB. */
export const COMPUTE_APPS_QUERY = ['nvidia-smi', '--query-compute-apps=pid,gpu_uuid,used_memory', '--format=csv,noheader,nounits'];

/** One process on a GPU. `usedMiB` is null where the driver does not report it ("[N/A]", e.g. MIG or some vGPUs). */
export interface GpuProcess {
  pid: number;
  gpuUuid: string;
  usedMiB: number | null;
}

/**
 * Parses COMPUTE_APPS_QUERY's output ("12345, GPU-…, 20480"). Lines that are not such a line (the "No running
 * processes found" some versions print) are skipped.
 */
export function parseComputeApps(csv: string): GpuProcess[] {
  const out: GpuProcess[] = [];
  for (const raw of csv.split(/\r?\n/)) {
    const f = raw.split(',').map((s) => s.trim());
    if (f.length !== 3 || !/^\d+$/.test(f[0]) || !f[1]) continue;
    const mem = Number(f[2]);
    out.push({ pid: Number(f[0]), gpuUuid: f[1], usedMiB: f[2] !== '' && Number.isFinite(mem) ? mem : null });
  }
  return out;
}

/** argv listing the host pids of a container's processes (`docker top` runs ps on the host for it). */
export function dockerTopPidsArgs(container: string): string[] {
  return ['docker', 'top', container, '-eo', 'pid'];
}

/** Parses `docker top C -eo pid` (a "PID" header, then a pid a line). */
export function parseDockerTopPids(text: string): number[] {
  return text.split('\n').map((l) => l.trim()).filter((l) => /^\d+$/.test(l)).map(Number);
}

/** The online jobs' GPU use, as fractions: mean utilisation of the GPUs they hold, and memory of those GPUs used by them. */
export interface GpuLoad {
  gpu: number;
  gpuMemory: number;
}

/**
 * The GPU load of the online jobs of a host, from one reading: `gpus` (NVIDIA_SMI_QUERY), `held` (indices the online
 * jobs hold), `apps` (COMPUTE_APPS_QUERY; null when it could not be read) and `pids` (the host pids of the online
 * jobs' containers). Memory per GPU is the sum of the online jobs' processes on it; where the per-process reading is
 * missing (the query failed, or a process on that GPU reads "[N/A]") it is the GPU's memory in use, which on a GPU
 * given to one job is that job's. Null when the online jobs hold no GPU that the reading has.
 */
export function onlineGpuLoad(gpus: readonly Gpu[], held: readonly number[], apps: readonly GpuProcess[] | null, pids: ReadonlySet<number>): GpuLoad | null {
  const mine = gpus.filter((g) => held.includes(g.index));
  if (!mine.length) return null;
  let util = 0;
  let used = 0;
  let total = 0;
  for (const g of mine) {
    util += g.utilizationPct / 100;
    total += g.memoryTotalMiB;
    const on = apps?.filter((a) => a.gpuUuid === g.uuid);
    if (!on || on.some((a) => a.usedMiB === null)) used += g.memoryUsedMiB;
    else used += on.filter((a) => pids.has(a.pid)).reduce((n, a) => n + a.usedMiB!, 0);
  }
  return { gpu: util / mine.length, gpuMemory: total > 0 ? used / total : 0 };
}
