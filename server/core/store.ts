/**
 * The Store contract. Implemented by store/sqlite.ts (the broker's) and store/memory.ts (tests); the same contract
 * test runs over both. All methods are synchronous: node:sqlite is, and the broker's single thread serialises them.
 */
import type { Attempt, Job, JobState, Transition } from '../protocol/jobs.ts';

/** Why the broker asked a job to stop; decides the final state when the job's process ends. */
/** Why the broker stopped a job: a cancel, its time limit, a limit of a shared broker, or to place it again (requeue). */
export type StopIntent = 'cancel' | 'timeout' | 'limit' | 'requeue';

/** A job as stored: the API's Job plus what only the broker needs. */
export interface StoredJob extends Omit<Job, 'queuePosition' | 'transitions' | 'cluster' | 'attempt' | 'attempts'> {
  /** Insertion order; FIFO within a queue follows it. */
  seq: number;
  /** Runtime-specific handle (pids, container id) that lets a restarted broker find the job again. */
  runtimeRef: Record<string, unknown> | null;
  stopIntent: StopIntent | null;
}

export interface JobPatch {
  state?: JobState;
  reason?: string;
  exitCode?: number | null;
  host?: string | null;
  gpuIndices?: number[];
  startedAt?: string | null;
  endedAt?: string | null;
  runtimeRef?: Record<string, unknown> | null;
  stopIntent?: StopIntent | null;
}

/** An attempt as stored: the API's Attempt plus the runtime handle a restarted broker needs to find it again. */
export interface StoredAttempt extends Attempt {
  runtimeRef: Record<string, unknown> | null;
}

export interface JobQuery {
  /** Only this owner's jobs; all owners when absent. */
  owner?: string;
  states?: JobState[];
  /** Newest first, at most this many. */
  limit?: number;
  /** Only jobs inserted before the one with this seq (paging). */
  beforeSeq?: number;
  /** Only jobs that are active or ended at or after this ISO time. */
  activeOrEndedAfter?: string;
}

export interface TokenRecord {
  /** Public id (the first 12 hex digits of the token's SHA-256): names the token in lists and for revoking. */
  id: string;
  user: string;
  admin: boolean;
  createdAt: string;
  /** ISO time after which the token is refused; null: never. */
  expiresAt: string | null;
  /** ISO time it was revoked; null: not revoked. A revoked token stays listed. */
  revokedAt: string | null;
}

/** The public id of the token whose SHA-256 (hex) is `hash`. */
export function tokenIdOf(hash: string): string {
  return hash.slice(0, 12);
}

/**
 * A GPU held back from jobs after a fault (hosts/health.ts), kept across broker restarts. `source` says what lifts
 * it: `xid` (a GPU-fault Xid in the host's kernel log) an admin, or a reboot (another `bootId`); `health` (what
 * nvidia-smi reported) a healthy reading. `at` is an ISO time.
 */
export interface StoredQuarantine {
  host: string;
  gpu: number;
  xid: number | null;
  detail: string;
  at: string;
  source: 'xid' | 'health';
  /** The host's boot id when the quarantine began (null: unknown). */
  bootId: string | null;
}

export interface Store {
  /** Inserts a new job; fails if the id exists. Records the first transition (null → job.state). */
  insertJob(job: Omit<StoredJob, 'seq'>, at: string): StoredJob;
  getJob(id: string): StoredJob | undefined;
  /** Newest first. */
  listJobs(q?: JobQuery): StoredJob[];
  /**
   * The ids listJobs(q) would return, in the same order, without reading the jobs (an index answers it): a job list
   * reads in full only the jobs it shows, however large their env or command.
   */
  listJobIds(q?: JobQuery): string[];
  /** queued, starting and running jobs, oldest first. */
  activeJobs(): StoredJob[];
  /**
   * Applies the patch. When `patch.state` differs from the stored state, a transition with `reason` is recorded in
   * the same transaction. Returns the updated job, or undefined when the id is unknown.
   */
  updateJob(id: string, patch: JobPatch, at: string): StoredJob | undefined;
  transitions(id: string): Transition[];
  /** Inserts attempt `a.n` of the job, or replaces it when it exists. */
  putAttempt(jobId: string, a: StoredAttempt): void;
  /** The job's attempts, by number; empty for jobs stored before attempts existed. */
  attempts(jobId: string): StoredAttempt[];

  /** Stores a token's SHA-256 hash (hex). The token itself is never stored. Returns its record (id: tokenIdOf). */
  addToken(hash: string, user: string, admin: boolean, at: string, expiresAt?: string | null): TokenRecord;
  /** The token with this hash, revoked and expired ones included (the caller decides). */
  findToken(hash: string): TokenRecord | undefined;
  /** Every token, oldest first. */
  listTokens(): TokenRecord[];
  /** Marks the token revoked at `at` (a second revoke keeps the first time). Undefined when the id is unknown. */
  revokeToken(id: string, at: string): TokenRecord | undefined;

  /** Records a GPU's quarantine (replacing one of the same host and GPU). */
  putQuarantine(q: StoredQuarantine): void;
  /** Lifts it; nothing happens when there is none. */
  deleteQuarantine(host: string, gpu: number): void;
  /** Every quarantine, by host then GPU. */
  quarantines(): StoredQuarantine[];

  close(): void;
}
