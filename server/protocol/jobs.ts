/**
 * Job types shared by the broker, the CLI and the VS Code extension.
 * The extension imports nothing from server/ but this folder.
 */

/** Version of the HTTP protocol under `/v1`. Bumped on incompatible change. */
export const PROTOCOL_VERSION = 1;

/** The two queues. `online` (interactive) is always scheduled before `offline` (batch). */
export const QUEUES = ['online', 'offline'] as const;
export type Queue = (typeof QUEUES)[number];

/**
 * Job life cycle: queued → starting → running → one final state.
 * A job may also go from queued/starting straight to a final state (cancelled, failed to start), and from
 * running back to queued when a recoverable fault ends an attempt and the job is restarted (its next attempt).
 */
export const JOB_STATES = ['queued', 'starting', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out', 'lost'] as const;
export type JobState = (typeof JOB_STATES)[number];

export const FINAL_STATES: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'cancelled', 'timed_out', 'lost']);
export const ACTIVE_STATES: ReadonlySet<JobState> = new Set(['queued', 'starting', 'running']);

/**
 * A later attempt in a few words: "attempt 2/4" counts restarts against the job's budget, "moved" (or "moved 2×")
 * counts moves, which are no restarts; '' for a job on its first attempt.
 */
export function attemptWords(a: { n: number; of: number; moves?: number } | undefined): string {
  if (!a || a.n <= 1) return '';
  const moves = a.moves ?? 0;
  const parts: string[] = [];
  if (a.n - moves > 1) parts.push(`attempt ${a.n - moves}/${a.of - moves}`);
  if (moves) parts.push(moves === 1 ? 'moved' : `moved ${moves}×`);
  return parts.join(' · ');
}

/**
 * A draining host's jobs in a few words, the same in the CLI's hosts table and the editor's Hosts view:
 * "draining: 2 jobs moving, 1 running".
 */
export function drainWords(d: { moving: number; running: number }): string {
  return `draining: ${d.moving} job${d.moving === 1 ? '' : 's'} moving, ${d.running} running`;
}

export function isFinal(state: JobState): boolean {
  return FINAL_STATES.has(state);
}

/** What a job asks for. Memory in MiB, time in seconds; `timeLimitSec: 0` means no limit. */
export interface Resources {
  gpus: number;
  /** Case-insensitive substring of the GPU name reported by nvidia-smi, e.g. "A100". */
  gpuType?: string;
  cpus: number;
  memoryMiB: number;
  timeLimitSec: number;
}

/** The body of `POST /v1/jobs`. Resource fields left out take the broker's defaults. */
export interface SubmitRequest {
  /** argv: never joined into a shell string. */
  command: string[];
  /** Absolute path of the workspace on the developer's machine. */
  workspace: string;
  gpus?: number;
  gpuType?: string;
  cpus?: number;
  /** e.g. "16G", "512M", or a number of MiB. */
  memory?: string | number;
  /**
   * Text in Slurm's forms ("30" is 30 minutes, "45:00", "1:30:00", "2-12:00") or with units ("2h", "90s"); a JSON
   * number is seconds.
   */
  time?: string | number;
  queue?: Queue;
  image?: string;
  env?: Record<string, string>;
  /** A short label shown in lists (defaults to the script name). */
  name?: string;
  // -- Slurm clusters --
  /** Where the job runs: "hosts" (the broker's host pool) or a cluster's name; default: see the README. */
  backend?: string;
  // -- client-served workspace --
  /**
   * Who serves the workspace's files to the GPU host: "broker" (default; the broker reads `workspace` itself, so it
   * must run on the machine that owns it) or "client" (the submitting client serves them over
   * `GET /v1/jobs/ID/workspace` with `Upgrade: gpurun-sftp`, and must stay connected for the whole job).
   */
  workspaceFrom?: WorkspaceFrom;
  // -- restarts --
  /**
   * How many times the broker may start the job again after a recoverable fault (see FAULT_KINDS); 0 = never.
   * Default: the queue's `restarts` in the broker config (0 unless set).
   */
  restarts?: number;
  /** Exit codes of the job's own that ask for a restart (e.g. [75]); counted against `restarts`. */
  restartOnExit?: number[];
  /** The signal the job checkpoints on (`--checkpoint-signal`): it can then be moved between hosts (README: Migration). */
  checkpointSignal?: string;
}

/**
 * Why an attempt ended, typed. Decided by the broker's outcome classifier from what the backend observed.
 * - `user_error`: the job's own code failed (non-zero exit, a signal, an application Xid such as 13 or 43)
 * - `oom`: killed for running out of memory
 * - `timed_out`: stopped at its time limit
 * - `cancelled`: stopped by a user (or on the cluster)
 * - `start_failed`: could not start (no image, command not found, a mount that failed)
 * - `host_lost`: its host stopped answering for longer than the grace, or came back rebooted
 * - `gpu_fault`: one of its GPUs failed (an Xid such as 48, 79, 94, or nvidia-smi health)
 * - `runtime_lost`: its container or process vanished, or the container engine died, on a host that answers
 * - `workspace_lost`: the workspace mount broke
 * - `preempted`: the cluster took its resources for another job
 * - `node_fail`: the cluster's node failed (Slurm NODE_FAIL, BOOT_FAIL)
 */
export const FAULT_KINDS = ['user_error', 'oom', 'timed_out', 'cancelled', 'start_failed', 'host_lost', 'gpu_fault', 'runtime_lost', 'workspace_lost', 'preempted', 'node_fail', 'migrated'] as const;
export type Fault = (typeof FAULT_KINDS)[number];

/**
 * One run of a job. A job has attempts 1..N; a restart after a recoverable fault starts the next one. The job's log is
 * one byte stream: attempt N's output begins at `logOffset` (after a marker line written by the broker).
 */
export interface Attempt {
  /** 1-based. */
  n: number;
  /** Where it ran: a host of the pool, or "cluster/node" for Slurm; null before it was placed. */
  host: string | null;
  gpuIndices: number[];
  startedAt: string | null;
  endedAt: string | null;
  /** The attempt's end, in gpurun's states; null while it runs. */
  state: JobState | null;
  /** Null while running, and for an attempt that succeeded. */
  fault: Fault | null;
  /** How it ended, in words; null while running. */
  reason: string | null;
  exitCode: number | null;
  /** Byte offset of the job's log where this attempt's output begins. */
  logOffset: number;
  /** What was observed about its end (facts, in words and figures), for a person to judge. */
  evidence: AttemptEvidence;
}

/** What the broker saw about an attempt's end: the backend's observations, unchanged. All fields optional. */
export interface AttemptEvidence {
  exitCode?: number | null;
  signal?: string | null;
  oomKilled?: boolean;
  startError?: string;
  runtimeGone?: string;
  engineDown?: string;
  hostUnreachableSec?: number;
  bootIdChanged?: boolean;
  workspaceLost?: { reason: string; controlPlane: boolean };
  gpuFaults?: Array<{ gpu: number; xid?: number; detail: string; at: string }>;
  slurm?: { state: string; reason?: string };
  notes?: string[];
  /** The attempt ended to move the job (migration/manager.ts): where to, why, and what the move cost. */
  move?: MoveEvidence;
}

/** Who serves a job's workspace to the GPU host; see `SubmitRequest.workspaceFrom`. */
export type WorkspaceFrom = 'broker' | 'client';

/** The `Upgrade` protocol of `GET /v1/jobs/ID/workspace`: after 101, one JSON line (WorkspaceServeStart), then SFTP. */
export const WORKSPACE_UPGRADE = 'gpurun-sftp';

/**
 * The line the broker sends on a workspace stream (JSON, then `\n`) when the host's sshfs starts; every byte after it
 * is the SFTP stream of that sshfs (the client is the SFTP server). `readOnly`: serve without writes.
 */
export interface WorkspaceServeStart {
  host: string;
  readOnly: boolean;
}

/** How long the broker waits, when it mounts a client-served workspace, for the client's stream. */
export const CLIENT_WORKSPACE_WAIT_MS = 30_000;

/** One stored state change. `at` is an ISO-8601 time. */
export interface Transition {
  at: string;
  from: JobState | null;
  to: JobState;
  reason: string;
}

/** A job as the API returns it. Times are ISO-8601. */
/** A move of a running job to another host (`gpurun migrate`, drain, load, preemption), as its attempt records it. */
export interface MoveEvidence {
  from: string;
  to: string;
  /** The destination GPUs reserved for it. */
  gpus: number[];
  /** Why, in words ("gpurun migrate by alice", "online load 94% > 90% for 60 s"). */
  cause: string;
  method: 'cooperative' | 'transparent';
  /** The job's address on its user's network at the source; the destination container takes it again. */
  ip?: string;
  /** When the job's checkpoint was taken (its source process ended with it). */
  checkpointAt?: string;
  /** Bytes copied while the job still ran, and after it stopped (the final round); a full copy would be `totalBytes`. */
  precopyBytes?: number;
  finalBytes?: number;
  totalBytes?: number;
  /** Seconds from the checkpoint to the job running on the destination. */
  downtimeSec?: number;
  /** Set when the job went on where it was instead (the copy failed, the destination could not start it). */
  fellBack?: string;
}

/** A move in progress or the last one given up, for the job's view. */
export interface MoveView {
  state: 'moving' | 'given_up';
  from: string;
  to: string;
  cause: string;
  /** What the move is doing now, or why it was given up. */
  detail: string;
}

export interface Job {
  id: string;
  owner: string;
  name: string;
  command: string[];
  workspace: string;
  resources: Resources;
  queue: Queue;
  image?: string;
  env: Record<string, string>;
  state: JobState;
  /** Why the job is in its state, in words a person can act on. */
  reason: string;
  exitCode: number | null;
  host: string | null;
  /** GPU indices on `host` given to this job; the job sees exactly these in CUDA_VISIBLE_DEVICES. */
  gpuIndices: number[];
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  /** Present while queued: 1-based position in its queue across all users. */
  queuePosition?: number;
  transitions?: Transition[];
  // -- Slurm clusters --
  /** "hosts" or the cluster the job was sent to. Absent on jobs stored before backends existed (= "hosts"). */
  backend?: string;
  /** Jobs on a Slurm cluster: their Slurm id and what staging copied. */
  cluster?: ClusterJobInfo;
  /** "client" when the submitting client serves the workspace; absent means the broker does. */
  workspaceFrom?: 'client';
  // -- restarts --
  /** Restarts allowed after recoverable faults (so a job has at most `restarts + 1` attempts). */
  restarts?: number;
  /** Exit codes on which the job asked to be restarted. */
  restartOnExit?: number[];
  /**
   * The current (or last) attempt's number and the most there can be; absent on jobs stored before attempts. `moves`:
   * how many attempts before this one ended to move the job (a move is not a restart: it adds to `of`).
   */
  attempt?: { n: number; of: number; moves?: number };
  /** The attempts, oldest first (`GET /v1/jobs/ID` only). */
  attempts?: Attempt[];
  /** A move in progress, or the last one given up (migration/manager.ts). */
  move?: MoveView;
}

/** A cluster job's Slurm side, as the API shows it. Times in ms, sizes in bytes. */
export interface ClusterJobInfo {
  name: string;
  /** Null until sbatch has answered. */
  slurmJobId: string | null;
  /** The workspace staged before submit: files copied (new or changed), unchanged, removed from the staged copy. */
  staged?: { copied: number; unchanged: number; removed: number; bytes: number; ms: number };
  /** After the end: files the job wrote that were copied back, and those not copied because you changed them since. */
  returned?: { copied: number; keptNewer: string[] };
}

/** One GPU of a host, as probed with nvidia-smi. Memory in MiB, utilization in percent. */
export interface Gpu {
  index: number;
  uuid: string;
  name: string;
  memoryTotalMiB: number;
  memoryUsedMiB: number;
  utilizationPct: number;
}

/**
 * up: takes jobs. down: cannot be used (never reached, or missing what its runtime needs). unreachable: was up, and
 * health checks fail, for less than the grace (`hostLostAfter`): its jobs are kept. lost: they failed for the whole
 * grace: its jobs have ended `lost`. draining: finishes its jobs, gets no new ones.
 */
export const HOST_STATES = ['up', 'down', 'unreachable', 'lost', 'draining'] as const;
export type HostState = (typeof HOST_STATES)[number];

/** Why a GPU is held back from jobs (a GPU fault seen on it); `at` is an ISO time. */
export interface GpuQuarantine {
  xid?: number;
  detail: string;
  at: string;
  /**
   * What took the GPU out, hence what puts it back: `xid` (a GPU-fault Xid in the kernel log): an admin
   * (`gpurun hosts clear HOST GPU`) or a reboot of the host; `health` (nvidia-smi reported it failing): a healthy
   * reading. Kept by the broker's store across its restarts.
   */
  source?: 'xid' | 'health';
}

/** A host as `GET /v1/hosts` returns it. */
export interface HostInfo {
  name: string;
  state: HostState;
  lastError: string | null;
  /** unreachable or lost: since when its health checks fail (ISO). */
  since?: string;
  runtime: string;
  /**
   * Each GPU, with the job that holds it, its utilisation at the broker's last probes (`history`, %, oldest first, one
   * per probe, about 30 s apart), when it reads 0 % now since when (`idleSince`, ISO; null while busy), and its
   * quarantine when a fault took it out of use.
   */
  gpus: Array<Gpu & { jobId: string | null; history?: number[]; idleSince?: string | null; quarantined?: GpuQuarantine }>;
  cpus: number;
  cpusUsed: number;
  memoryMiB: number;
  memoryUsedMiB: number;
  labels: Record<string, string>;
  /** The images a Docker host has (`REPOSITORY:TAG`), as its last probe saw them. */
  images?: string[];
  /**
   * How a running job can be checkpointed here to move it (README: Migration): cooperatively on Docker hosts;
   * transparently (CRIU through Docker) when `transparent` is null, else it says why not.
   */
  checkpoint?: { cooperative: boolean; transparent: string | null };
  /** A draining host's jobs: how many are moving off, how many run on to their end (migration/drain.ts). */
  drain?: { moving: number; running: number };
  /**
   * How jobs' workspaces are mounted on the host, once its first snapshot mount (`mount.snapshot`) checked what the
   * host supports: the snapshot's layout, or plain sshfs and why.
   */
  workspace?: string;
  /**
   * What the host's online jobs use now, when load-driven moves are on: fractions of its CPUs and memory and, where
   * they hold GPUs that nvidia-smi reads, the mean utilisation of those GPUs and the share of their memory the jobs'
   * processes use.
   */
  onlineLoad?: { cpu: number; memory: number; gpu?: number; gpuMemory?: number; at: string };
}

/** An event on `GET /v1/events` (Server-Sent Events, `data:` is this JSON). */
export interface JobEvent {
  type: 'job';
  job: Job;
}

/** Response header carrying the byte offset where a logs response begins. */
export const LOG_OFFSET_HEADER = 'x-gpurun-offset';
/**
 * Header of a log answer whose log has a left-out range (a job past its output cap): `FROM-TO`. Bytes [FROM, TO)
 * are never sent: a client counting offsets jumps from FROM to TO.
 */
export const LOG_SKIP_HEADER = 'x-gpurun-skip';
