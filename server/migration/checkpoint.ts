/**
 * The checkpoint port of a move: how a running job's state is saved on its host, carried to another host and
 * resumed there. Two methods, chosen per move from what both hosts support:
 * - cooperative (every host): the job is signalled, writes its own state into GPURUN_CHECKPOINT_DIR and exits with
 *   CHECKPOINT_EXIT_CODE; the folder is copied; the next attempt starts with GPURUN_RESUME_FROM (cooperative.ts);
 * - transparent (where the host's CRIU and Docker allow it): the container itself is checkpointed and restored
 *   (transparent.ts).
 * The orchestration (manager.ts) calls precopy → checkpoint → transfer → resume → discard, in that order.
 */
import type { RemoteExec } from '../hosts/ssh.ts';
import type { StoredAttempt, StoredJob } from '../core/store.ts';
import type { AttemptEnd } from '../core/backend.ts';

export type CheckpointMethod = 'cooperative' | 'transparent';

/** The exit code by which a job says "my state is saved in GPURUN_CHECKPOINT_DIR, resume me from it". */
export const CHECKPOINT_EXIT_CODE = 85;

/** The signal a job gets to checkpoint, unless it asks for another (`--checkpoint-signal`). */
export const DEFAULT_CHECKPOINT_SIGNAL = 'SIGUSR1';

/** Where a job's checkpoint folder is inside its container (bind-mounted from the host's work folder). */
export const CONTAINER_CHECKPOINT_DIR = '/gpurun/checkpoint';

/** The job's checkpoint folder on a host: under the host's work folder, one per job, kept across its attempts. */
export function hostCheckpointDir(workDir: string, jobId: string): string {
  return `${workDir}/checkpoints/${jobId}`;
}

/** One side of a move: a host of the pool, its command channel and its work folder. */
export interface HostSide {
  host: string;
  exec: RemoteExec;
  workDir: string;
}

export interface MoveContext {
  job: StoredJob;
  /** The source attempt; its runtimeRef is the runtime's handle (DockerRef: container, mount). */
  attempt: StoredAttempt;
  from: HostSide;
  to: HostSide;
  /** How long checkpoint() may take before the move is given up. */
  deadlineMs: number;
  /** The job was asked to checkpoint before a broker restart: checkpoint() only waits for it, asking nothing again. */
  alreadyAsked?: boolean;
  /** Aborted when the move is given up (broker closing, job cancelled). */
  signal: AbortSignal;
  /**
   * Resolves when the source attempt has ended with a checkpoint (an end isCheckpointEnd() accepted; `at`: when);
   * rejects when it ended otherwise (the job's own exit, a lost host).
   */
  sourceEnded: Promise<{ at: string }>;
  /** Sends the source attempt's processes a signal, through its host's runtime (Docker or plain processes). */
  signalJob(sig: string): Promise<void>;
  log(msg: string, fields?: Record<string, unknown>): void;
}

/** What one round of copying moved. */
export interface CopyResult {
  bytes: number;
  files: number;
  ms: number;
}

/** For the runtime's start: restore this checkpoint instead of running the command anew (transparent path). */
export interface RestoreSpec {
  method: 'transparent';
  /** The checkpoint's folder on the destination host. */
  dir: string;
  /** The checkpoint's name (docker checkpoint). */
  name: string;
  /** The source attempt's runtime handle, whose container was kept: a move that falls back restores into it. */
  into?: Record<string, unknown>;
}

export interface Checkpointer {
  readonly method: CheckpointMethod;
  /** Whether `host` can checkpoint this way: null = yes, else why not (words, shown in `gpurun hosts`). */
  unavailable(host: string): string | null;
  /**
   * Whether an end of the source attempt, after checkpoint() began, is the checkpoint (cooperative: exit
   * CHECKPOINT_EXIT_CODE; transparent: the container stopped by a successful `docker checkpoint create`).
   */
  isCheckpointEnd(end: AttemptEnd | { startError: string }): boolean;
  /** While the job still runs: copies what can be copied already. A failure gives the move up, the job untouched. */
  precopy(ctx: MoveContext): Promise<CopyResult>;
  /**
   * Makes the job save its state and stop on the source. Resolves once the source process is gone with a checkpoint
   * (`at`: when it was taken). Rejects with a GpurunError E_CONFLICT when the job did not checkpoint in time: the job
   * then still runs, untouched.
   */
  checkpoint(ctx: MoveContext): Promise<{ at: string }>;
  /** After checkpoint(): copies what changed since precopy() to the destination (the final round). */
  transfer(ctx: MoveContext): Promise<CopyResult>;
  /** How the destination attempt starts: variables to add, and (transparent) a restore instead of a fresh run. */
  resume(ctx: MoveContext): { env: Record<string, string>; restore?: RestoreSpec };
  /** Removes what the move left on `side` (the source after a move, the destination after a failed one). */
  discard(side: HostSide, job: StoredJob): Promise<void>;
}
