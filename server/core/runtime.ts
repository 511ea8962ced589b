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
  /** Set for the attempt that continues a moved job (migration/): where it was, how to restore it. */
  moved?: MovedStart;
  /** The attempt's number (a restored container is named after it); absent where the caller has none. */
  n?: number;
}

/** How the attempt after a move starts: on the same network address, and (transparent path) from a checkpoint image. */
export interface MovedStart {
  /** The address the job had on its user's network at the source; the destination container takes it again. */
  ip?: string;
  /**
   * Restore this checkpoint instead of running the command anew (migration/checkpoint.ts RestoreSpec). `into`: the
   * handle of an attempt whose remains were held at its checkpoint (holdOnExit): the restore goes into that very
   * container, its own file system and mount included, and the runtime takes its remains over.
   */
  restore?: { method: 'transparent'; dir: string; name: string; into?: Record<string, unknown> };
  /** What the runtime's prepare() made ready for this attempt (its container created, not started). */
  prepared?: Record<string, unknown>;
}

/** A start to prepare: the attempt's number (its container is named after it) and what its start will get. */
export interface PrepareSpec extends Omit<StartSpec, 'logPath'> {
  n: number;
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
  /** What the runtime and the host saw around this end; the outcome classifier decides from it. */
  evidence?: Evidence;
  endedAt: string;
}

/** The job's process is gone and no exit status can be had. */
export interface Lost {
  lost: string;
  evidence?: Evidence;
}

/**
 * Facts a runtime or the host layer observed about an attempt, never a decision: the outcome classifier in core/
 * turns them into a state, a fault kind and whether a restart may help. Every field is optional; absent = not seen.
 */
export interface Evidence {
  /** The container or supervised process is gone without an exit status (removed from outside, engine restarted). */
  runtimeGone?: string;
  /** The container engine does not answer on a host that is otherwise reachable. */
  engineDown?: string;
  /** The host could not be reached (its SSH connection and a fresh one both failed) for this many seconds. */
  hostUnreachableSec?: number;
  /** The host came back with another boot id: it rebooted, so nothing of the attempt survived there. */
  bootIdChanged?: boolean;
  /**
   * The workspace mount broke. `controlPlane`: the break was in gpurun's own path (a relay stream, the serving
   * client, the broker), not the developer's files or the host's FUSE; such a break may be retried.
   */
  workspaceLost?: { reason: string; controlPlane: boolean };
  /** GPU faults seen on the attempt's GPUs: Xid lines of the host's kernel log, or nvidia-smi health. */
  gpuFaults?: GpuFaultEvidence[];
  /** Slurm's view of the job, for cluster backends. */
  slurm?: { state: string; reason?: string };
  /** Anything else worth showing a user, in words (e.g. "container gone after reboot"). */
  notes?: string[];
}

/** One GPU fault observation. `gpu` is the host's index (nvidia-smi numbering); `at` an ISO time. */
export interface GpuFaultEvidence {
  gpu: number;
  /** NVIDIA Xid code when the fault came from an `NVRM: Xid` kernel log line. */
  xid?: number;
  detail: string;
  at: string;
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
   * log file (as StartSpec.logPath); `n` the attempt's number; `notThese`: containers of earlier attempts, kept at
   * their checkpoint on another host, that are never this attempt's (hosts may share one engine).
   */
  recover?(job: StoredJob, logPath: string, n?: number, notThese?: string[]): Promise<Record<string, unknown> | null>;
  /** Asks the job to stop (TERM to the whole process group / container), then kills it after `graceMs`. */
  stop(ref: Record<string, unknown>, graceMs: number): Promise<void>;
  /**
   * For a move (server/migration/): makes attempt `spec.n` ready on its host without running anything of the job
   * (the workspace mounted, the container created), so that its start() with `moved.prepared` only starts it.
   * Rejects with a GpurunError saying why the host cannot run it (nothing is left then).
   */
  prepare?(spec: PrepareSpec): Promise<Record<string, unknown>>;
  /** Removes what prepare() made for attempt `n` of a job on `host` (also one a broker before a restart made). */
  unprepare?(host: string, jobId: string, n: number): Promise<void>;
  /**
   * The remains of the attempt (container, mount) stay on its host when it ends with `exitCode`, until release():
   * a move's source, so that removing them is not part of the move's downtime.
   */
  holdOnExit?(ref: Record<string, unknown>, exitCode: number): void;
  /** Forgets holdOnExit(); when the attempt has ended (`ended`, or its end was held), its remains are removed. */
  release?(ref: Record<string, unknown>, ended: boolean): Promise<void>;
  /** Sends the job's processes `sig` (e.g. "SIGUSR1": a cooperative checkpoint); throws a GpurunError if it cannot. */
  signal?(ref: Record<string, unknown>, sig: string): Promise<void>;
}
