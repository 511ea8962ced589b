/**
 * Whether a host can be reached, as a pure function of probe observations and the grace (`hostLostAfter`):
 * - up: the last probe answered;
 * - unreachable: probes fail (the pooled SSH connection and a fresh one), for less than the grace;
 * - lost: they have failed for the whole grace: the host's jobs are given up.
 * A probe that answers again makes the host up at once. Times are ms since the epoch (an injected clock).
 */
export type Reach = 'up' | 'unreachable' | 'lost';

export interface HostReach {
  reach: Reach;
  /** When probes began to fail (ms); null while up. */
  failingSince: number | null;
  /** Why the last probe failed; null while up. */
  lastError: string | null;
  /** The boot id the host last reported (`/proc/sys/kernel/random/boot_id`); null until one answer. */
  bootId: string | null;
}

export type ReachObservation = { at: number; ok: true; bootId: string | null } | { at: number; ok: false; error: string };

export function initialReach(): HostReach {
  return { reach: 'up', failingSince: null, lastError: null, bootId: null };
}

export function observeReach(prev: HostReach, obs: ReachObservation, graceMs: number): HostReach {
  if (obs.ok) return { reach: 'up', failingSince: null, lastError: null, bootId: obs.bootId ?? prev.bootId };
  const since = prev.failingSince ?? obs.at;
  return { reach: obs.at - since >= graceMs ? 'lost' : 'unreachable', failingSince: since, lastError: obs.error, bootId: prev.bootId };
}

/** Whole seconds the host has been failing probes at `now` (0 while up). */
export function unreachableSec(r: HostReach, now: number): number {
  return r.failingSince === null ? 0 : Math.max(0, Math.round((now - r.failingSince) / 1000));
}

/** Whether a job started under `startBootId` cannot have survived: the host reports another boot id. */
export function rebooted(startBootId: string | null | undefined, current: string | null): boolean {
  return !!startBootId && !!current && startBootId !== current;
}
