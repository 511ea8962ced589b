/**
 * GPU probing through nvidia-smi. The query is fixed; the parser is pure and tested on captured output.
 */
import type { Gpu } from '../protocol/jobs.ts';

/** argv of the probe (run without a shell). */
export const NVIDIA_SMI_QUERY = [
  'nvidia-smi',
  '--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu',
  '--format=csv,noheader,nounits',
];

/**
 * Parses `index, uuid, name, memory.total, memory.used, utilization.gpu` lines (noheader, nounits).
 * Fields nvidia-smi cannot read come as "[N/A]" or "[Not Supported]" and are given as 0.
 * Throws with the offending line when a line does not have the six fields.
 */
export function parseNvidiaSmi(csv: string): Gpu[] {
  const gpus: Gpu[] = [];
  for (const raw of csv.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line) continue;
    const f = line.split(',').map((s) => s.trim());
    if (f.length !== 6 || !/^\d+$/.test(f[0])) throw new Error(`unexpected nvidia-smi line: "${line}"`);
    gpus.push({ index: Number(f[0]), uuid: f[1], name: f[2], memoryTotalMiB: num(f[3]), memoryUsedMiB: num(f[4]), utilizationPct: num(f[5]) });
  }
  return gpus;
}

function num(s: string): number {
  const n = Number(s);
  return Number.isFinite(n) ? n : 0;
}
