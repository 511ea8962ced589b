/**
 * The Backend port: a place jobs run (the broker's host pool, a Slurm cluster). The broker keeps the API, the store,
 * time limits, restart decisions and events; a backend admits a request, places and starts an attempt, reports how
 * it ends (evidence, never a decision), stops it, and finds it again after a broker restart. One implementation per
 * place (server/pool/, server/slurm/), chosen once per job by its `backend` name.
 */
import type { ClusterJobInfo } from '../protocol/jobs.ts';
import type { ExitInfo, Lost, MovedStart } from './runtime.ts';
import type { SlurmEnd } from './outcome.ts';
import type { Allocation } from './scheduler.ts';
import type { StoredAttempt, StoredJob } from './store.ts';
import type { ValidSubmit } from './submit.ts';

/** Where an attempt must not go: lost hosts, failed GPUs (core/restartPolicy.ts avoidOf). */
export interface Avoid {
  hosts: string[];
  gpus: Array<{ host: string; index: number }>;
}

export interface PlaceRequest {
  job: StoredJob;
  avoid: Avoid;
}

/** Where the next attempt of a job goes. `host` null: the backend places it itself (a cluster's own queue). */
export interface AttemptPlacement {
  jobId: string;
  host: string | null;
  gpuIndices: number[];
}

export interface AttemptSpec {
  /** The job, with the attempt's variables (GPURUN_ATTEMPT, …) already in `env`. */
  job: StoredJob;
  n: number;
  host: string | null;
  gpuIndices: number[];
  /** Byte of the job's log where this attempt's output begins; a follower writes from there. */
  logOffset: number;
  /** The whole environment for runtimes that start from the broker's own (the local host). */
  env: Record<string, string>;
  /** The attempt continues a moved job (migration/): passed on to the runtime's start. */
  moved?: MovedStart;
}

/** What a backend tells the broker about an attempt before it ends. */
export interface AttemptEvents {
  /** The attempt is still the job's current one: false once the broker has moved on (cancelled, restarted). */
  isCurrent(): boolean;
  /** Waiting in the backend's own queue, for this reason (in words). */
  pending(reason: string): void;
  /** It runs now, on `host` if known; `reason` in words ("running on cluster c, node n (Slurm job 42)"). */
  running(where: { host: string | null; reason: string }): void;
}

/** How an attempt ended, as the backend saw it: the runtime's report, with Slurm's final record for cluster jobs. */
export type AttemptEnd = (ExitInfo | Lost) & {
  slurm?: SlurmEnd;
  /** The attempt's handle with what the backend learnt at the end (e.g. files brought back); replaces the stored one. */
  runtimeRef?: Record<string, unknown>;
};

/** Defaults a submit to this backend starts from. */
export interface BackendDefaults {
  gpus: number;
  image?: string;
}

export interface Backend {
  readonly name: string;
  /** GPUs for a job that names none (`defaults.gpus: "auto"`), and the image, for backends that run images. */
  defaults(configured: { gpus: number | 'auto'; image?: string }): BackendDefaults;
  /** Refuses (GpurunError) a validated request this backend cannot run; nothing has been stored yet. */
  admit(v: ValidSubmit): void;
  /** Placements for the queued jobs that want an attempt now (in submission order), given what attempts hold. */
  place(queued: PlaceRequest[], holding: Allocation[]): AttemptPlacement[];
  /** Starts the attempt; resolves with its runtime handle (stored), rejects when it cannot start. */
  start(a: AttemptSpec, ev: AttemptEvents): Promise<Record<string, unknown>>;
  /** Resolves once the attempt ends. Rejects only when `signal` aborts. */
  wait(job: StoredJob, attempt: StoredAttempt, signal: AbortSignal, ev: AttemptEvents): Promise<AttemptEnd>;
  /** Asks the attempt to stop: TERM, then KILL after `graceMs` (scancel on a cluster). */
  stop(job: StoredJob, attempt: StoredAttempt, graceMs: number): Promise<void>;
  /**
   * After a broker restart, for an attempt that was in progress: its handle to wait on (the stored one, or one found
   * for an attempt the broker was starting), or null when nothing was started (the broker places it again).
   * `earlier`: the job's attempts before it (a moved job's source may still hold its remains).
   */
  recover(job: StoredJob, attempt: StoredAttempt, ev: AttemptEvents, earlier?: StoredAttempt[]): Promise<Record<string, unknown> | null>;
  /**
   * An attempt the broker has given up on (its host was lost and the job restarted elsewhere): stop it and remove
   * its remains once it can be reached, writing none of its output into the job's log. Resolves when done.
   */
  discard(job: StoredJob, attempt: StoredAttempt, signal: AbortSignal): Promise<void>;
  /** Whether `host` (an attempt's) still belongs to this backend; a job on a host gone from the config fails. */
  knows(host: string): boolean;
  /** The backend's part of a job's API view: a better wait reason, its own queue position, cluster details. */
  describe(job: StoredJob, holding: Allocation[]): { reason?: string; queuePosition?: number; cluster?: ClusterJobInfo };
  /** Starts background work (polls); called once the broker can take events. */
  open?(): void;
  close(): void;
}
