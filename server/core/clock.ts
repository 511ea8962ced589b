/**
 * Time, injected: the broker reads the clock and arms its timers only through a Clock, so time limits, backoff and
 * graces are tested in milliseconds with a clock a test moves by hand.
 */

export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls `fn` once after `ms` (any length: longer than a Node timer can hold is fine). Timers never keep a process alive. */
  after(ms: number, fn: () => void): TimerHandle;
}

/** The longest delay one Node timer can hold (2^31 - 1 ms, about 24.8 days); a longer one would fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The real clock. Delays beyond MAX_TIMER_MS are waited out in chunks. */
export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, fn) {
    let t: ReturnType<typeof setTimeout> | undefined;
    const due = Date.now() + Math.max(0, ms);
    const arm = () => {
      const left = due - Date.now();
      t = setTimeout(left > MAX_TIMER_MS ? arm : fn, Math.min(Math.max(0, left), MAX_TIMER_MS));
      t.unref?.();
    };
    arm();
    return { cancel: () => clearTimeout(t) };
  },
};

export function isoAt(clock: Clock): string {
  return new Date(clock.now()).toISOString();
}
