/**
 * The restart policy. Pure. After the outcome classifier (core/outcome.ts) has said how an attempt ended, this says
 * whether the job gets another attempt, when, and what it must stay away from; and how much of its time limit the
 * attempts so far have used (the limit counts running time over all attempts).
 */
import type { Attempt } from '../protocol/jobs.ts';
import type { Outcome } from './outcome.ts';

export interface BackoffConfig {
  /** Wait before the first restart. */
  firstMs: number;
  /** Each further restart waits twice as long as the one before, up to this. */
  maxMs: number;
}

/** The most restarts a job (or a queue's default) may ask for. */
export const MAX_RESTARTS = 100;

export const DEFAULT_BACKOFF: BackoffConfig = { firstMs: 5_000, maxMs: 300_000 };

export type RestartDecision = { restart: true; next: number; delayMs: number } | { restart: false; why: string | null };

/**
 * `attemptN`: the number of the attempt that just ended; `restarts`: how many restarts the job may have in all.
 * `why` (no restart): null when the fault is not one a restart helps (or there was none), else why not anyway.
 */
export function decideRestart(o: Outcome, attemptN: number, restarts: number, backoff: BackoffConfig): RestartDecision {
  if (!o.restartable) return { restart: false, why: null };
  if (restarts <= 0) return { restart: false, why: 'the job allows no restarts (--restarts N)' };
  if (attemptN > restarts) return { restart: false, why: `no restarts left (${restarts} used)` };
  return { restart: true, next: attemptN + 1, delayMs: backoffMs(attemptN, backoff) };
}

/** Wait before restart number `k` (1-based): firstMs, doubling, capped at maxMs. */
export function backoffMs(k: number, b: BackoffConfig): number {
  return Math.min(b.maxMs, b.firstMs * 2 ** Math.min(30, Math.max(0, k - 1)));
}

/** Running time used by the attempts, in ms, up to `nowMs` for one still running. */
export function usedMs(attempts: ReadonlyArray<Pick<Attempt, 'startedAt' | 'endedAt'>>, nowMs: number): number {
  let ms = 0;
  for (const a of attempts) {
    if (!a.startedAt) continue;
    const end = a.endedAt ? Date.parse(a.endedAt) : nowMs;
    ms += Math.max(0, end - Date.parse(a.startedAt));
  }
  return ms;
}

/**
 * Where the next attempt must not go, from the attempts so far: hosts that were lost, and GPUs that failed (by
 * host). Both are lifted when no other place could ever run the job (the scheduler checks).
 */
export function avoidOf(attempts: ReadonlyArray<Pick<Attempt, 'host' | 'fault' | 'gpuIndices' | 'evidence'>>): { hosts: string[]; gpus: Array<{ host: string; index: number }> } {
  const hosts = new Set<string>();
  const gpus: Array<{ host: string; index: number }> = [];
  for (const a of attempts) {
    if (!a.host) continue;
    if (a.fault === 'host_lost') hosts.add(a.host);
    if (a.fault === 'gpu_fault') {
      const bad = a.evidence.gpuFaults?.map((g) => g.gpu) ?? a.gpuIndices;
      for (const index of new Set(bad)) gpus.push({ host: a.host, index });
    }
  }
  return { hosts: [...hosts], gpus };
}
