/**
 * What the broker needs from a runtime (plain processes now; Docker, Slurm later). A runtime starts a job, reports
 * its end, and stops it. It never decides a job's state: the broker does, from ExitInfo and its own stop intent.
 */
import type { StoredJob } from './store.ts';

export interface StartSpec {
  job: StoredJob;
  host: string;
  gpuIndices: number[];
  /** The file that receives the job's stdout and stderr, appended, in order. */
  logPath: string;
  /** The full environment of the job (the runtime adds nothing but what it must). */
  env: Record<string, string>;
}

/** How a job ended. `exitCode` is null when it was killed by `signal`. */
export interface ExitInfo {
  exitCode: number | null;
  signal: string | null;
  /** Set when the command could not be started at all (e.g. not found). */
  startError?: string;
  /** The kernel's OOM killer ended it. */
  oomKilled?: boolean;
  /** The job was stopped because something it depends on failed (e.g. `workspace_lost: …`); the reason shown. */
  failure?: string;
  endedAt: string;
}

/** The job's process is gone and no exit status can be had. */
export interface Lost {
  lost: string;
}

export interface Runtime {
  readonly kind: string;
  /** The job's workspace is mounted on its host (SSH hosts), so a workspace served by the client can be relayed. */
  readonly mountsWorkspace?: boolean;
  /** Starts the job; resolves with a handle to store once it runs. Rejects with a GpurunError if it cannot start. */
  start(spec: StartSpec): Promise<Record<string, unknown>>;
  /** Resolves once the job ends, also for a job started by an earlier broker process (after a restart). */
  wait(ref: Record<string, unknown>, signal: AbortSignal): Promise<ExitInfo | Lost>;
  /**
   * For a job the broker was starting when it stopped (no handle stored): finds the job if the runtime did start
   * it, so it is followed rather than left running untracked. Null when nothing was started. `logPath` is the job's
   * log file (as StartSpec.logPath).
   */
  recover?(job: StoredJob, logPath: string): Promise<Record<string, unknown> | null>;
  /** Asks the job to stop (TERM to the whole process group / container), then kills it after `graceMs`. */
  stop(ref: Record<string, unknown>, graceMs: number): Promise<void>;
}
