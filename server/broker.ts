/**
 * The broker's service: submit, list, cancel, logs and hosts for the HTTP app, and the loop that places queued jobs,
 * starts them on their runtime, enforces time limits and records how they end. The broker process is the only
 * writer of the store; active jobs are also held in memory so a scheduling pass costs no database reads.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { GpurunError, isGpurunError } from './protocol/errors.ts';
import { isFinal, type HostInfo, type Job, type JobState } from './protocol/jobs.ts';
import type { Store, StoredJob, StopIntent } from './core/store.ts';
import type { ExitInfo, Lost } from './core/runtime.ts';
import { schedule, unsatisfiableReason, waitReason, type Allocation } from './core/scheduler.ts';
import { fairOrder, fairPosition, fairPositions } from './core/fairness.ts';
import { validateSubmit } from './core/submit.ts';
import { formatDuration } from './core/units.ts';
import type { BrokerConfig } from './config.ts';
import type { HostRegistry } from './hosts/registry.ts';
import type { LogFiles } from './logs/logFiles.ts';
import type { Logger } from './logger.ts';
import { HOSTS_BACKEND } from './config.ts';
import type { SlurmClusters } from './slurm/backend.ts';

export interface Principal {
  user: string;
  admin: boolean;
}

export interface BrokerDeps {
  config: BrokerConfig;
  store: Store;
  logs: LogFiles;
  hosts: HostRegistry;
  log: Logger;
  /** Environment every job starts from (the broker's own, usually); job env is laid over it. */
  baseEnv: Record<string, string>;
  /** Slurm clusters (issue 5); absent or empty when the config names none. */
  clusters?: SlurmClusters;
}

const ID_ALPHABET = 'abcdefghijkmnpqrstuvwxyz23456789';
/** How often hosts are probed again (GPUs come and go, e.g. after a driver reset). */
const PROBE_INTERVAL_MS = 30_000;

export class Broker extends EventEmitter<{ job: [Job] }> {
  private readonly active = new Map<string, StoredJob>();
  private readonly waiters = new Map<string, AbortController>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** When each user last had a job started (a counter), for the fair order (core/fairness.ts). */
  private readonly served = new Map<string, number>();
  private servedCount = 0;
  private passQueued = false;
  private closed = false;
  private probeTimer?: NodeJS.Timeout;

  private readonly d: BrokerDeps;

  constructor(deps: BrokerDeps) {
    super();
    this.d = deps;
    this.setMaxListeners(0);
  }

  /** Probes hosts, finds jobs an earlier broker process left running, and starts scheduling. */
  async start(): Promise<void> {
    await this.d.hosts.probeAll();
    for (const job of this.d.store.activeJobs()) this.active.set(job.id, job);
    this.attachClusters();
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
    this.d.clusters?.close();
    clearInterval(this.probeTimer);
    for (const t of this.timers.values()) clearTimeout(t);
    for (const w of this.waiters.values()) w.abort(new Error('broker closing'));
  }

  // ---- API ---------------------------------------------------------------------------------------------------

  submit(p: Principal, body: unknown): Job {
    const caps = this.d.hosts.capacities();
    const cfg = this.d.config;
    const backend = this.backendOf(body); // Slurm backend (issue 5)
    const onCluster = backend !== HOSTS_BACKEND;
    const defaultGpus = cfg.defaults.gpus === 'auto' ? (onCluster || this.d.hosts.totalGpus() > 0 ? 1 : 0) : cfg.defaults.gpus;
    const defaultImage = onCluster && !this.d.clusters!.runsImages(backend) ? undefined : cfg.defaults.image;
    const v = validateSubmit(body, { gpus: defaultGpus, cpus: cfg.defaults.cpus, memoryMiB: cfg.defaults.memoryMiB, image: defaultImage, queues: cfg.queues });
    if (onCluster && v.image && !this.d.clusters!.runsImages(backend)) {
      throw new GpurunError('E_BAD_REQUEST', `image: the cluster ${backend} runs jobs without containers`, { hint: 'Leave out --image, or ask an admin to enable "container": "pyxis" for the cluster.' });
    }
    if (onCluster && v.workspaceFrom === 'client') {
      throw new GpurunError('E_BAD_REQUEST', `workspaceFrom: the cluster ${backend} stages the workspace from the broker; it cannot be served by the client`, { hint: 'Leave out --serve-workspace for cluster jobs.' });
    }
    let usable = caps;
    if (!onCluster && v.workspaceFrom === 'client') {
      const mounting = this.d.hosts.mountingHosts();
      usable = caps.filter((h) => mounting.has(h.name));
      if (usable.length === 0) {
        throw new GpurunError('E_BAD_REQUEST', 'workspaceFrom: "client" needs a host that mounts the workspace (an SSH host), and this broker has none: its hosts run jobs in place', {
          hint: 'Leave out --serve-workspace (set gpurun.workspaceFrom to "broker" in VS Code): this broker reads the workspace itself.',
        });
      }
    }
    const why = onCluster ? null : unsatisfiableReason(usable, v.resources);
    if (why) {
      throw new GpurunError('E_UNSATISFIABLE', why, { hint: 'Ask for fewer GPUs, CPUs or less memory (or another GPU type), or ask an admin to add a larger host.' });
    }
    const now = new Date().toISOString();
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
        backend,
        ...(v.workspaceFrom ? { workspaceFrom: v.workspaceFrom } : {}),
      },
      now,
    );
    this.active.set(job.id, job);
    // Exists from the start, so followers can watch it before the job writes a byte.
    this.d.logs.touch(job.id);
    this.d.log.info('job submitted', { job: job.id, owner: p.user, queue: job.queue, resources: job.resources });
    this.publish(job);
    if (onCluster) this.d.clusters!.submit(job);
    else this.kick();
    return this.view(job);
  }

  /** Newest first, at most `limit`; `before`: only jobs submitted before that job (the cursor of the next page). */
  list(p: Principal, opts: { all: boolean; limit: number; before?: string }): Job[] {
    const owner = p.admin ? undefined : p.user;
    const before = opts.before === undefined ? undefined : this.visible(p, opts.before).seq;
    const endedAfter = opts.all ? undefined : new Date(Date.now() - 86_400_000).toISOString();
    const jobs = this.d.store.listJobs({ ...(owner === undefined ? {} : { owner }), limit: opts.limit, ...(before === undefined ? {} : { beforeSeq: before }), ...(endedAfter ? { activeOrEndedAfter: endedAfter } : {}) });
    const positions = this.queuePositions();
    return jobs.map((j) => this.view(this.active.get(j.id) ?? j, positions));
  }

  /** A job the principal may see; others' jobs are "not found" so their ids leak nothing. */
  get(p: Principal, id: string): Job {
    const job = this.visible(p, id);
    return { ...this.view(job), transitions: this.d.store.transitions(id) };
  }

  async cancel(p: Principal, id: string): Promise<Job> {
    const job = this.visible(p, id);
    if (isFinal(job.state)) {
      throw new GpurunError('E_CONFLICT', `job ${id} has already ended (${job.state})`, { hint: `Its output stays readable: gpurun logs ${id}` });
    }
    const by = `cancelled by ${p.user}`;
    if (job.state === 'queued') {
      this.finish(job.id, { state: 'cancelled', reason: `${by} while queued`, exitCode: null });
      if (this.onCluster(job)) await this.d.clusters!.cancel(job).catch((err) => this.d.log.error('scancel failed', { job: id, err }));
    } else {
      this.requestStop(job.id, 'cancel', by);
    }
    return this.get(p, id);
  }

  hosts(): HostInfo[] {
    return this.d.hosts.info(this.allocations());
  }

  /** Checks access and returns the job, for the logs endpoint. */
  visible(p: Principal, id: string): StoredJob {
    const job = this.active.get(id) ?? this.d.store.getJob(id);
    if (!job || (!p.admin && job.owner !== p.user)) {
      throw new GpurunError('E_NOT_FOUND', `no job ${id}`, { hint: 'List your jobs with: gpurun ls --all' });
    }
    return job;
  }

  /** Jobs queued, starting or running (for limits and the output cap). */
  activeJobs(): StoredJob[] {
    return [...this.active.values()];
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
    const queued = this.hostQueued();
    if (queued.length === 0) return;
    const held = new Map<string, number>();
    for (const j of this.active.values()) if (j.state !== 'queued' && !this.onCluster(j)) held.set(j.owner, (held.get(j.owner) ?? 0) + j.gpuIndices.length);
    const placements = schedule(this.d.hosts.capacities(), this.allocations(), fairOrder(queued, this.shares()), { max: this.d.config.limits.maxRunningGpus, held });
    for (const pl of placements) {
      const now = new Date().toISOString();
      const owner = this.active.get(pl.jobId)?.owner;
      if (owner !== undefined) this.served.set(owner, ++this.servedCount);
      const job = this.update(pl.jobId, { state: 'starting', reason: `placed on ${pl.host}`, host: pl.host, gpuIndices: pl.gpuIndices }, now);
      if (job) void this.launch(job);
    }
  }

  private allocations(): Allocation[] {
    const out: Allocation[] = [];
    for (const j of this.active.values()) {
      if (j.host && (j.state === 'starting' || j.state === 'running') && !this.onCluster(j)) {
        out.push({ jobId: j.id, host: j.host, gpuIndices: j.gpuIndices, cpus: j.resources.cpus, memoryMiB: j.resources.memoryMiB });
      }
    }
    return out;
  }

  /** Positions in the order the scheduler serves (core/fairness.ts), so users are shown what will happen. */
  private queuePositions(): Map<string, number> {
    return fairPositions(this.hostQueued(), this.shares());
  }

  /** One job's position without sorting the whole queue (submit answers with it, so it must stay cheap). */
  private queuePosition(job: StoredJob): number {
    return fairPosition(job, this.hostQueued(), this.shares());
  }

  /** Why a job of a user at the per-user GPU cap (limits.maxRunningGpus) waits; undefined when it is not held back by it. */
  private capReason(job: StoredJob): string | undefined {
    const cap = this.d.config.limits.maxRunningGpus;
    if (!cap || !job.resources.gpus) return undefined;
    let held = 0;
    for (const j of this.active.values()) if (j.owner === job.owner && j.state !== 'queued' && !this.onCluster(j)) held += j.gpuIndices.length;
    if (held + job.resources.gpus <= cap) return undefined;
    return `waiting: ${job.owner}'s running jobs hold ${held} GPU${held === 1 ? '' : 's'}, and one user may hold at most ${cap} at once (limits.maxRunningGpus)`;
  }

  private hostQueued(): StoredJob[] {
    return [...this.active.values()].filter((j) => j.state === 'queued' && !this.onCluster(j));
  }

  /** Starting or running host jobs per user, and when each was last served: the fair order's inputs. */
  private shares(): { running: Map<string, number>; served: Map<string, number> } {
    const n = new Map<string, number>();
    for (const j of this.active.values()) if (j.state !== 'queued' && !this.onCluster(j)) n.set(j.owner, (n.get(j.owner) ?? 0) + 1);
    return { running: n, served: this.served };
  }

  private async launch(job: StoredJob): Promise<void> {
    const log = this.d.log.child({ job: job.id });
    const env: Record<string, string> = {
      ...this.d.baseEnv,
      PYTHONUNBUFFERED: '1',
      ...job.env,
      // Exactly the assigned GPUs, numbered as nvidia-smi numbers them.
      CUDA_DEVICE_ORDER: 'PCI_BUS_ID',
      CUDA_VISIBLE_DEVICES: job.gpuIndices.join(','),
      GPURUN_JOB_ID: job.id,
    };
    try {
      const rt = this.d.hosts.runtimeFor(job.host!);
      if (job.workspaceFrom === 'client' && !rt.mountsWorkspace) {
        throw new GpurunError('E_BAD_REQUEST', `host ${job.host} runs jobs without a workspace mount (${rt.kind} runtime); a workspace served by the client needs an SSH host`);
      }
      const ref = await rt.start({ job, host: job.host!, gpuIndices: job.gpuIndices, logPath: this.d.logs.path(job.id), env });
      const current = this.active.get(job.id);
      const now = new Date().toISOString();
      const running = this.update(job.id, { state: 'running', reason: runningReason(job), startedAt: now, runtimeRef: ref }, now);
      log.info('job started', { host: job.host, gpus: job.gpuIndices });
      if (running) this.follow(running);
      // Cancelled while it was starting: stop it now that there is something to stop.
      if (current?.stopIntent) void this.d.hosts.runtimeFor(job.host!).stop(ref, this.d.config.killGraceMs);
    } catch (err) {
      log.error('job failed to start', { err });
      const msg = isGpurunError(err) ? err.message : String((err as Error).message ?? err);
      this.finish(job.id, { state: 'failed', reason: `could not start: ${msg}`, exitCode: null });
    }
  }

  /** Waits for the job's end and arms its time limit. */
  private follow(job: StoredJob): void {
    const ac = new AbortController();
    this.waiters.set(job.id, ac);
    this.armTimeLimit(job);
    this.d.hosts.runtimeFor(job.host!).wait(job.runtimeRef!, ac.signal).then(
      (end) => this.ended(job.id, end),
      (err) => {
        if (!ac.signal.aborted) this.d.log.error('waiting for job failed', { job: job.id, err });
      },
    );
  }

  private armTimeLimit(job: StoredJob): void {
    const limit = job.resources.timeLimitSec;
    if (!limit || !job.startedAt || job.stopIntent) return;
    const due = Date.parse(job.startedAt) + limit * 1000 - Date.now();
    const t = setTimeout(() => this.requestStop(job.id, 'timeout', `stopped after reaching its time limit of ${formatDuration(limit)}`), Math.max(0, due));
    t.unref();
    this.timers.set(job.id, t);
  }

  private requestStop(id: string, intent: StopIntent, reason: string): void {
    const job = this.active.get(id);
    if (!job || job.stopIntent) return;
    const updated = this.update(id, { stopIntent: intent, reason }, new Date().toISOString());
    if (updated && this.onCluster(updated)) {
      void this.d.clusters!.cancel(updated).catch((err) => this.d.log.error('scancel failed', { job: id, err }));
      return;
    }
    if (updated?.runtimeRef && updated.host) void this.d.hosts.runtimeFor(updated.host).stop(updated.runtimeRef, this.d.config.killGraceMs).catch((err) => this.d.log.error('stop failed', { job: id, err }));
  }

  private ended(id: string, end: ExitInfo | Lost): void {
    const job = this.active.get(id);
    if (!job) return;
    if ('lost' in end) {
      this.finish(id, { state: 'lost', reason: end.lost, exitCode: null });
      return;
    }
    const code = end.exitCode ?? (end.signal ? 128 + signalNumber(end.signal) : null);
    let state: JobState;
    let reason: string;
    if (job.stopIntent === 'cancel') [state, reason] = ['cancelled', job.reason];
    else if (job.stopIntent === 'timeout') [state, reason] = ['timed_out', job.reason];
    else if (job.stopIntent === 'limit') [state, reason] = ['failed', job.reason];
    else if (end.failure) [state, reason] = ['failed', end.failure];
    else if (end.startError) [state, reason] = ['failed', `could not start: ${end.startError}`];
    else if (end.exitCode === 0) [state, reason] = ['succeeded', 'exited with code 0'];
    else if (end.oomKilled) [state, reason] = ['failed', 'killed for running out of memory (OOM)'];
    else if (end.signal) [state, reason] = ['failed', `killed by signal ${end.signal}`];
    else [state, reason] = ['failed', `exited with code ${end.exitCode}`];
    this.finish(id, { state, reason, exitCode: code }, end.endedAt);
  }

  private finish(id: string, f: { state: JobState; reason: string; exitCode: number | null }, endedAt?: string): void {
    const now = new Date().toISOString();
    clearTimeout(this.timers.get(id));
    this.timers.delete(id);
    this.waiters.delete(id);
    const job = this.update(id, { ...f, endedAt: endedAt ?? now }, now);
    this.active.delete(id);
    if (job) this.d.log.info('job ended', { job: id, state: f.state, exitCode: f.exitCode, reason: f.reason });
    this.kick();
  }

  /** After a broker restart: follow running jobs again, settle jobs caught mid-start. */
  private recover(job: StoredJob): void {
    if (this.onCluster(job)) {
      this.d.clusters!.recover(job);
      if (job.state === 'running') this.armTimeLimit(job);
      if (job.stopIntent) void this.d.clusters!.cancel(job).catch(() => {});
    } else if (job.state === 'running' && job.runtimeRef) {
      this.d.log.info('following job again after restart', { job: job.id });
      this.follow(job);
      if (job.stopIntent) void this.d.hosts.runtimeFor(job.host!).stop(job.runtimeRef, this.d.config.killGraceMs);
    } else if (job.state === 'starting' && job.host) {
      void this.recoverStarting(job);
    }
  }

  private async recoverStarting(job: StoredJob): Promise<void> {
    const ref = await this.d.hosts
      .runtimeFor(job.host!)
      .recover?.(job, this.d.logs.path(job.id))
      .catch((err) => {
        this.d.log.error('could not recover a starting job', { job: job.id, err });
        return null;
      });
    if (!ref) {
      this.finish(job.id, { state: 'lost', reason: 'the broker stopped while this job was starting, before it ran; submit it again', exitCode: null });
      return;
    }
    const now = new Date().toISOString();
    const running = this.update(job.id, { state: 'running', reason: runningReason(job), startedAt: now, runtimeRef: ref }, now);
    this.d.log.info('found a job that was starting when the broker stopped', { job: job.id });
    if (running) this.follow(running);
  }

  private update(id: string, patch: Parameters<Store['updateJob']>[1], at: string): StoredJob | undefined {
    const job = this.d.store.updateJob(id, patch, at);
    if (!job) return undefined;
    if (this.active.has(id)) this.active.set(id, job);
    this.publish(job);
    return job;
  }

  private publish(job: StoredJob): void {
    if (this.listenerCount('job') > 0) this.emit('job', this.view(job));
  }

  private view(job: StoredJob, positions?: Map<string, number>): Job {
    const { seq: _seq, runtimeRef: _ref, stopIntent: _stop, ...pub } = job;
    if (this.onCluster(job)) {
      // Slurm backend (issue 5): Slurm's queue position and reason, and what staging copied.
      const info = this.d.clusters!.info(job);
      return { ...pub, cluster: info.cluster, ...(job.state === 'queued' && info.queuePosition !== undefined ? { queuePosition: info.queuePosition } : {}) };
    }
    if (job.state !== 'queued') return pub;
    const pos = positions ? positions.get(job.id) : this.queuePosition(job);
    const reason = this.capReason(job) ?? waitReason(this.d.hosts.capacities(), this.allocations(), job.resources);
    return { ...pub, reason, ...(pos === undefined ? {} : { queuePosition: pos }) };
  }

  // ---- Slurm backend (issue 5) ---------------------------------------------------------------------------------

  private onCluster(job: StoredJob): boolean {
    return !!job.backend && job.backend !== HOSTS_BACKEND && !!this.d.clusters?.has(job.backend);
  }

  /** The backend a submit names, or the default; an unknown name is a bad request that lists the known ones. */
  private backendOf(body: unknown): string {
    const asked = typeof body === 'object' && body !== null ? (body as { backend?: unknown }).backend : undefined;
    if (asked === undefined) return this.d.config.defaultBackend;
    const known = [...(this.d.config.hosts.length ? [HOSTS_BACKEND] : []), ...(this.d.clusters?.names() ?? [])];
    if (typeof asked !== 'string' || !known.includes(asked)) {
      throw new GpurunError('E_BAD_REQUEST', `backend: ${JSON.stringify(asked)} is not a backend of this broker; known: ${known.join(', ')}`, { hint: `Leave out --backend for the default (${this.d.config.defaultBackend}).` });
    }
    return asked;
  }

  /** The cluster backend changes jobs through the broker, so states, events and time limits work as for hosts. */
  private attachClusters(): void {
    this.d.clusters?.attach({
      get: (id) => this.active.get(id),
      update: (id, patch) => {
        const job = this.update(id, patch, new Date().toISOString());
        if (job && patch.state === 'running') this.armTimeLimit(job);
        return job;
      },
      finish: (id, o) => this.finish(id, o),
    });
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

function runningReason(job: StoredJob): string {
  return `running on ${job.host} (${job.gpuIndices.length ? `GPU ${job.gpuIndices.join(',')}` : 'no GPU'})`;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGABRT: 6, SIGFPE: 8, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15 };
function signalNumber(sig: string): number {
  return SIGNALS[sig] ?? 0;
}
