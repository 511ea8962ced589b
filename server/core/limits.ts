/**
 * Limits of a shared broker, as data and pure checks: per-user limits on submits, the size of what a request may
 * carry, the output a job may write, the free-space floor of the data disk, and sliding-window counters (submit rate,
 * failed sign-ins) that take the time as an argument so they are tested without waiting.
 */
import { GpurunError } from '../protocol/errors.ts';
import { formatBytes } from '../protocol/text.ts';
export { formatBytes };

export interface Limits {
  /** Queued jobs one user may have at once; 0 = no limit. */
  maxQueuedJobs: number;
  /** GPUs one user's running jobs may hold at once (more of their jobs wait); 0 = no limit. */
  maxRunningGpus: number;
  /** Submits one user may make in a minute; 0 = no limit. */
  submitsPerMinute: number;
  /** Bytes of a job's env (names and values) at submit. */
  maxEnvBytes: number;
  /** Bytes of output one job may write; past it the job is stopped and its log keeps its head and tail. 0 = none. */
  maxLogBytes: number;
  /** Free space the data disk must keep: submits are refused below it. `percent` of the disk, or `bytes`, whichever is less. */
  minFreeDisk: { bytes: number; percent: number };
  /** Largest request body. */
  maxBodyBytes: number;
  /** Failed sign-ins one source address may make in a minute before it gets 429s. */
  authFailuresPerMinute: number;
}

export const GiB = 1024 ** 3;

export const DEFAULT_LIMITS: Limits = {
  maxQueuedJobs: 1000,
  maxRunningGpus: 0,
  submitsPerMinute: 120,
  maxEnvBytes: 64 * 1024,
  maxLogBytes: GiB,
  minFreeDisk: { bytes: GiB, percent: 5 },
  maxBodyBytes: 1024 * 1024,
  authFailuresPerMinute: 20,
};

const BYTE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** "64K", "1G", "512M", "1048576" or a number of bytes → bytes; an error message otherwise. */
export function parseBytes(v: string | number): number | string {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : `must be a whole number of bytes ≥ 0, got ${v}`;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$/.exec(v);
  if (!m) return `"${v}" is not a size; use a number with a unit, e.g. 64K, 1G`;
  const n = Math.floor(Number(m[1]) * BYTE_UNITS[m[2].toLowerCase()]);
  return Number.isSafeInteger(n) ? n : `"${v}" is too large`;
}

/** The free-space floor of a disk of `diskBytes`: the smaller of the two settings. */
export function diskFloor(l: Limits, diskBytes: number): number {
  return Math.min(l.minFreeDisk.bytes, Math.floor((diskBytes * l.minFreeDisk.percent) / 100));
}

/** What one user holds now, for the submit check. */
export interface UserLoad {
  queued: number;
}

/** Throws E_LIMIT (429) or E_TOO_LARGE (413) when a submit by `user` would pass a limit. */
export function checkSubmit(user: string, load: UserLoad, recentSubmits: number, l: Limits, req: { gpus: number; envBytes: number }): void {
  if (req.envBytes > l.maxEnvBytes) {
    throw new GpurunError('E_TOO_LARGE', `env: ${formatBytes(req.envBytes)} of variables is more than the limit of ${formatBytes(l.maxEnvBytes)}`, {
      hint: 'Pass large values in a file in the workspace instead of the environment (the broker\'s limits.maxEnvBytes).',
    });
  }
  if (l.maxRunningGpus && req.gpus > l.maxRunningGpus) {
    throw new GpurunError('E_LIMIT', `the job asks for ${req.gpus} GPUs; a user may hold at most ${l.maxRunningGpus} at once on this broker`, {
      hint: `Ask for ${l.maxRunningGpus} or fewer (the broker's limits.maxRunningGpus).`,
    });
  }
  if (l.maxQueuedJobs && load.queued >= l.maxQueuedJobs) {
    throw new GpurunError('E_LIMIT', `${user} already has ${load.queued} queued jobs, the most one user may have on this broker`, {
      hint: 'Wait for some to start, or cancel some (gpurun ls; gpurun cancel ID). The limit is the broker\'s limits.maxQueuedJobs.',
    });
  }
  if (l.submitsPerMinute && recentSubmits >= l.submitsPerMinute) {
    throw new GpurunError('E_LIMIT', `${user} submitted ${recentSubmits} jobs in the last minute, the most this broker takes`, {
      hint: 'Wait a minute and submit again, or submit fewer, larger jobs (the broker\'s limits.submitsPerMinute).',
    });
  }
}

/** The bytes of an env as submitted (names and values, UTF-8). */
export function envBytes(env: unknown): number {
  if (typeof env !== 'object' || env === null) return 0;
  let n = 0;
  for (const [k, v] of Object.entries(env)) n += Buffer.byteLength(k) + (typeof v === 'string' ? Buffer.byteLength(v) : 0) + 2;
  return n;
}

/**
 * Counts events per key over the last `windowMs` (submits per user, failed sign-ins per address). Times are passed
 * in (ms), so tests need no clock. Keys with nothing recent are forgotten, so memory stays bounded by the active keys.
 */
export class SlidingWindow {
  private readonly hits = new Map<string, number[]>();
  private readonly windowMs: number;
  private readonly maxKeys: number;

  constructor(windowMs = 60_000, maxKeys = 100_000) {
    this.windowMs = windowMs;
    this.maxKeys = maxKeys;
  }

  /** Events of `key` within the window ending at `now`. */
  count(key: string, now: number): number {
    const h = this.hits.get(key);
    if (!h) return 0;
    while (h.length && h[0] <= now - this.windowMs) h.shift();
    if (!h.length) this.hits.delete(key);
    return h.length;
  }

  /** Records one event; returns the count including it. */
  hit(key: string, now: number): number {
    const n = this.count(key, now);
    if (this.hits.size >= this.maxKeys && !this.hits.has(key)) this.prune(now);
    const h = this.hits.get(key) ?? [];
    // Only as many as can matter are kept: a flood from one key costs a bounded array.
    if (h.length < 10_000) h.push(now);
    this.hits.set(key, h);
    return n + 1;
  }

  /** Milliseconds until the oldest event of `key` leaves the window. */
  retryAfterMs(key: string, now: number): number {
    const h = this.hits.get(key);
    return h?.length ? Math.max(0, h[0] + this.windowMs - now) : 0;
  }

  private prune(now: number): void {
    for (const k of [...this.hits.keys()]) this.count(k, now);
    if (this.hits.size >= this.maxKeys) this.hits.delete(this.hits.keys().next().value!);
  }
}
