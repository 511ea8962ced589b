/**
 * The move orchestration: takes a running job off its host and on to another with its state (`gpurun migrate`,
 * `gpurun drain`), through a checkpoint method (checkpoint.ts: cooperative here, transparent where a host has it).
 *
 * A move: pick and reserve the destination (its GPUs are held for the job from this moment: the scheduler gives them
 * to nobody else) → pre-copy while the job runs → persist "signalled" on the source attempt → checkpoint (the job
 * stops with its state saved) → the attempt ends `migrated` → final incremental copy → the next attempt starts on the
 * destination, resuming; once it runs, the source's allocation and the reservation go and the source's copy is
 * removed. Before the checkpoint any failure gives the move up with the job untouched; after it, a failed copy resumes
 * the job on the source. Only one attempt ever runs: the next starts after the source's ended. A broker killed in
 * the middle finds the move again in the store: "signalled" in the source attempt's runtimeRef.move, or the ended
 * `migrated` attempt's evidence.move.
 */
import { GpurunError } from '../protocol/errors.ts';
import { isFinal, type HostInfo, type Job, type MoveEvidence, type MoveView } from '../protocol/jobs.ts';
import type { Broker, MoveHooks, Principal } from '../broker.ts';
import type { AttemptEnd } from '../core/backend.ts';
import type { MovedStart } from '../core/runtime.ts';
import { schedule, type Allocation } from '../core/scheduler.ts';
import type { Store, StoredAttempt, StoredJob } from '../core/store.ts';
import type { HostRegistry } from '../hosts/registry.ts';
import type { Logger } from '../logger.ts';
import type { MigrationConfig } from './config.ts';
import type { Checkpointer, HostSide, MoveContext } from './checkpoint.ts';
import { checkpoints, CooperativeCheckpointer } from './cooperative.ts';
import { copyDir } from './copy.ts';
import { CHECKPOINT_EXIT_CODE, hostCheckpointDir } from './checkpoint.ts';
import { CHECKPOINTED_EXIT_CODE } from '../runtimes/criu.ts';
import { moveMarker, moveWords } from './words.ts';
import { TransparentCheckpointer } from './transparent.ts';

type Phase = 'precopy' | 'signalled' | 'copying' | 'starting';

interface Move {
  /** A move to `to`, or a preemption (the job checkpoints and waits for a place again; `to` is unused). */
  kind: 'move' | 'preempt';
  jobId: string;
  /** The source attempt; after a failed start on the destination, that attempt (the next one resumes on the source). */
  n: number;
  /** The source attempt, where `n` moved on (its checkpoint is the one to resume from). */
  sourceN?: number;
  from: string;
  fromGpus: number[];
  to: string;
  gpus: number[];
  cause: string;
  phase: Phase;
  resources: StoredJob['resources'];
  ac: AbortController;
  ended: { promise: Promise<{ at: string }>; resolve(v: { at: string }): void; reject(e: Error): void };
  ev: MoveEvidence;
  /** The move's attempt is to resume on the source (the copy failed, or a checkpoint came after a give-up). */
  fallback?: string;
  /** Found again after a broker restart with the signal already sent. */
  alreadyAsked?: boolean;
  /** A job that does not checkpoint in time is stopped to be restarted from the start, if its policy allows (drain, preemption; never for load). */
  restartIfStuck?: boolean;
  /** The source attempt's runtime handle, whose remains (container, mount) stay after its checkpoint until released. */
  srcRef?: Record<string, unknown>;
  /** A transparent move that falls back: the source's kept container, which the restore goes into. */
  into?: Record<string, unknown>;
  /** The destination's next attempt made ready during the pre-copy (runtime prepare()): after the checkpoint only its start remains. */
  prepared?: Record<string, unknown>;
  /** Taken on by a broker restarted mid-move: what an earlier process prepared at the destination is unknown. */
  restored?: boolean;
}

export interface MoveManagerDeps {
  broker: Broker;
  store: Store;
  hosts: HostRegistry;
  config: MigrationConfig;
  log: Logger;
}

/** The source container's address on its user's network (empty when it has none or cannot be read). */
async function containerAddress(ctx: MoveContext): Promise<string> {
  const container = String(ctx.attempt.runtimeRef?.container ?? '');
  if (!container) return '';
  const r = await ctx.from.exec.exec(['docker', 'inspect', '--format', '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}', container], { timeoutMs: 30_000 }).catch(() => undefined);
  return r?.code === 0 ? (r.stdout.trim().split(/\s+/)[0] ?? '') : '';
}

/** "in containers" or "as plain processes", for a runtime's kind. */
function kindWords(kind: string): string {
  return kind === 'docker' ? 'in containers' : 'as plain processes';
}

function deferred(): Move['ended'] {
  let resolve!: (v: { at: string }) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<{ at: string }>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => {});
  return { promise, resolve, reject };
}

export class MoveManager implements MoveHooks {
  private readonly d: MoveManagerDeps;
  private readonly moves = new Map<string, Move>();
  /** The last move given up per job (shown until the job's next move or end). */
  private readonly givenUp = new Map<string, MoveView>();
  private readonly cooperative = new CooperativeCheckpointer();
  private readonly transparent: TransparentCheckpointer;

  constructor(d: MoveManagerDeps) {
    this.d = d;
    this.transparent = new TransparentCheckpointer((host) => d.hosts.transparentUnavailable(host));
  }

  // ---- requests ---------------------------------------------------------------------------------------------

  /** `POST /v1/jobs/ID/migrate`: the owner or an admin moves a running job (`to`: a host, or the best one). */
  migrate(p: Principal, id: string, to?: string): Job {
    const job = this.d.broker.visible(p, id);
    this.begin(job.id, `gpurun migrate by ${p.user}`, to);
    return this.d.broker.get(p, id);
  }

  /**
   * Starts moving a job; throws a GpurunError (nothing changed) when it cannot move now. Returns the destination.
   * `to`: a host name, or undefined for the host the job fits best (by what is free there).
   */
  begin(id: string, cause: string, to?: string, loadOf?: (host: string) => number, opts: { restartIfStuck?: boolean } = {}): string {
    const cur = this.d.broker.currentOf(id);
    if (!cur) throw new GpurunError('E_CONFLICT', `job ${id} has ended; only a running job can move`);
    const { job, attempt } = cur;
    if (this.moves.has(id)) throw new GpurunError('E_CONFLICT', `job ${id} is already moving (to ${this.moves.get(id)!.to})`, { hint: `Follow it with: gpurun show ${id}` });
    if (job.state !== 'running' || !attempt?.runtimeRef || !job.host) throw new GpurunError('E_CONFLICT', `job ${id} is ${job.state.replace('_', ' ')}, not running; only a running job can move`);
    if ((job.backend ?? 'hosts') !== 'hosts' || !this.movable(job.host)) {
      throw new GpurunError('E_CONFLICT', `job ${id} runs on ${job.host}, which is not an SSH host; only jobs on SSH hosts (Docker or plain processes) can move`, { hint: 'To run it elsewhere, cancel it and submit it again (gpurun run … restarts from its own checkpoint if it keeps one).' });
    }
    // With migration.method "transparent", CRIU checkpoints the container where the job's host can; else the job must.
    const whyNot = this.d.config.method === 'transparent' ? this.transparent.unavailable(job.host) : 'the broker\'s migration.method is "cooperative"';
    if (!checkpoints(job) && whyNot !== null) {
      const also = this.d.config.method === 'transparent' ? `, and ${job.host} cannot checkpoint it transparently (${whyNot})` : '';
      throw new GpurunError('E_CONFLICT', `job ${id} did not say it can checkpoint${also}, so it cannot be moved without losing its progress`, { hint: 'Submit it with gpurun run --checkpoint (it then gets SIGUSR1 and $GPURUN_CHECKPOINT_DIR; see examples/gpurun_checkpoint.py).' });
    }
    const method = whyNot === null ? 'transparent' : 'cooperative';
    const dest = this.destination(job, to, loadOf, method === 'transparent' ? (h) => this.transparent.unavailable(h) : undefined);
    const m: Move = {
      kind: 'move', jobId: id, n: attempt.n, from: job.host, fromGpus: job.gpuIndices, to: dest.host, gpus: dest.gpus, cause, phase: 'precopy',
      resources: job.resources, ac: new AbortController(), ended: deferred(),
      ev: { from: job.host, to: dest.host, gpus: dest.gpus, cause, method }, srcRef: attempt.runtimeRef,
      ...(opts.restartIfStuck ? { restartIfStuck: true } : {}),
    };
    this.moves.set(id, m);
    this.givenUp.delete(id);
    this.d.log.info('moving a job', { job: id, from: m.from, to: m.to, gpus: m.gpus, cause });
    this.d.broker.kick();
    void this.run(m);
    return dest.host;
  }

  /**
   * Where a job can go now: `to` if it fits there, else the fitting Docker host with the least online load
   * (`loadOf`, for load-driven moves), then the most free GPUs; never a host `unfit` gives a reason against.
   */
  private destination(job: StoredJob, to?: string, loadOf: (host: string) => number = () => 0, unfit?: (host: string) => string | null): { host: string; gpus: number[] } {
    const names = this.d.hosts.names();
    if (to !== undefined && !names.includes(to)) throw new GpurunError('E_NOT_FOUND', `no host ${to}`, { hint: 'List the hosts with: gpurun hosts' });
    if (to === job.host) throw new GpurunError('E_BAD_REQUEST', `job ${job.id} already runs on ${to}`, { hint: 'Name another host with --to (gpurun hosts lists them), or leave --to out and the broker picks one.' });
    const why = to !== undefined ? unfit?.(to) : null;
    if (why) throw new GpurunError('E_CONFLICT', `${to} cannot take job ${job.id} transparently: ${why}`, { hint: 'gpurun hosts says how each host can checkpoint.' });
    const holding = this.d.broker.holdings();
    // A job moves between hosts of the same kind: its command ran in a container, or as a plain process.
    const kind = this.d.hosts.runtimeFor(job.host!).kind;
    const caps = this.d.hosts.capacities().filter((c) => c.name !== job.host && (to === undefined || c.name === to) && this.d.hosts.runtimeFor(c.name).kind === kind && !unfit?.(c.name));
    const free = (h: string, n: number) => n - holding.filter((a) => a.host === h).reduce((k, a) => k + a.gpuIndices.length, 0);
    caps.sort((a, b) => loadOf(a.name) - loadOf(b.name) || free(b.name, b.gpus.length) - free(a.name, a.gpus.length));
    for (const c of caps) {
      const [pl] = schedule([c], holding, [{ id: job.id, queue: job.queue, resources: job.resources }]);
      if (pl) return { host: pl.host, gpus: pl.gpuIndices };
    }
    if (to !== undefined) {
      const c = this.d.hosts.capacities().find((x) => x.name === to);
      throw new GpurunError('E_CONFLICT', `${to} cannot take job ${job.id} now: ${!c?.up ? 'it is not up' : this.d.hosts.runtimeFor(to).kind !== kind ? `it runs jobs ${kindWords(this.d.hosts.runtimeFor(to).kind)} and this job runs ${kindWords(kind)}; a job moves only between hosts of the same kind` : 'not enough free GPUs, CPUs or memory there'}`, { hint: 'gpurun hosts shows what is free; leave out --to to let the broker pick.' });
    }
    throw new GpurunError('E_CONFLICT', `no other host can take job ${job.id} now (not enough free GPUs, CPUs or memory)`, { hint: 'gpurun hosts shows what is free.' });
  }

  /** Whether jobs on `host` can move: SSH hosts, Docker or plain processes (not the local host, not a cluster). */
  private movable(host: string): boolean {
    const kind = this.d.hosts.runtimeFor(host).kind;
    return kind === 'docker' || kind === 'ssh-process';
  }

  /** The broker's hosts view. */
  hosts(): HostInfo[] {
    return this.d.broker.hosts();
  }

  // ---- the move ---------------------------------------------------------------------------------------------

  private side(host: string): HostSide {
    const s = this.d.hosts.sshSide(host);
    if (!s) throw new GpurunError('E_CONFLICT', `${host} is not an SSH host`);
    return { host, ...s };
  }

  private context(m: Move): MoveContext {
    const cur = this.d.broker.currentOf(m.jobId);
    const job = cur?.job ?? this.d.store.getJob(m.jobId)!;
    const attempt = this.d.store.attempts(m.jobId).find((a) => a.n === (m.sourceN ?? m.n))!;
    const log = this.d.log.child({ job: m.jobId, move: `${m.from}→${m.to}` });
    const signalJob = async (sig: string): Promise<void> => {
      const rt = this.d.hosts.runtimeFor(m.from);
      if (!rt.signal || !attempt.runtimeRef) throw new GpurunError('E_CONFLICT', `job ${m.jobId} cannot be signalled on ${m.from}`);
      await rt.signal(attempt.runtimeRef, sig);
    };
    return { job, attempt, from: this.side(m.from), to: this.side(m.to), deadlineMs: this.d.config.checkpointTimeoutMs, signal: m.ac.signal, sourceEnded: m.ended.promise, ...(m.alreadyAsked ? { alreadyAsked: true } : {}), signalJob, log: (msg, f) => log.info(msg, f) };
  }

  /** The move's checkpoint method (a late cooperative checkpoint has no move). */
  private checkpointer(m?: Move): Checkpointer {
    return m?.ev.method === 'transparent' ? this.transparent : this.cooperative;
  }

  /** Runs a move from its phase on (a move found again after a broker restart starts later than "precopy"). */
  private async run(m: Move): Promise<void> {
    const cp = this.checkpointer(m);
    try {
      if (m.phase === 'precopy' && m.kind === 'preempt') {
        this.persistSignalled(m);
        m.phase = 'signalled';
      }
      if (m.phase === 'precopy') {
        const ctx = this.context(m);
        const ip = await containerAddress(ctx);
        if (ip) m.ev.ip = ip;
        // The destination is made ready while the folder is copied: a host that cannot run the job (its image
        // missing, its container refused) gives the move up here, with the job still running on the source.
        const [pre, ready] = await Promise.allSettled([cp.precopy(ctx), this.prepareDestination(m, ctx)]);
        if (pre.status === 'rejected') throw pre.reason;
        if (ready.status === 'rejected') throw new GpurunError('E_CONFLICT', `${m.to} cannot start the job: ${(ready.reason as Error).message}`);
        m.ev.precopyBytes = pre.value.bytes;
        if (!this.d.broker.currentOf(m.jobId)?.attempt?.runtimeRef || this.d.broker.currentOf(m.jobId)?.attempt?.n !== m.n) throw new GpurunError('E_CONFLICT', 'the job stopped running before its checkpoint');
        // Its container and mount stay after its checkpoint exit, until it runs elsewhere: not part of the downtime;
        // and a transparent move that cannot start on the destination restores into that very container.
        if (m.kind === 'move' && m.srcRef) this.d.hosts.runtimeFor(m.from).holdOnExit?.(m.srcRef, cp.method === 'cooperative' ? CHECKPOINT_EXIT_CODE : CHECKPOINTED_EXIT_CODE);
        this.persistSignalled(m);
        m.phase = 'signalled';
      }
      if (m.phase === 'signalled') {
        const ctx = this.context(m);
        const { at } = await cp.checkpoint(ctx);
        m.ev.checkpointAt = at;
      }
    } catch (e) {
      const stuck = m.phase === 'signalled' && m.restartIfStuck;
      this.giveUp(m, (e as Error).message);
      const job = this.d.broker.currentOf(m.jobId)?.job;
      // Drain and preemption do not wait for a job that does not checkpoint: it starts again from the beginning
      // elsewhere, when its restart policy allows (a load move never stops it).
      if (stuck && job && (job.restarts ?? 0) > 0) this.d.broker.stopToRestart(m.jobId, `${m.cause}: it did not checkpoint in time, so it starts again from the beginning`);
      return;
    }
    // The source attempt has ended with its checkpoint: a preempted job waits for a place (claimEnd requeued it);
    // a moved one goes on, on the destination or the source.
    if (m.kind === 'move') await this.afterCheckpoint(m, cp);
  }

  /**
   * Makes the destination's next attempt ready while the job still runs (cooperative moves to a runtime that can:
   * the workspace mounted, the env file written, the container created with the job's address), with the variables
   * its start will have. Not for a workspace the client serves (its one stream is the source's until the move).
   */
  private async prepareDestination(m: Move, ctx: MoveContext): Promise<void> {
    const rt = this.d.hosts.runtimeFor(m.to);
    if (m.kind !== 'move' || m.ev.method !== 'cooperative' || !rt.prepare || ctx.job.workspaceFrom === 'client') return;
    const n = m.n + 1;
    const { attemptEnv, env } = this.d.broker.attemptInputs(ctx.job, n, m.gpus, 'migrated');
    const prepared = await rt.prepare({ job: { ...ctx.job, env: { ...ctx.job.env, ...attemptEnv } }, n, host: m.to, gpuIndices: m.gpus, env, moved: m.ev.ip ? { ip: m.ev.ip } : {} });
    // Given up meanwhile (cancelled, broker closing): what was made goes.
    if (this.moves.get(m.jobId) !== m || m.ac.signal.aborted) await rt.unprepare?.(m.to, m.jobId, n);
    else m.prepared = prepared;
  }

  /** Removes the prepared destination (given up, or not used), here or as a broker before a restart left it. */
  private async unprepare(m: Move, always = false): Promise<void> {
    if (!m.prepared && !always) return;
    m.prepared = undefined;
    await this.d.hosts.runtimeFor(m.to).unprepare?.(m.to, m.jobId, m.n + 1).catch((e) => this.d.log.warn('move: could not remove the prepared destination', { job: m.jobId, host: m.to, err: (e as Error).message }));
  }

  /** A transparent move falling back: the source's kept container is restored into, not removed. */
  private keepSourceForRestore(m: Move): void {
    if (m.ev.method !== 'transparent' || !m.srcRef) return;
    m.into = m.srcRef;
    m.srcRef = undefined;
  }

  /** Lets the source attempt's remains go (removed now when it has ended: `ended`, or kept at its checkpoint exit). */
  private async releaseSource(m: Move, ended: boolean): Promise<void> {
    const ref = m.srcRef;
    if (!ref) return;
    m.srcRef = undefined;
    await this.d.hosts.runtimeFor(m.from).release?.(ref, ended).catch((e) => this.d.log.warn('move: could not remove the source\'s container', { job: m.jobId, host: m.from, err: (e as Error).message }));
  }

  private async afterCheckpoint(m: Move, cp: Checkpointer): Promise<void> {
    m.phase = 'copying';
    try {
      if (m.fallback === undefined) {
        const ctx = this.context(m);
        this.d.log.info('move: final copy', { job: m.jobId, from: m.from, to: m.to, method: cp.method });
        const fin = await cp.transfer(ctx);
        m.ev.finalBytes = fin.bytes;
        m.ev.totalBytes = (fin as { totalBytes?: number }).totalBytes;
        this.d.log.info('move: final copy done', { job: m.jobId, bytes: fin.bytes, ms: fin.ms });
      }
    } catch (e) {
      m.fallback = `the copy to ${m.to} failed: ${(e as Error).message}`;
      this.d.log.warn('move: final copy failed; resuming on the source', { job: m.jobId, err: (e as Error).message });
    }
    // Starting on the source again: its remains (same mount point, maybe the same container name) go first, unless
    // the restore goes into them (transparent). A move taken on after a restart clears what the earlier broker left.
    if (m.fallback !== undefined && !m.restored) this.keepSourceForRestore(m);
    if (m.fallback !== undefined || m.restored) {
      await this.releaseSource(m, true);
      await this.unprepare(m, m.restored);
    }
    m.phase = 'starting';
    this.recordMoved(m);
    const [host, gpus] = m.fallback === undefined ? [m.to, m.gpus] : [m.from, m.fromGpus];
    this.d.broker.startMoved(m.jobId, { jobId: m.jobId, host, gpuIndices: gpus }, moveMarker(m.ev, m.fallback));
  }

  /** Persists "signalled" in the source attempt's runtimeRef, so a broker restarted meanwhile continues the move. */
  private persistSignalled(m: Move): void {
    const att = this.d.store.attempts(m.jobId).find((a) => a.n === m.n);
    if (att?.runtimeRef) this.d.store.putAttempt(m.jobId, { ...att, runtimeRef: { ...att.runtimeRef, move: { ...m.ev, phase: 'signalled' } } });
  }

  private clearPersisted(m: Move): void {
    const att = this.d.store.attempts(m.jobId).find((a) => a.n === m.n);
    if (att?.runtimeRef && 'move' in att.runtimeRef && !att.endedAt) {
      const { move: _m, ...ref } = att.runtimeRef;
      this.d.store.putAttempt(m.jobId, { ...att, runtimeRef: ref });
    }
  }

  /** The move ends before the checkpoint: the job goes on where it runs; the reservation and the copy go. */
  private giveUp(m: Move, why: string): void {
    if (this.moves.get(m.jobId) !== m) return;
    this.moves.delete(m.jobId);
    m.ac.abort(new Error('move given up'));
    this.clearPersisted(m);
    this.givenUp.set(m.jobId, { state: 'given_up', from: m.from, to: m.to, cause: m.cause, detail: why });
    this.d.log.warn('move given up', { job: m.jobId, from: m.from, to: m.to, why });
    void this.releaseSource(m, false);
    void this.unprepare(m);
    const job = this.d.store.getJob(m.jobId);
    // What the pre-copy left at the destination (never the source's own folder: a preemption's "to" is its source).
    if (job && m.to !== m.from) void this.checkpointer(m).discard(this.side(m.to), job).catch(() => {});
    this.d.broker.kick();
  }

  /** Writes the moved attempt's words and evidence (again once the downtime is known). */
  private recordMoved(m: Move): void {
    const att = this.d.store.attempts(m.jobId).find((a) => a.n === m.n);
    if (!att) return;
    const ev = { ...m.ev, ...(m.fallback ? { fellBack: m.fallback } : {}) };
    this.d.store.putAttempt(m.jobId, { ...att, reason: moveWords(ev), evidence: { ...att.evidence, move: ev } });
  }

  // ---- hooks (broker.ts MoveHooks) ----------------------------------------------------------------------------

  reserved(): Allocation[] {
    const out: Allocation[] = [];
    for (const m of this.moves.values()) {
      if (m.kind === 'preempt') continue;
      out.push({ jobId: m.jobId, host: m.to, gpuIndices: m.gpus, cpus: m.resources.cpus, memoryMiB: m.resources.memoryMiB });
      // Once the source attempt ended its GPUs are the job's no more: held until it runs elsewhere (a fallback needs them).
      if (m.phase === 'copying' || m.phase === 'starting') out.push({ jobId: m.jobId, host: m.from, gpuIndices: m.fromGpus, cpus: m.resources.cpus, memoryMiB: m.resources.memoryMiB });
    }
    return out;
  }

  claimEnd(job: StoredJob, att: StoredAttempt, end: AttemptEnd | { startError: string }): { reason: string; evidence: StoredAttempt['evidence']; fault: 'migrated' | 'preempted'; requeue: boolean } | null {
    const m = this.moves.get(job.id);
    const cp = this.checkpointer(m);
    if (m && m.n === att.n && (m.phase === 'signalled' || m.phase === 'precopy')) {
      if (m.phase === 'signalled' && cp.isCheckpointEnd(end)) {
        const at = 'endedAt' in end && end.endedAt ? end.endedAt : new Date().toISOString();
        m.phase = 'copying';
        m.ev.checkpointAt = at;
        m.ended.resolve({ at });
        const evidence = { exitCode: 'exitCode' in end ? end.exitCode : null, move: { ...m.ev } };
        if (m.kind === 'preempt') {
          this.moves.delete(job.id);
          this.d.log.info('job preempted with a checkpoint', { job: job.id, host: m.from, cause: m.cause });
          return { reason: `${m.cause}; waiting for a place, to resume from its checkpoint`, evidence, fault: 'preempted', requeue: true };
        }
        return { reason: `moving from ${m.from} to ${m.to}: ${m.cause}`, evidence, fault: 'migrated', requeue: false };
      }
      m.ended.reject(new Error(`the job ended on ${m.from} before its checkpoint`));
      return null;
    }
    // The destination could not start it: it goes on from its checkpoint on the source (whose GPUs are still held).
    if (m && m.kind === 'move' && m.phase === 'starting' && att.n === m.n + 1 && m.fallback === undefined && 'startError' in end && end.startError) {
      m.fallback = `${m.to} could not start it: ${end.startError}`;
      m.sourceN ??= m.n;
      m.n = att.n;
      m.ev = { ...m.ev, fellBack: m.fallback };
      this.d.log.warn('move: the destination could not start the job; resuming on the source', { job: job.id, to: m.to, err: end.startError });
      m.prepared = undefined;
      this.keepSourceForRestore(m);
      void this.releaseSource(m, true).then(() => this.d.broker.startMoved(job.id, { jobId: job.id, host: m.from, gpuIndices: m.fromGpus }, moveMarker(m.ev, m.fallback)));
      return { reason: `could not start on ${m.to}; resuming on ${m.from}`, evidence: { startError: end.startError, move: { ...m.ev } }, fault: 'migrated', requeue: false };
    }
    // A checkpoint with no move waiting for it (it came after the move was given up): resume on the same host.
    if (!m && checkpoints(job) && cp.isCheckpointEnd(end) && att.host) {
      const at = 'endedAt' in end && end.endedAt ? end.endedAt : new Date().toISOString();
      const late: Move = {
        kind: 'move', jobId: job.id, n: att.n, from: att.host, fromGpus: att.gpuIndices, to: att.host, gpus: att.gpuIndices, cause: 'a checkpoint after its move was given up',
        phase: 'copying', resources: job.resources, ac: new AbortController(), ended: deferred(), fallback: 'it checkpointed after its move was given up',
        ev: { from: att.host, to: att.host, gpus: att.gpuIndices, cause: 'checkpoint', method: 'cooperative', checkpointAt: at },
      };
      this.moves.set(job.id, late);
      setImmediate(() => void this.afterCheckpoint(late, cp));
      return { reason: `checkpointed on ${att.host}; resuming there`, evidence: { exitCode: 'exitCode' in end ? end.exitCode : null, move: { ...late.ev } }, fault: 'migrated', requeue: false };
    }
    return null;
  }

  attemptEnv(job: StoredJob, n: number): Record<string, string> {
    const env: Record<string, string> = checkpoints(job) ? { GPURUN_CHECKPOINT_SIGNAL: job.env.GPURUN_CHECKPOINT_SIGNAL! } : {};
    if (this.preemptedBefore(job, n)) Object.assign(env, this.cooperative.resume().env);
    const m = this.moves.get(job.id);
    // The attempt after the source's (also when prepared at the destination before the source has stopped).
    if (m && m.kind === 'move' && n === m.n + 1) Object.assign(env, this.checkpointer(m).resume(this.context(m)).env);
    return env;
  }

  movedStart(job: StoredJob, n: number): MovedStart | undefined {
    const m = this.moves.get(job.id);
    if (!m || m.phase !== 'starting' || n !== m.n + 1) return undefined;
    // A transparent move that falls back restores on the source from the images still there (runtimes/criu.ts).
    const restore = this.checkpointer(m).resume(this.context(m)).restore;
    if (m.fallback !== undefined) return restore ? { restore: { ...restore, ...(m.into ? { into: m.into } : {}) } } : undefined;
    return { ...(m.ev.ip ? { ip: m.ev.ip } : {}), ...(restore ? { restore } : {}), ...(m.prepared ? { prepared: m.prepared } : {}) };
  }

  running(job: StoredJob, n: number): void {
    const m = this.moves.get(job.id);
    if (!m || m.phase !== 'starting' || n !== m.n + 1) return;
    this.moves.delete(job.id);
    if (m.ev.checkpointAt) m.ev.downtimeSec = Math.max(0, Math.round((Date.now() - Date.parse(m.ev.checkpointAt)) / 100) / 10);
    this.recordMoved(m);
    this.d.log.info('job moved', { job: job.id, from: m.from, to: job.host, downtimeSec: m.ev.downtimeSec, precopyBytes: m.ev.precopyBytes, finalBytes: m.ev.finalBytes });
    // The source's container and mount, and the copy left on the host it no longer runs on.
    void this.releaseSource(m, true);
    if (job.host !== m.from) void this.checkpointer(m).discard(this.side(m.from), job).catch(() => {});
    // Back on the source: what was copied to the destination for it.
    else if (m.fallback !== undefined && m.to !== m.from) void this.checkpointer(m).discard(this.side(m.to), job).catch(() => {});
    this.d.broker.kick();
  }

  resumeMove(job: StoredJob, last: StoredAttempt): boolean {
    const ev = last.evidence.move;
    if (!ev || this.moves.has(job.id)) return false;
    const m = this.restored(job, last.n, ev, 'copying');
    m.restored = true;
    m.ended.resolve({ at: ev.checkpointAt ?? last.endedAt ?? new Date().toISOString() });
    void this.afterCheckpoint(m, this.checkpointer(m));
    return true;
  }

  view(jobId: string): MoveView | undefined {
    const m = this.moves.get(jobId);
    if (m) {
      const detail = { precopy: 'copying its checkpoint folder while it runs', signalled: 'waiting for its checkpoint', copying: 'copying what changed since', starting: 'starting it on the destination' }[m.phase];
      return { state: 'moving', from: m.from, to: m.fallback ? m.from : m.to, cause: m.cause, detail };
    }
    return this.givenUp.get(jobId);
  }

  // ---- preemption --------------------------------------------------------------------------------------------

  /** Online jobs waiting for GPUs, and when their preemption began (one preemption at a time per online job). */
  private readonly preempting = new Map<string, number>();

  /** The attempt before `n` was preempted with a checkpoint: the one that saved it, or undefined. */
  private preemptedBefore(job: StoredJob, n: number): StoredAttempt | undefined {
    const prev = this.d.store.attempts(job.id).find((a) => a.n === n - 1);
    return prev?.fault === 'preempted' && prev.evidence.move ? prev : undefined;
  }

  /**
   * With `migration.preempt`: for an online job that waits because offline jobs hold the GPUs it needs on some host,
   * those offline jobs (that checkpoint) checkpoint and wait for a place again; they resume from their checkpoint.
   */
  unplaced(jobs: StoredJob[]): void {
    if (!this.d.config.preempt) return;
    const now = Date.now();
    for (const [id, at] of this.preempting) if (now - at > this.d.config.checkpointTimeoutMs + 30_000) this.preempting.delete(id);
    const holding = this.d.broker.holdings();
    const active = this.d.broker.activeJobs();
    for (const online of jobs) {
      const need = online.resources.gpus;
      if (need === 0 || this.preempting.has(online.id)) continue;
      for (const cap of this.d.hosts.capacities()) {
        if (!cap.up || !this.movable(cap.name)) continue;
        const free = cap.gpus.length - new Set(holding.filter((a) => a.host === cap.name).flatMap((a) => a.gpuIndices)).size;
        const victims = active.filter((j) => j.host === cap.name && j.state === 'running' && j.queue === 'offline' && checkpoints(j) && !this.moves.has(j.id)).sort((a, b) => b.gpuIndices.length - a.gpuIndices.length);
        const chosen: StoredJob[] = [];
        let got = free;
        for (const v of victims) {
          if (got >= need) break;
          chosen.push(v);
          got += v.gpuIndices.length;
        }
        if (got < need || chosen.length === 0) continue;
        this.preempting.set(online.id, now);
        for (const v of chosen) this.preempt(v, `preempted for online job ${online.id}`);
        break;
      }
    }
  }

  private preempt(job: StoredJob, cause: string): void {
    const att = this.d.broker.currentOf(job.id)?.attempt;
    if (!att?.runtimeRef || !job.host) return;
    const m: Move = {
      kind: 'preempt', jobId: job.id, n: att.n, from: job.host, fromGpus: job.gpuIndices, to: job.host, gpus: [], cause, phase: 'precopy',
      resources: job.resources, ac: new AbortController(), ended: deferred(), ev: { from: job.host, to: '', gpus: [], cause, method: 'cooperative' }, restartIfStuck: true,
    };
    this.moves.set(job.id, m);
    this.d.log.info('preempting an offline job with a checkpoint', { job: job.id, host: job.host, cause });
    void this.run(m);
  }

  /** A preempted job placed on another host than the one that holds its checkpoint: the folder is copied there first. */
  async prepareStart(job: StoredJob, n: number, host: string | null): Promise<void> {
    const prev = this.preemptedBefore(job, n);
    const from = prev?.evidence.move?.from;
    if (!prev || !from || !host || from === host) return;
    try {
      const src = this.side(from);
      const dst = this.side(host);
      const r = await copyDir(src, hostCheckpointDir(src.workDir, job.id), dst, hostCheckpointDir(dst.workDir, job.id));
      this.d.log.info('checkpoint of a preempted job copied to its new host', { job: job.id, from, to: host, bytes: r.bytes });
      void this.cooperative.discard(src, job).catch(() => {});
    } catch (e) {
      // It starts anyway: without the checkpoint folder it starts from the beginning (GPURUN_RESUME_FROM is empty).
      this.d.log.warn('could not copy a preempted job\'s checkpoint to its new host', { job: job.id, from, to: host, err: (e as Error).message });
    }
  }

  // ---- restart ------------------------------------------------------------------------------------------------

  /**
   * After a broker restart, before the broker follows its jobs again: a move that had signalled its job waits for
   * that job's checkpoint again (with a fresh deadline).
   */
  restore(): void {
    for (const job of this.d.store.activeJobs()) {
      const atts = this.d.store.attempts(job.id);
      const att = atts[atts.length - 1];
      this.releaseHeldBefore(job, atts);
      const persisted = att && !att.endedAt ? (att.runtimeRef?.move as (MoveEvidence & { phase?: string }) | undefined) : undefined;
      if (!persisted || persisted.phase !== 'signalled') continue;
      const { phase: _p, ...ev } = persisted;
      const m = this.restored(job, att.n, ev, 'signalled');
      m.alreadyAsked = true;
      m.restored = true;
      // Its remains stay at its checkpoint exit again (the earlier process's hold went with it).
      if (m.kind === 'move' && m.srcRef) this.d.hosts.runtimeFor(m.from).holdOnExit?.(m.srcRef, this.checkpointer(m).method === 'cooperative' ? CHECKPOINT_EXIT_CODE : CHECKPOINTED_EXIT_CODE);
      this.d.log.info('move found again after a restart: waiting for the job\'s checkpoint', { job: job.id, from: m.from, to: m.to });
      void this.run(m);
    }
  }

  /**
   * A broker that died after the destination's attempt had started left the source's remains held at its checkpoint
   * (container, mount): they go now. Only where the job now runs on another host (a move that fell back runs in them).
   */
  private releaseHeldBefore(job: StoredJob, atts: StoredAttempt[]): void {
    const last = atts.at(-1);
    const prev = atts.at(-2);
    if (!last || !prev?.endedAt || prev.fault !== 'migrated' || !prev.runtimeRef || !prev.host || !last.host || prev.host === last.host) return;
    if (!this.d.hosts.names().includes(prev.host)) return;
    const ref = prev.runtimeRef;
    void this.d.hosts.runtimeFor(prev.host).release?.(ref, true).catch((e) => this.d.log.warn('move: could not remove the source\'s container after a restart', { job: job.id, host: prev.host, err: (e as Error).message }));
  }

  private restored(job: StoredJob, n: number, ev: MoveEvidence, phase: Phase): Move {
    const att = this.d.store.attempts(job.id).find((a) => a.n === n);
    // A preemption has no destination (ev.to is empty): its "to" is its source, as when it began.
    const m: Move = { kind: ev.to === '' ? 'preempt' : 'move', jobId: job.id, n, from: ev.from, fromGpus: att?.gpuIndices ?? [], to: ev.to || ev.from, gpus: ev.gpus, cause: ev.cause, phase, resources: job.resources, ac: new AbortController(), ended: deferred(), ev: { ...ev }, ...(att?.runtimeRef ? { srcRef: att.runtimeRef } : {}) };
    this.moves.set(job.id, m);
    return m;
  }

  /** Forgets what belongs to a job that ended, and removes its checkpoint folders from the hosts it ran on. */
  ended(job: Job): void {
    if (!isFinal(job.state)) return;
    const hosts = new Set(this.d.store.attempts(job.id).map((a) => a.host).filter((h): h is string => !!h && this.d.hosts.names().includes(h)));
    for (const h of hosts) {
      const side = this.d.hosts.sshSide(h);
      if (side && this.movable(h)) {
        for (const cp of [this.cooperative, this.transparent]) void cp.discard({ host: h, ...side }, job as StoredJob).catch(() => {});
      }
    }
    const m = this.moves.get(job.id);
    if (m) {
      m.ac.abort(new Error('job ended'));
      this.moves.delete(job.id);
      void this.unprepare(m);
      // Its source attempt has ended too when the job has.
      void this.releaseSource(m, true);
    }
    this.givenUp.delete(job.id);
  }

  close(): void {
    for (const m of this.moves.values()) m.ac.abort(new Error('broker closing'));
  }
}
