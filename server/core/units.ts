/** Parsing and printing of memory sizes (MiB) and durations (seconds; text follows Slurm's forms). Pure. */

const MEM_UNITS: Record<string, number> = { '': 1, k: 1 / 1024, m: 1, g: 1024, t: 1024 * 1024 };

/**
 * "16G", "512M", "1.5g", "2048" (MiB), "16GiB", "16GB" → MiB (rounded up).
 * Returns an error message instead of a number when the text is not a size.
 */
export function parseMemory(text: string | number): number | string {
  if (typeof text === 'number') return Number.isFinite(text) && text > 0 ? Math.ceil(text) : `memory must be a positive number of MiB, got ${text}`;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$/.exec(text);
  if (!m) return `"${text}" is not a memory size; use a number with a unit, e.g. 512M, 16G`;
  const mib = Number(m[1]) * MEM_UNITS[m[2].toLowerCase()];
  if (!(mib > 0)) return `memory must be more than 0, got "${text}"`;
  return Math.ceil(mib);
}

const TIME_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** The longest duration accepted (366 days): longer ones are refused rather than stored as a wrong number. */
export const MAX_DURATION_SEC = 366 * 86400;

function capped(sec: number, text: string | number): number | string {
  return Number.isFinite(sec) && sec <= MAX_DURATION_SEC ? sec : `"${String(text).slice(0, 40)}${String(text).length > 40 ? '…' : ''}" is longer than the longest time allowed (${MAX_DURATION_SEC / 86400}d)`;
}

/**
 * A duration as text → seconds. The forms are Slurm's (`sbatch --time`), plus unit suffixes:
 * - "30" — a bare number is MINUTES, as in Slurm ("0": no limit);
 * - "45:00" minutes:seconds, "1:30:00" hours:minutes:seconds;
 * - "2-12" days-hours, "2-12:30" days-hours:minutes, "2-12:30:00" days-hours:minutes:seconds;
 * - "90s", "30m", "2h", "1d", "1h30m" with units.
 * A number (not text) is seconds: the HTTP API's `time` field takes seconds as a JSON number.
 * Returns an error message instead of a number when the text is not a duration.
 */
export function parseDuration(text: string | number): number | string {
  if (typeof text === 'number') return Number.isInteger(text) && text >= 0 ? capped(text, text) : `time must be a whole number of seconds ≥ 0, got ${text}`;
  const t = text.trim().toLowerCase();
  if (/^\d+$/.test(t)) return capped(Number(t) * 60, text);
  const clock = /^(?:(\d+):)?(\d{1,2}):(\d{2})$/.exec(t);
  if (clock) {
    const [h, m, s] = [Number(clock[1] ?? 0), Number(clock[2]), Number(clock[3])];
    if (m < 60 && s < 60) return capped(clock[1] === undefined ? m * 60 + s : h * 3600 + m * 60 + s, text);
  }
  const days = /^(\d+)-(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?$/.exec(t);
  if (days) {
    const [d, h, m, s] = [Number(days[1]), Number(days[2]), Number(days[3] ?? 0), Number(days[4] ?? 0)];
    if (h < 24 && m < 60 && s < 60) return capped(d * 86400 + h * 3600 + m * 60 + s, text);
  }
  if (/^(\d+(\.\d+)?[smhd])+$/.test(t)) {
    let total = 0;
    for (const part of t.matchAll(/(\d+(?:\.\d+)?)([smhd])/g)) total += Number(part[1]) * TIME_UNITS[part[2]];
    return capped(Math.round(total), text);
  }
  return `"${text}" is not a duration; use e.g. 90s, 30m, 2h, 1h30m, 1:30:00, 2-12:00 (days-hours:minutes) or a bare number of minutes`;
}

export function formatMemory(mib: number): string {
  if (mib >= 1024 && mib % 1024 === 0) return `${mib / 1024}G`;
  if (mib >= 1024) return `${(mib / 1024).toFixed(1)}G`;
  return `${mib}M`;
}

export function formatDuration(sec: number): string {
  if (sec <= 0) return '0s';
  const d = Math.floor(sec / 86400), h = Math.floor((sec % 86400) / 3600), m = Math.floor((sec % 3600) / 60), s = Math.floor(sec % 60);
  const parts: string[] = [];
  if (d) parts.push(`${d}d`);
  if (h) parts.push(`${h}h`);
  if (m) parts.push(`${m}m`);
  if (s || parts.length === 0) parts.push(`${s}s`);
  return parts.slice(0, 2).join('');
}
