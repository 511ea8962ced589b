/**
 * The local machine as a host: GPUs from nvidia-smi when it is on PATH (none otherwise), CPUs and memory from the OS.
 */
import { execFile } from 'node:child_process';
import { availableParallelism, totalmem } from 'node:os';
import type { Gpu } from '../protocol/jobs.ts';
import { NVIDIA_SMI_QUERY, parseNvidiaSmi } from './nvidiaSmi.ts';

export interface LocalProbe {
  gpus: Gpu[];
  cpus: number;
  memoryMiB: number;
  /** Why GPUs could not be read, when nvidia-smi exists but failed. Null when fine or simply absent. */
  error: string | null;
}

export function probeLocal(env: NodeJS.ProcessEnv = process.env): Promise<LocalProbe> {
  const base = { cpus: availableParallelism(), memoryMiB: Math.floor(totalmem() / 2 ** 20) };
  return new Promise((resolve) => {
    execFile(NVIDIA_SMI_QUERY[0], NVIDIA_SMI_QUERY.slice(1), { env, timeout: 15_000 }, (err, stdout, stderr) => {
      if (err) {
        const notFound = (err as NodeJS.ErrnoException).code === 'ENOENT';
        resolve({ ...base, gpus: [], error: notFound ? null : `nvidia-smi failed (exit ${err.code}): ${String(stderr).trim() || err.message}` });
        return;
      }
      try {
        resolve({ ...base, gpus: parseNvidiaSmi(stdout), error: null });
      } catch (e) {
        resolve({ ...base, gpus: [], error: (e as Error).message });
      }
    });
  });
}
