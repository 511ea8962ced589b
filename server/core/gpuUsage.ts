/**
 * What each GPU did over the last probes: utilisation samples per host and GPU index, kept in memory by the broker
 * (one per probe, the last HISTORY_SAMPLES), and since when a GPU has read 0 % without a break. Pure: time is passed in.
 */
import type { Gpu } from '../protocol/jobs.ts';
import { parseDuration } from './units.ts';

/** Samples kept per GPU: at the broker's 30 s probe, 20 minutes. */
export const HISTORY_SAMPLES = 40;

interface Series {
  pct: number[];
  /** When the current unbroken run of 0 % readings began (ms); undefined while the GPU is busy. */
  zeroSince?: number;
}

/** One GPU's samples as kept across broker restarts (store/gpuUsageStore.ts). */
export interface UsageRow {
  host: string;
  gpu: number;
  pct: number[];
  zeroSince?: number;
  /** When the last sample was taken (ms). */
  at: number;
}

/** A kept series older than this at a broker's start is dropped: the GPU may have done anything meanwhile. */
export const RESTORE_MAX_AGE_MS = 10 * 60_000;

export class GpuUsageHistory {
  private readonly series = new Map<string, Series>();
  /** Told each probe's updated series (to keep them across a restart). */
  onRecord: ((rows: UsageRow[]) => void) | undefined;

  /** One probe's readings of a host's GPUs, at `at` (ms). */
  record(host: string, gpus: readonly Gpu[], at: number): void {
    const rows: UsageRow[] = [];
    for (const g of gpus) {
      const key = `${host}\0${g.index}`;
      const s = this.series.get(key) ?? { pct: [] };
      s.pct.push(g.utilizationPct);
      if (s.pct.length > HISTORY_SAMPLES) s.pct.splice(0, s.pct.length - HISTORY_SAMPLES);
      if (g.utilizationPct > 0) delete s.zeroSince;
      else s.zeroSince ??= at;
      this.series.set(key, s);
      rows.push({ host, gpu: g.index, pct: [...s.pct], ...(s.zeroSince === undefined ? {} : { zeroSince: s.zeroSince }), at });
    }
    if (rows.length) this.onRecord?.(rows);
  }

  /** Series kept by an earlier broker process; those last sampled more than RESTORE_MAX_AGE_MS before `now` are left out. */
  restore(rows: readonly UsageRow[], now: number): void {
    for (const r of rows) {
      if (now - r.at > RESTORE_MAX_AGE_MS) continue;
      this.series.set(`${r.host}\0${r.gpu}`, { pct: r.pct.slice(-HISTORY_SAMPLES), ...(r.zeroSince === undefined ? {} : { zeroSince: r.zeroSince }) });
    }
  }

  /** The GPU's samples (oldest first) and, when it reads 0 % now, since when (ISO). */
  view(host: string, index: number): { history: number[]; idleSince: string | null } {
    const s = this.series.get(`${host}\0${index}`);
    return { history: s ? [...s.pct] : [], idleSince: s?.zeroSince !== undefined ? new Date(s.zeroSince).toISOString() : null };
  }
}

/** A job's GPUs count as sitting idle after this long at 0 % (a data-loader bottleneck, or a hung job). */
export const IDLE_AFTER_MS = 10 * 60_000;

/**
 * The idle window a person set (GPURUN_IDLE_AFTER, the gpurun.idleGpuWarning setting): a duration as --time takes it
 * ("10m", "90s", a bare number = minutes), or "off"/"0" for never (Infinity); unset: IDLE_AFTER_MS. An error message
 * (string) for anything else.
 */
export function idleWindowMs(text: string | undefined): number | string {
  if (text === undefined || text.trim() === '') return IDLE_AFTER_MS;
  if (/^\s*(off|never|0+)\s*$/i.test(text)) return Infinity;
  const sec = parseDuration(text);
  return typeof sec === 'string' ? `idle window: ${sec}; or "off"` : sec * 1000;
}

/**
 * How long a job's GPU has sat idle while the job held it (ms), or 0: the GPU's run of 0 % readings, counted from
 * no earlier than the job's start.
 */
export function idleForMs(idleSince: string | null | undefined, jobStartedAt: string | null | undefined, now: number): number {
  if (!idleSince) return 0;
  const from = Math.max(Date.parse(idleSince), jobStartedAt ? Date.parse(jobStartedAt) : 0);
  return Math.max(0, now - from);
}

const BARS = '▁▂▃▄▅▆▇█';

/** "▁▃▇█": utilisation samples (0–100) as a bar each; the last `width` of them. */
export function sparkline(pct: readonly number[], width = 12): string {
  return pct
    .slice(-width)
    .map((p) => BARS[Math.min(BARS.length - 1, Math.max(0, Math.round((p / 100) * (BARS.length - 1))))])
    .join('');
}
