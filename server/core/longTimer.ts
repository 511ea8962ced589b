/**
 * A timeout that may be longer than Node's timers allow. `setTimeout` takes at most 2^31-1 ms (about 24.8 days);
 * a longer delay is taken as 1 ms and fires at once. This one waits in chunks of at most MAX_TIMER_MS.
 */

/** The longest delay one Node timer can wait. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimer {
  clear(): void;
}

/** The delays of the chunks that make up a wait of `ms` (all but the last are MAX_TIMER_MS). */
export function timerChunks(ms: number, max = MAX_TIMER_MS): number[] {
  const out: number[] = [];
  let left = Math.max(0, ms);
  while (left > max) {
    out.push(max);
    left -= max;
  }
  out.push(left);
  return out;
}

/** Calls `fn` after `ms` (any length), unref'd like the broker's other timers. */
export function longTimeout(fn: () => void, ms: number): LongTimer {
  const due = Date.now() + Math.max(0, ms);
  let t: NodeJS.Timeout;
  const arm = () => {
    const left = due - Date.now();
    if (left > MAX_TIMER_MS) t = setTimeout(arm, MAX_TIMER_MS);
    else t = setTimeout(fn, Math.max(0, left));
    t.unref();
  };
  arm();
  return { clear: () => clearTimeout(t) };
}
