/**
 * The broker's service: submit, list, cancel, logs and hosts for the HTTP app, and the loop that hands queued jobs to
 * their backend (core/backend.ts: the host pool, a Slurm cluster), follows each attempt, enforces time limits over
 * all attempts, classifies how an attempt ended (core/outcome.ts) and decides whether the job gets another one
 * (core/restartPolicy.ts). The broker process is the only writer of the store; active jobs are also held in memory
 * so a scheduling pass costs no database reads. Time comes from an injected Clock.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { GpurunError, isGpurunError } from './protocol/errors.ts';
import { attemptWords, isFinal, type AttemptEvidence, type HostInfo, type Job, type MoveView } from './protocol/jobs.ts';
import type { Store, StoredAttempt, StoredJob, StopIntent } from './core/store.ts';
import type { AttemptEnd, AttemptEvents, AttemptPlacement, Backend } from './core/backend.ts';
import type { Allocation } from './core/scheduler.ts';
import type { MovedStart } from './core/runtime.ts';
import { attemptMarker, classify, describeEnd, type Outcome } from './core/outcome.ts';
import { moveMarker } from './migration/words.ts';
import { avoidOf, backoffMs, decideRestart, usedMs, type BackoffConfig } from './core/restartPolicy.ts';
import { isoAt, systemClock, type Clock, type TimerHandle } from './core/clock.ts';
import { validateSubmit } from './core/submit.ts';
import { fairOrder, fairPosition, fairPositions, type FairJob } from './core/fairness.ts';
import { formatDuration } from './core/units.ts';
import { jobEnv } from './core/jobEnv.ts';
import type { WorkspaceGate } from './auth/workspaces.ts';
import { poolSnapshot } from './core/pool.ts';
import type { PoolSnapshot } from './protocol/pool.ts';
import type { BrokerConfig } from './config.ts';
import type { LogFiles } from './logs/logFiles.ts';
import type { Logger } from './logger.ts';

export interface Principal {
  user: string;
  admin: boolean;
}

/** What the broker needs of the host registry: probing, and the view of `GET /v1/hosts`. */
export interface HostsView {
  probeAll(): Promise<boolean>;
  info(allocations: Allocation[]): HostInfo[];
}

/**
 * What the move orchestration (migration/manager.ts) hooks into: the GPUs it reserves, the ends of attempts it asked
 * for (a checkpoint), the variables of a start, the moment a moved job runs, a move caught by a broker restart.
 */
export interface MoveHooks {
  /** Allocations held for moves (destination GPUs, the source's until the job runs at the destination). */
  reserved(): Allocation[];
  /** An attempt ended: when it is a move's checkpoint, how to record it (the broker then waits for startMoved). */
  claimEnd(job: StoredJob, att: StoredAttempt, end: AttemptEnd | { startError: string }): { reason: string; evidence: AttemptEvidence; fault: 'migrated' | 'preempted'; requeue: boolean } | null;
  /** Online jobs a placement pass could not place (in the order they wait). */
  unplaced(jobs: StoredJob[]): void;
  /** Before attempt `n` starts on `host`: bring its checkpoint there (a preempted job resuming elsewhere). */
  prepareStart(job: StoredJob, n: number, host: string | null): Promise<void>;
  /** Variables for attempt `n` of the job (checkpoint signal, resume folder). */
  attemptEnv(job: StoredJob, n: number): Record<string, string>;
  /** How attempt `n` starts when it continues a moved job (same address, a checkpoint to restore), else undefined. */
  movedStart(job: StoredJob, n: number): MovedStart | undefined;
  /** Attempt `n` of the job runs. */
  running(job: StoredJob, n: number): void;
  /** After a broker restart: a job whose last attempt ended for a move; true when the orchestration takes it on. */
  resumeMove(job: StoredJob, last: StoredAttempt): boolean;
  /** The job's move in progress (or the last one given up), for its view. */
  view(jobId: string): MoveView | undefined;
}

export interface BrokerDeps {
  config: BrokerConfig;
  store: Store;
  logs: LogFiles;
  hosts: HostsView;
  /** Every place jobs can run, by name (the host pool is "hosts"). */
  backends: Backend[];
  log: Logger;
  /** Environment every job starts from (the broker's own, usually); job env is laid over it. */
  baseEnv: Record<string, string>;
  clock?: Clock;
  /** What folders a user may name as a broker-read workspace (auth/workspaces.ts); absent: any (embedded broker). */
  workspaceGate?: WorkspaceGate;
}

const ID_ALPHABET = 'abcdefghijkmnpqrstuvwxyz23456789';
/** How often hosts are probed again (GPUs come and go, e.g. after a driver reset). */
const PROBE_INTERVAL_MS = 30_000;

/** The attempt in progress of an active job. */
interface Current {
  n: number;
  ac: AbortController;
}

/** How many of the attempts ended to move the job or for a preemption with a checkpoint (not counted as restarts). */
function movesIn(atts: readonly StoredAttempt[]): number {
  return atts.filter((a) => a.evidence.move !== undefined).length;
}

export class Broker extends EventEmitter<{ job: [Job] }> {
  private readonly active = new Map<string, StoredJob>();
  private readonly current = new Map<string, Current>();
  private readonly timers = new Map<string, TimerHandle>();
  /** Jobs waiting out a restart's backoff: not placed before this time (ms). */
  private readonly notBefore = new Map<string, number>();
  /** Attempts given up on that may still run somewhere (fencing): stopped and removed once reachable. */
  private readonly discarding = new Set<AbortController>();
  private readonly backends = new Map<string, Backend>();
  /** When each user last had a job started (a counter), for the fair order (core/fairness.ts). */
  private readonly served = new Map<string, number>();
  private servedCount = 0;
  private passQueued = false;
  private closed = false;
  private probeTimer?: NodeJS.Timeout;
  private moves?: MoveHooks;

  private readonly d: BrokerDeps;
  private readonly clock: Clock;

  constructor(deps: BrokerDeps) {
    super();
    this.d = deps;
    this.clock = deps.clock ?? systemClock;
    for (const b of deps.backends) this.backends.set(b.name, b);
    this.setMaxListeners(0);
  }

  /** Wires the move orchestration (made after the broker, as it calls back into it). */
  setMoves(m: MoveHooks): void {
    this.moves = m;
  }

  /** Probes hosts, finds jobs an earlier broker process left running, and starts scheduling. */
  async start(): Promise<void> {
    await this.d.hosts.probeAll();
    for (const job of this.d.store.activeJobs()) this.active.set(job.id, job);
    for (const b of this.backends.values()) b.open?.();
    for (const job of [...this.active.values()]) this.recover(job);
    this.probeTimer = setInterval(() => {
      this.d.hosts.probeAll().then((changed) => changed && this.kick(), (err) => this.d.log.error('probe failed', { err }));
    }, PROBE_INTERVAL_MS);
    this.probeTimer.unref();
    this.kick();
  }

  /** Stops following jobs (they keep running under their shims) and closes nothing else. */
  close(): void {
    this.closed = true;
    for (const b of this.backends.values()) b.close();
    clearInterval(this.probeTimer);
    for (const t of this.timers.values()) t.cancel();
    for (const c of this.current.values()) c.ac.abort(new Error('broker closing'));
    for (const ac of this.discarding) ac.abort(new Error('broker closing'));
  }

  // ---- API ---------------------------------------------------------------------------------------------------

  submit(p: Principal, body: unknown): Job {
    const cfg = this.d.config;
    const backend = this.backendOf(body);
    const defs = backend.defaults(cfg.defaults);
    const v = validateSubmit(body, { gpus: defs.gpus, cpus: cfg.defaults.cpus, memoryMiB: cfg.defaults.memoryMiB, image: defs.image, queues: cfg.queues });
    if (this.d.workspaceGate && v.workspaceFrom !== 'client') v.workspace = this.d.workspaceGate(p.user, v.workspace);
    backend.admit(v);
    // Asking to be restarted on an exit code alone allows one restart, unless the queue allows more.
    const restarts = v.restarts ?? (cfg.queues[v.queue].restarts || (v.restartOnExit?.length ? 1 : 0));
    const now = this.now();
    const job = this.d.store.insertJob(
      {
        id: this.newId(),
        owner: p.user,
        name: v.name,
        command: v.command,
        workspace: v.workspace,
        resources: v.resources,
        queue: v.queue,
        ...(v.image ? { image: v.image } : {}),
        env: v.env,
        state: 'queued',
        reason: 'submitted',
        exitCode: null,
        host: null,
        gpuIndices: [],
        createdAt: now,
        startedAt: null,
        endedAt: null,
        runtimeRef: null,
        stopIntent: null,
        backend: backend.name,
        ...(v.workspaceFrom ? { workspaceFrom: v.workspaceFrom } : {}),
        ...(restarts ? { restarts } : {}),
        ...(v.restartOnExit?.length ? { restartOnExit: v.restartOnExit } : {}),
      },
      now,
    );
    this.active.set(job.id, job);
    // Exists from the start, so followers can watch it before the job writes a byte.
    this.d.logs.touch(job.id);
    this.d.log.info('job submitted', { job: job.id, owner: p.user, queue: job.queue, backend: backend.name, resources: job.resources });
    this.publish(job);
    this.kick();
    return this.view(job);
  }

  /**
   * Newest first, at most `limit`; `before`: only jobs submitted before that job (the cursor of the next page).
   * Lazy: a job is read (from memory when active, else from the store) only when the caller takes it, so a page that
   * stops at its byte bound reads no job it does not send.
   */
  *list(p: Principal, opts: { all: boolean; limit: number; before?: string }): Generator<Job> {
    const owner = p.admin ? undefined : p.user;
    const before = opts.before === undefined ? undefined : this.visible(p, opts.before).seq;
    const endedAfter = opts.all ? undefined : new Date(this.clock.now() - 86_400_000).toISOString();
    const ids = this.d.store.listJobIds({ ...(owner === undefined ? {} : { owner }), limit: opts.limit, ...(before === undefined ? {} : { beforeSeq: before }), ...(endedAfter ? { activeOrEndedAfter: endedAfter } : {}) });
    const positions = this.queuePositions();
    const held = this.gpusHeld();
    for (const id of ids) {
      const job = this.active.get(id) ?? this.d.store.getJob(id);
      if (job) yield this.view(job, positions, held);
    }
  }

  /** A job the principal may see, with its transitions and attempts; others' jobs are "not found". */
  get(p: Principal, id: string): Job {
    const job = this.visible(p, id);
    const attempts = this.attemptsOf(job).map(({ runtimeRef: _ref, ...a }) => a);
    return { ...this.view(job), transitions: this.d.store.transitions(id), attempts };
  }

  async cancel(p: Principal, id: string): Promise<Job> {
    const job = this.visible(p, id);
    if (isFinal(job.state)) {
      throw new GpurunError('E_CONFLICT', `job ${id} has already ended (${job.state})`, { hint: `Its output stays readable: gpurun logs ${id}` });
    }
    const by = `cancelled by ${p.user}`;
    if (job.state === 'queued') {
      // Waiting (for a place, a backoff, or in a cluster's queue): ends now; a submitted attempt is taken back.
      const att = this.current.has(id) ? this.currentAttempt(job) : undefined;
      this.endAttemptRecord(job, { state: 'cancelled', fault: 'cancelled', reason: `${by} while queued`, exitCode: null, evidence: {} });
      this.finish(job.id, { state: 'cancelled', reason: `${by} while queued`, exitCode: null });
      const b = this.backendFor(job);
      if (att?.runtimeRef && b) await b.stop(job, att, this.d.config.killGraceMs).catch((err) => this.d.log.error('stop failed', { job: id, err }));
    } else {
      this.requestStop(job.id, 'cancel', by);
    }
    return this.get(p, id);
  }

  hosts(): HostInfo[] {
    return this.d.hosts.info(this.allocations());
  }

  /** `GET /v1/pool`: hosts, queues with their limits and lengths, clusters (core/pool.ts). */
  pool(): PoolSnapshot {
    const c = this.d.config;
    const queued = [...this.active.values()].filter((j) => j.state === 'queued' && (j.backend ?? 'hosts') === 'hosts' && !this.current.has(j.id)).map((j) => j.queue);
    const clusters = c.clusters.map((k) => ({ name: k.name, partitions: k.partitions, gres: k.gres, images: k.container === 'pyxis' }));
    return poolSnapshot({ hosts: this.hosts(), queues: c.queues, queued, clusters, hasHosts: c.hosts.length > 0, defaultBackend: c.defaultBackend, ...(c.defaults.image ? { defaultImage: c.defaults.image } : {}), now: new Date() });
  }

  /** Checks access and returns the job, for the logs endpoint. */
  visible(p: Principal, id: string): StoredJob {
    const job = this.active.get(id) ?? this.d.store.getJob(id);
    if (!job || (!p.admin && job.owner !== p.user)) {
      throw new GpurunError('E_NOT_FOUND', `no job ${id}`, { hint: 'List your jobs with: gpurun ls --all' });
    }
    return job;
  }

  /**
   * The running attempt of one of the principal's own jobs (for exec and port forwards, interactive/): its host and
   * runtime handle. Another user's job is not found; an admin may see it but not enter it.
   */
  runningAttempt(p: Principal, id: string): { job: StoredJob; host: string; ref: Record<string, unknown> } {
    const job = this.visible(p, id);
    if (job.owner !== p.user) throw new GpurunError('E_FORBIDDEN', `only ${job.owner} can enter job ${id}`);
    const att = this.currentAttempt(job);
    if (job.state !== 'running' || !job.host || !att?.runtimeRef) {
      throw new GpurunError('E_CONFLICT', `job ${id} is ${job.state.replace('_', ' ')}, not running`, { hint: isFinal(job.state) ? `Its output stays readable: gpurun logs ${id}` : `Wait until it runs: gpurun show ${id}` });
    }
    return { job, host: job.host, ref: att.runtimeRef };
  }

  /** Jobs queued, starting or running (for limits and the output cap). */
  activeJobs(): StoredJob[] {
    return [...this.active.values()];
  }

  /** Stops a job so that it is placed again from the start (fault `preempted`; restarted if its policy allows). */
  stopToRestart(id: string, reason: string): void {
    this.requestStop(id, 'requeue', reason);
  }

  /** Stops a job that passed a limit (e.g. its output cap); it ends `failed` with `reason`. */
  stopForLimit(id: string, reason: string): void {
    this.requestStop(id, 'limit', reason);
  }

  /** Jobs queued, starting or running. */
  activeCount(): number {
    return this.active.size;
  }

  isDone(id: string): boolean {
    return !this.active.has(id);
  }

  // ---- moves (migration/manager.ts) ------------------------------------------------------------------------

  /** What starting and running attempts hold, with the moves' reservations. */
  holdings(): Allocation[] {
    return this.allocations();
  }

  /** An active job and its attempt in progress (if any). */
  currentOf(id: string): { job: StoredJob; attempt: StoredAttempt | undefined } | undefined {
    const job = this.active.get(id);
    return job && { job, attempt: this.currentAttempt(job) };
  }

  /**
   * Starts the next attempt of a job whose last one ended for a move, at `pl` (reserved by the orchestration), with
   * `marker` as its line in the log. A job cancelled meanwhile ends instead.
   */
  startMoved(id: string, pl: AttemptPlacement, marker: string): void {
    const job = this.active.get(id);
    const backend = job && this.backendFor(job);
    if (!job || !backend || this.current.has(id)) return;
    if (job.stopIntent) {
      this.finish(id, { state: job.stopIntent === 'cancel' ? 'cancelled' : job.stopIntent === 'timeout' ? 'timed_out' : 'failed', reason: job.reason, exitCode: null });
      return;
    }
    void this.startAttempt(backend, pl, marker);
  }

  // ---- scheduling ---------------------------------------------------------------------------------------------

  /** Asks for a placement pass soon; many calls in one tick make one pass. */
  kick(): void {
    if (this.passQueued || this.closed) return;
    this.passQueued = true;
    setImmediate(() => {
      this.passQueued = false;
      try {
        this.pass();
      } catch (err) {
        this.d.log.error('scheduling pass failed', { err });
      }
    });
  }

  private pass(): void {
    const now = this.clock.now();
    const holding = this.allocations();
    for (const backend of this.backends.values()) {
      const waiting = [...this.active.values()].filter((j) => j.state === 'queued' && !this.current.has(j.id) && (this.notBefore.get(j.id) ?? 0) <= now && this.backendFor(j) === backend);
      if (waiting.length === 0) continue;
      // Served in the fair order between users (core/fairness.ts); a user at the GPU cap waits.
      const queued = fairOrder(waiting, this.shares());
      const reqs = queued.map((job) => ({ job, avoid: avoidOf(this.attemptsOf(job)) }));
      const cap = this.d.config.limits.maxRunningGpus;
      const held = this.gpusHeld();
      const placed = backend.place(reqs, holding);
      // Online jobs left waiting: the orchestration may free GPUs for them by checkpointing offline jobs (preemption).
      if (this.moves && queued.some((j) => j.queue === 'online')) this.moves.unplaced(queued.filter((j) => j.queue === 'online' && !placed.some((p) => p.jobId === j.id)));
      for (const pl of placed) {
        const owner = this.active.get(pl.jobId)?.owner ?? '';
        const gpus = this.active.get(pl.jobId)?.resources.gpus ?? 0;
        if (cap && gpus && (held.get(owner) ?? 0) + gpus > cap) continue;
        held.set(owner, (held.get(owner) ?? 0) + gpus);
        this.served.set(owner, ++this.servedCount);
        void this.startAttempt(backend, pl);
      }
    }
  }

  /** What starting and running attempts hold on the pool's hosts. */
  private allocations(): Allocation[] {
    const out: Allocation[] = [];
    for (const j of this.active.values()) {
      if (j.host && (j.state === 'starting' || j.state === 'running') && this.backendFor(j)?.knows(j.host)) {
        out.push({ jobId: j.id, host: j.host, gpuIndices: j.gpuIndices, cpus: j.resources.cpus, memoryMiB: j.resources.memoryMiB });
      }
    }
    if (this.moves) out.push(...this.moves.reserved());
    return out;
  }

  /** 1-based positions of jobs waiting for a place, per backend and queue. */
  /** Positions in the fair order the scheduler serves (core/fairness.ts), per backend: users see what will happen. */
  private queuePositions(): Map<string, number> {
    const byBackend = new Map<string, StoredJob[]>();
    for (const j of this.active.values()) {
      if (j.state !== 'queued' || this.current.has(j.id)) continue;
      const key = j.backend ?? '';
      byBackend.set(key, [...(byBackend.get(key) ?? []), j]);
    }
    const pos = new Map<string, number>();
    const shares = this.shares();
    for (const jobs of byBackend.values()) for (const [id, n] of fairPositions(jobs, shares)) pos.set(id, n);
    return pos;
  }

  /** One job's position without sorting the whole queue (submit answers with it, so it must stay cheap). */
  private queuePosition(job: StoredJob): number | undefined {
    if (this.current.has(job.id)) return undefined;
    const same: FairJob[] = [];
    for (const j of this.active.values()) if (j.state === 'queued' && j.backend === job.backend && !this.current.has(j.id)) same.push(j);
    return fairPosition(job, same, this.shares());
  }

  /** Starting or running jobs per user, and when each was last served: the fair order's inputs. */
  private shares(): { running: Map<string, number>; served: Map<string, number> } {
    const n = new Map<string, number>();
    for (const j of this.active.values()) if (j.state !== 'queued') n.set(j.owner, (n.get(j.owner) ?? 0) + 1);
    return { running: n, served: this.served };
  }

  /**
   * Why a queued job waits when the per-user GPU cap (limits.maxRunningGpus) holds it back, as pass() decides it;
   * undefined when the cap does not hold it. `held`: gpusHeld(), when the caller has it already.
   */
  private capReason(job: StoredJob, held?: Map<string, number>): string | undefined {
    const cap = this.d.config.limits.maxRunningGpus;
    if (!cap || !job.resources.gpus || job.state !== 'queued' || this.current.has(job.id)) return undefined;
    const n = (held ?? this.gpusHeld()).get(job.owner) ?? 0;
    if (n + job.resources.gpus <= cap) return undefined;
    return `waiting: ${job.owner}'s running jobs hold ${n} GPU${n === 1 ? '' : 's'}, and one user may hold at most ${cap} at once (limits.maxRunningGpus)`;
  }

  /** GPUs each user's starting and running jobs hold (limits.maxRunningGpus). */
  private gpusHeld(): Map<string, number> {
    const n = new Map<string, number>();
    for (const j of this.active.values()) if (j.state !== 'queued') n.set(j.owner, (n.get(j.owner) ?? 0) + j.gpuIndices.length);
    return n;
  }

  // ---- attempts -------------------------------------------------------------------------------------------------

  /** The job's attempts; a job stored before attempts existed shows its one run as attempt 1. */
  private attemptsOf(job: StoredJob): StoredAttempt[] {
    const stored = this.d.store.attempts(job.id);
    if (stored.length || (!job.host && !job.runtimeRef && !job.startedAt)) return stored;
    const ended = isFinal(job.state);
    return [{ n: 1, host: job.host, gpuIndices: job.gpuIndices, runtimeRef: job.runtimeRef, startedAt: job.startedAt, endedAt: ended ? job.endedAt : null, state: ended ? job.state : null, fault: null, reason: ended ? job.reason : null, exitCode: job.exitCode, logOffset: 0, evidence: {} }];
  }

  private currentAttempt(job: StoredJob): StoredAttempt | undefined {
    const all = this.attemptsOf(job);
    const last = all[all.length - 1];
    return last && !last.endedAt ? last : undefined;
  }

  /** Attempts a job has, at most: one, its restarts, and one more for each move. */
  private maxAttempts(job: StoredJob, atts: StoredAttempt[] = this.attemptsOf(job)): number {
    return (job.restarts ?? 0) + 1 + movesIn(atts);
  }

  /** movesIn() of the job's attempts. */
  private movesOf(job: StoredJob): number {
    return movesIn(this.attemptsOf(job));
  }


  private events(jobId: string, n: number): AttemptEvents {
    return {
      isCurrent: () => this.current.get(jobId)?.n === n,
      pending: (reason) => {
        const job = this.active.get(jobId);
        if (job && this.current.get(jobId)?.n === n && !job.stopIntent && job.reason !== reason) this.update(jobId, { reason });
      },
      running: (where) => this.markRunning(jobId, n, where),
    };
  }

  private async startAttempt(backend: Backend, pl: AttemptPlacement, marker?: string): Promise<void> {
    const job0 = this.active.get(pl.jobId);
    if (!job0) return;
    const prior = this.attemptsOf(job0);
    const last = prior[prior.length - 1];
    // An attempt that never got started (the broker stopped first) is tried again under its own number.
    const n = last ? (last.endedAt ? last.n + 1 : last.n) : 1;
    const previous = prior.filter((a) => a.n < n).pop();
    // A move's marker says where the job runs now, so it is written once the start there has worked (a start that
    // fails writes none; the fallback's own marker follows). Pool runtimes append output only from wait(), after it.
    // An attempt tried again under its number still owes its move's marker if the broker stopped before writing it.
    const size = this.d.logs.size(job0.id);
    const owed = n === last?.n ? !!marker && size < last.logOffset : n > 1 && !!previous && !!last?.endedAt;
    const line = owed ? marker ?? attemptMarker(n, this.maxAttempts(job0), previous!) : undefined;
    const held = line && marker ? this.d.logs.lineText(job0.id, line) : undefined;
    if (line && !held) this.d.logs.appendLine(job0.id, line);
    const logOffset = held ? size + Buffer.byteLength(held) : n === last?.n ? last.logOffset : this.d.logs.size(job0.id);
    const attempt: StoredAttempt = { n, host: pl.host, gpuIndices: pl.gpuIndices, runtimeRef: null, startedAt: null, endedAt: null, state: null, fault: null, reason: null, exitCode: null, logOffset, evidence: {} };
    this.d.store.putAttempt(job0.id, attempt);
    const ac = new AbortController();
    this.current.set(job0.id, { n, ac });
    this.notBefore.delete(job0.id);
    const job = pl.host ? this.update(job0.id, { state: 'starting', reason: `placed on ${pl.host}`, host: pl.host, gpuIndices: pl.gpuIndices, runtimeRef: null }) : job0;
    if (!job) return;
    const log = this.d.log.child({ job: job.id, attempt: n });
    const { attemptEnv, env } = this.attemptInputs(job, n, pl.gpuIndices, previous?.fault ?? null);
    const ev = this.events(job.id, n);
    let ref: Record<string, unknown>;
    try {
      // Checked again: a folder on the path may have been swapped for a symlink since the submit.
      if (this.d.workspaceGate && job.workspaceFrom !== 'client') this.d.workspaceGate(job.owner, job.workspace);
      await this.moves?.prepareStart(job, n, pl.host);
      const moved = this.moves?.movedStart(job, n);
      ref = await backend.start({ job: { ...job, env: { ...job.env, ...attemptEnv } }, n, host: pl.host, gpuIndices: pl.gpuIndices, logOffset, env, ...(moved ? { moved } : {}) }, ev);
    } catch (err) {
      if (!ev.isCurrent()) return;
      log.error('job failed to start', { err });
      // Its marker was never written: the attempt's output (none) begins where the log ends.
      const now = this.active.get(job.id);
      const att = held && now && this.currentAttempt(now);
      if (att) this.d.store.putAttempt(job.id, { ...att, logOffset: this.d.logs.size(job.id) });
      const msg = isGpurunError(err) ? err.message : String((err as Error).message ?? err);
      this.attemptEnded(job.id, n, { startError: msg });
      return;
    }
    if (!ev.isCurrent()) {
      // Cancelled (and finished) while it was starting: stop what was started.
      void backend.stop(job, { ...attempt, runtimeRef: ref }, this.d.config.killGraceMs).catch(() => {});
      return;
    }
    if (held) this.d.logs.append(job.id, held);
    this.d.store.putAttempt(job.id, { ...this.currentAttempt(this.active.get(job.id)!)!, runtimeRef: ref });
    const current = this.update(job.id, { runtimeRef: ref });
    log.info('attempt started', { host: pl.host, gpus: pl.gpuIndices });
    if (current) this.follow(current, n);
    // Cancelled while it was starting: stop it now that there is something to stop.
    if (current?.stopIntent) void backend.stop(current, this.currentAttempt(current)!, this.d.config.killGraceMs).catch(() => {});
  }

  /**
   * The variables gpurun gives attempt `n` of a job (GPURUN_ATTEMPT, the previous attempt's fault, a move's), and
   * the whole environment of its start on `gpuIndices`. A move prepares its next attempt's start with these too.
   */
  attemptInputs(job: StoredJob, n: number, gpuIndices: number[], previousFault: string | null): { attemptEnv: Record<string, string>; env: Record<string, string> } {
    const attemptEnv: Record<string, string> = { GPURUN_ATTEMPT: String(n), ...(previousFault ? { GPURUN_PREVIOUS_FAULT: previousFault } : {}), ...this.moves?.attemptEnv(job, n) };
    return { attemptEnv, env: jobEnv({ base: this.d.baseEnv, job: job.env, jobId: job.id, gpuIndices, broker: attemptEnv }) };
  }

  /** The backend says the attempt runs: the job is running, and its time limit counts from now. */
  private markRunning(jobId: string, n: number, where: { host: string | null; reason: string }): void {
    const job = this.active.get(jobId);
    if (!job || this.current.get(jobId)?.n !== n) return;
    const att = this.currentAttempt(job);
    const now = this.now();
    if (att && (!att.startedAt || (where.host && where.host !== att.host))) this.d.store.putAttempt(jobId, { ...att, startedAt: att.startedAt ?? now, ...(where.host ? { host: where.host } : {}) });
    const after = n > 1 ? this.afterWords(job, n) : '';
    const running = this.update(jobId, {
      ...(job.stopIntent ? {} : { reason: `${where.reason}${after}` }),
      ...(where.host ? { host: where.host } : {}),
      ...(job.state !== 'running' ? { state: 'running' as const } : {}),
      ...(job.startedAt ? {} : { startedAt: now }),
    });
    if (running && job.state !== 'running') this.armTimeLimit(running);
    if (running) this.moves?.running(running, n);
  }

  /** " · attempt 2/4 · after host_lost on gpu1 (unreachable 72 s)" for a job on a later attempt. */
  private afterWords(job: StoredJob, n: number): string {
    const atts = this.attemptsOf(job);
    const prev = atts.find((a) => a.n === n - 1);
    const words = attemptWords({ n, of: this.maxAttempts(job, atts), moves: movesIn(atts.filter((a) => a.n < n)) });
    return `${words ? ` · ${words}` : ''}${prev ? ` · after ${describeEnd(prev)}` : ''}`;
  }


  /** Waits for the attempt's end; arms the time limit of a running job. */
  private follow(job: StoredJob, n: number): void {
    const cur = this.current.get(job.id);
    const backend = this.backendFor(job);
    const att = this.currentAttempt(job);
    if (!cur || !backend || !att) return;
    if (job.state === 'running') this.armTimeLimit(job);
    backend.wait(job, att, cur.ac.signal, this.events(job.id, n)).then(
      (end) => this.attemptEnded(job.id, n, end),
      (err) => {
        if (!cur.ac.signal.aborted) this.d.log.error('waiting for job failed', { job: job.id, err });
      },
    );
  }

  /** The limit counts running time over all attempts: what earlier attempts used is taken off this one's. */
  private armTimeLimit(job: StoredJob): void {
    const limit = job.resources.timeLimitSec;
    this.timers.get(job.id)?.cancel();
    if (!limit || job.stopIntent) return;
    const due = limit * 1000 - usedMs(this.attemptsOf(job), this.clock.now());
    this.timers.set(job.id, this.clock.after(Math.max(0, due), () => this.requestStop(job.id, 'timeout', `stopped after reaching its time limit of ${formatDuration(limit)}${(this.currentAttempt(job)?.n ?? 1) > 1 ? ' (running time over all attempts)' : ''}`)));
  }

  private requestStop(id: string, intent: StopIntent, reason: string): void {
    const job = this.active.get(id);
    if (!job || job.stopIntent) return;
    const updated = this.update(id, { stopIntent: intent, reason });
    const att = updated && this.currentAttempt(updated);
    const backend = updated && this.backendFor(updated);
    if (updated && att?.runtimeRef && backend) void backend.stop(updated, att, this.d.config.killGraceMs).catch((err) => this.d.log.error('stop failed', { job: id, err }));
  }

  /** An attempt ended: classify, record it on the attempt, then restart the job or finish it. */
  private attemptEnded(id: string, n: number, end: AttemptEnd | { startError: string }): void {
    const job = this.active.get(id);
    // A start that fails after close() (its store is closed): the next broker process recovers the attempt.
    if (!job || this.closed || this.current.get(id)?.n !== n) return;
    const att = this.currentAttempt(job);
    const moved = att && !job.stopIntent ? this.moves?.claimEnd(job, att, end) : null;
    if (att && moved) {
      // A move's checkpoint: the attempt ends "migrated"; the next one is started by the orchestration (startMoved).
      this.current.delete(id);
      this.timers.get(id)?.cancel();
      this.timers.delete(id);
      const at = 'endedAt' in end && end.endedAt ? end.endedAt : this.now();
      this.d.store.putAttempt(id, { ...att, endedAt: at, state: 'cancelled', fault: moved.fault, reason: moved.reason, exitCode: 'exitCode' in end ? end.exitCode : null, evidence: moved.evidence });
      // Preempted: it waits for a place again (and resumes from its checkpoint); moved: startMoved() comes next.
      this.update(id, moved.requeue ? { state: 'queued', reason: moved.reason, host: null, gpuIndices: [], runtimeRef: null } : { state: 'starting', reason: moved.reason, runtimeRef: null });
      this.d.log.info('attempt ended for a move', { job: id, attempt: n, reason: moved.reason });
      if (moved.requeue) this.kick();
      return;
    }
    const o = classify({ end, stopIntent: job.stopIntent, stopReason: job.reason, ...('slurm' in end && end.slurm ? { slurm: end.slurm } : {}), restartOnExit: job.restartOnExit ?? [], host: att?.host ?? job.host });
    const endedAt = 'endedAt' in end && end.endedAt ? end.endedAt : this.now();
    this.current.delete(id);
    this.timers.get(id)?.cancel();
    this.timers.delete(id);
    const ref = 'runtimeRef' in end && end.runtimeRef ? end.runtimeRef : att?.runtimeRef ?? null;
    if (ref && ref !== att?.runtimeRef) this.update(id, { runtimeRef: ref });
    if (att) this.d.store.putAttempt(id, { ...att, runtimeRef: ref, startedAt: att.startedAt ?? (o.state === 'succeeded' ? endedAt : null), endedAt, state: o.state, fault: o.fault, reason: o.reason, exitCode: o.exitCode, evidence: o.evidence });
    this.d.log.info('attempt ended', { job: id, attempt: n, state: o.state, fault: o.fault, reason: o.reason, restartable: o.restartable });
    if (o.fault === 'host_lost' && att?.runtimeRef) this.fence(job, { ...att, runtimeRef: att.runtimeRef });

    const decision = decideRestart(o, n - this.movesOf(job), job.restarts ?? 0, this.backoff());
    if (decision.restart) {
      const used = usedMs(this.attemptsOf(job), this.clock.now());
      if (job.resources.timeLimitSec && used >= job.resources.timeLimitSec * 1000) {
        this.finish(id, { state: 'timed_out', reason: `${o.reason}; no time left for another attempt (time limit ${formatDuration(job.resources.timeLimitSec)} over all attempts)`, exitCode: o.exitCode }, endedAt);
        return;
      }
      const delay = decision.delayMs;
      const words = `restarting: attempt ${decision.next}/${this.maxAttempts(job)} in ${formatDuration(Math.ceil(delay / 1000))} after ${o.fault} on ${att?.host ?? 'its host'} (${o.reason})`;
      this.notBefore.set(id, this.clock.now() + delay);
      this.update(id, { state: 'queued', reason: words, host: null, gpuIndices: [], runtimeRef: null, exitCode: o.exitCode, ...(job.stopIntent === 'requeue' ? { stopIntent: null } : {}) });
      this.d.log.info('restarting job', { job: id, next: decision.next, delayMs: delay, fault: o.fault });
      this.timers.set(id, this.clock.after(delay, () => this.kick()));
      return;
    }
    // A job so quick that nobody saw it run (a cluster's poll) still has a start.
    if (o.state === 'succeeded' && !job.startedAt) this.update(id, { startedAt: endedAt });
    const why = decision.why && o.restartable ? ` (not restarted: ${decision.why})` : '';
    this.finish(id, { state: o.state, reason: `${o.reason}${why}`, exitCode: o.exitCode }, endedAt);
  }

  /** Records an end on the job's current attempt (for ends the broker decides itself: cancel while queued). */
  private endAttemptRecord(job: StoredJob, o: Pick<Outcome, 'state' | 'fault' | 'reason' | 'exitCode' | 'evidence'>): void {
    const att = this.currentAttempt(job);
    if (att) this.d.store.putAttempt(job.id, { ...att, endedAt: this.now(), state: o.state, fault: o.fault, reason: o.reason, exitCode: o.exitCode, evidence: o.evidence });
  }

  /**
   * Fencing: an attempt given up on because its host was lost may still run there. It is stopped and removed as soon
   * as the host answers; its follower has ended, so nothing it prints reaches the job's log.
   */
  private fence(job: StoredJob, att: StoredAttempt): void {
    const backend = this.backendFor(job);
    if (!backend) return;
    const ac = new AbortController();
    this.discarding.add(ac);
    backend.discard(job, att, ac.signal).then(
      () => this.d.log.info('stopped an attempt given up on', { job: job.id, attempt: att.n, host: att.host }),
      (err) => this.d.log.warn('could not stop an attempt given up on', { job: job.id, attempt: att.n, err }),
    ).finally(() => this.discarding.delete(ac));
  }

  private finish(id: string, f: { state: Job['state']; reason: string; exitCode: number | null }, endedAt?: string): void {
    this.timers.get(id)?.cancel();
    this.timers.delete(id);
    this.current.get(id)?.ac.abort(new Error('job ended'));
    this.current.delete(id);
    this.notBefore.delete(id);
    const job = this.update(id, { ...f, endedAt: endedAt ?? this.now() });
    this.active.delete(id);
    if (job) this.d.log.info('job ended', { job: id, state: f.state, exitCode: f.exitCode, reason: f.reason });
    this.kick();
  }

  /** After a broker restart: follow attempts in progress again, settle those caught mid-start, resume backoffs. */
  private recover(job: StoredJob): void {
    const backend = this.backendFor(job);
    if (!backend) {
      this.finish(job.id, { state: 'failed', reason: `its backend "${job.backend}" is no longer in the broker config`, exitCode: null });
      return;
    }
    let att = this.currentAttempt(job);
    if (att?.host && !backend.knows(att.host)) {
      this.finish(job.id, { state: 'failed', reason: `its host ${att.host} is no longer in the broker config`, exitCode: null });
      return;
    }
    if (!att) {
      const last = this.attemptsOf(job).pop();
      if (last?.fault === 'migrated' && this.moves?.resumeMove(job, last)) return;
      if (last?.endedAt) {
        const at = Date.parse(last.endedAt) + backoffMs(last.n, this.backoff());
        this.notBefore.set(job.id, at);
        this.timers.set(job.id, this.clock.after(at - this.clock.now(), () => this.kick()));
      }
      return;
    }
    // A moved attempt whose marker was held for its start when the broker stopped: the marker first, then its output.
    if (this.d.logs.size(job.id) < att.logOffset) {
      const n = att.n;
      const prev = this.attemptsOf(job).find((a) => a.n === n - 1);
      const mv = prev?.evidence.move;
      if (prev) this.d.logs.appendLine(job.id, mv ? moveMarker(mv, mv.fellBack) : attemptMarker(n, this.maxAttempts(job), prev));
      att = { ...att, logOffset: this.d.logs.size(job.id) };
      this.d.store.putAttempt(job.id, att);
    }
    const ac = new AbortController();
    this.current.set(job.id, { n: att.n, ac });
    const ev = this.events(job.id, att.n);
    void backend.recover(job, att, ev, this.attemptsOf(job).filter((a) => a.n < att.n)).then(
      (ref) => {
        if (!ev.isCurrent()) return;
        const now = this.active.get(job.id)!;
        if (!ref) {
          this.current.delete(job.id);
          // A move's destination that was not started yet: the move goes on from its checkpoint (copy, start).
          const prev = this.attemptsOf(now).find((a) => a.n === att.n - 1);
          if (prev?.fault === 'migrated' && this.moves?.resumeMove(now, prev)) return;
          // Nothing was started: it waits for a place again, under the same attempt number.
          this.update(job.id, { state: 'queued', reason: 'requeued: the broker stopped while it was starting, before it ran', host: null, gpuIndices: [], runtimeRef: null });
          this.kick();
          return;
        }
        this.d.store.putAttempt(job.id, { ...this.currentAttempt(now)!, runtimeRef: ref });
        const updated = this.update(job.id, { runtimeRef: ref }) ?? now;
        this.d.log.info('following job again after restart', { job: job.id, attempt: att.n });
        this.follow(updated, att.n);
        if (updated.stopIntent) void backend.stop(updated, { ...att, runtimeRef: ref }, this.d.config.killGraceMs).catch(() => {});
      },
      (err) => {
        this.d.log.error('could not recover a job', { job: job.id, err });
        if (ev.isCurrent()) this.attemptEnded(job.id, att.n, { lost: `the broker could not find it again after a restart: ${(err as Error).message ?? err}` });
      },
    );
  }

  private update(id: string, patch: Parameters<Store['updateJob']>[1]): StoredJob | undefined {
    const job = this.d.store.updateJob(id, patch, this.now());
    if (!job) return undefined;
    if (this.active.has(id)) this.active.set(id, job);
    this.publish(job);
    return job;
  }

  private publish(job: StoredJob): void {
    if (this.listenerCount('job') > 0) this.emit('job', this.view(job));
  }

  private view(job: StoredJob, positions?: Map<string, number>, held?: Map<string, number>): Job {
    const { seq: _seq, runtimeRef: _ref, stopIntent: _stop, ...pub } = job;
    const out: Job = { ...pub };
    const atts = this.d.store.attempts(job.id);
    if (atts.length) {
      const moves = movesIn(atts);
      out.attempt = { n: atts[atts.length - 1].n + (job.state === 'queued' && atts[atts.length - 1].endedAt ? 1 : 0), of: this.maxAttempts(job, atts), ...(moves ? { moves } : {}) };
    }
    const move = this.moves?.view(job.id);
    if (move) out.move = move;
    const backend = this.backendFor(job);
    if (!backend) return out;
    // What attempts hold matters only to a waiting job's reason; computing it for every ended job would cost a list.
    const d = backend.describe(job, job.state === 'queued' ? this.allocations() : []);
    if (d.cluster) out.cluster = d.cluster;
    if (d.reason) out.reason = d.reason;
    if (job.state === 'queued') {
      // A job waiting only for a place says when it is the GPU cap that holds it (a restart's backoff keeps its words).
      const capped = d.reason !== undefined || /^(submitted|waiting)/.test(job.reason) ? this.capReason(job, held) : undefined;
      if (capped) out.reason = capped;
      const pos = d.queuePosition ?? (positions ? positions.get(job.id) : this.queuePosition(job));
      if (pos !== undefined) out.queuePosition = pos;
    }
    return out;
  }

  // ---- backends ------------------------------------------------------------------------------------------------

  /** The job's backend; undefined when it left the config (the job then fails at the next start). */
  private backendFor(job: StoredJob): Backend | undefined {
    return this.backends.get(job.backend ?? 'hosts');
  }

  /** The backend a submit names, or the default; an unknown name is a bad request that lists the known ones. */
  private backendOf(body: unknown): Backend {
    const asked = typeof body === 'object' && body !== null ? (body as { backend?: unknown }).backend : undefined;
    const name = asked === undefined ? this.d.config.defaultBackend : asked;
    const b = typeof name === 'string' ? this.backends.get(name) : undefined;
    if (!b) {
      throw new GpurunError('E_BAD_REQUEST', `backend: ${JSON.stringify(asked)} is not a backend of this broker; known: ${[...this.backends.keys()].join(', ')}`, { hint: `Leave out --backend for the default (${this.d.config.defaultBackend}).` });
    }
    return b;
  }

  private backoff(): BackoffConfig {
    return this.d.config.restartBackoff;
  }

  private now(): string {
    return isoAt(this.clock);
  }

  private newId(): string {
    for (;;) {
      const bytes = randomBytes(8);
      let id = '';
      for (const b of bytes) id += ID_ALPHABET[b % ID_ALPHABET.length];
      if (!this.active.has(id) && !this.d.store.getJob(id)) return id;
    }
  }
}
