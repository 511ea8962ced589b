/**
 * A Slurm cluster as a Backend (core/backend.ts): an attempt is staged, submitted with sbatch, tracked with ONE
 * squeue per cluster per poll interval (for all of its jobs), its output file copied into the broker's log file by
 * byte offset from the attempt's own offset, and cancelled with scancel. It reports (pending, running, Slurm's final
 * record); the broker decides states, faults and restarts. A restarted attempt (after NODE_FAIL, PREEMPTED,
 * BOOT_FAIL) is a new sbatch of the same staged workspace, with its own output file.
 *
 * runtimeRef of an attempt (what a restarted broker needs): {cluster, slurmId, staged, output, manifest, stage,
 * returned, logOffset}. An attempt whose broker died between sbatch and recording the id is found by its job name.
 */
import { createHash } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GpurunError } from '../protocol/errors.ts';
import type { ClusterJobInfo } from '../protocol/jobs.ts';
import type { UserCacheInfo } from '../protocol/cache.ts';
import type { StoredAttempt, StoredJob } from '../core/store.ts';
import type { AttemptEnd, AttemptEvents, AttemptPlacement, AttemptSpec, Backend, BackendDefaults, PlaceRequest } from '../core/backend.ts';
import type { ValidSubmit } from '../core/submit.ts';
import type { Logger } from '../logger.ts';
import type { LogFiles } from '../logs/logFiles.ts';
import type { ClusterConfig } from './config.ts';
import type { CommandExec } from '../core/remoteExec.ts';
import { runOk, SLURM_COMMAND_MS } from './exec.ts';
import type { ClusterFiles } from './files.ts';
import { parseSacct, parseSbatchParsable, parseScontrolJob, parseSqueue, pendingPositions, pendingReason, phaseOf, SACCT_FIELDS, SQUEUE_FORMAT, type SlurmRecord, type SqueueRow } from './parse.ts';
import { sbatchScript, slurmJobName } from './script.ts';
import { bringBack, stageWorkspace, type BringBackReport, type StageReport } from './staging.ts';
import { signalName } from '../core/outcome.ts';

interface ClusterPaths {
  cluster: string;
  /** The staged workspace on the cluster. */
  staged: string;
  /** The attempt's output file on the cluster (one per attempt). */
  output: string;
  /** The broker's staging manifest of the workspace. */
  manifest: string;
}

export interface ClusterRef extends ClusterPaths {
  slurmId: string | null;
  stage?: StageReport;
  returned?: BringBackReport;
  /** Byte of the job's log where this attempt's output begins. */
  logOffset?: number;
  [k: string]: unknown;
}

export interface ClusterParts {
  exec: CommandExec;
  files: ClusterFiles;
  /** Releases what the parts hold (an SSH login node's connections); called once when the broker stops. */
  close?(): void;
}

/** How often running jobs' output files are read (cheap: one read of the appended bytes). */
const OUTPUT_MS = 200;
const READ_CHUNK = 1 << 20;


/** An attempt the cluster follows: its handle, the broker's events for it, and who waits for its end. */
interface Tracked {
  job: StoredJob;
  ref: ClusterRef;
  ev: AttemptEvents;
  /** The node it was last seen running on ('' before the poll has seen it run). */
  runningOn: string | null;
  done?: (end: AttemptEnd) => void;
}

export interface SlurmClusterDeps {
  dataDir: string;
  logs: LogFiles;
  log: Logger;
  /** Jobs get their owner's persistent cache on the cluster's shared storage (config `cache.enabled`). */
  cache?: boolean;
}

/** The folder of an owner's persistent cache, beside their staged workspaces (those are NAME-HASH, never this). */
const CACHE_DIR = '.gpurun-cache';

export class SlurmCluster implements Backend {
  readonly name: string;
  readonly cfg: ClusterConfig;
  readonly parts: ClusterParts;
  /** Pending jobs' positions from the last poll, by Slurm id. */
  private positions = new Map<string, number>();
  private polling = false;
  private tailing = false;
  private timers: NodeJS.Timeout[] = [];
  private readonly tracked = new Map<string, Tracked>();
  private readonly copying = new Map<string, Promise<void>>();
  private readonly log: Logger;
  private readonly logs: LogFiles;
  private readonly dataDir: string;
  private readonly cacheOn: boolean;

  constructor(cfg: ClusterConfig, parts: ClusterParts, deps: SlurmClusterDeps) {
    this.name = cfg.name;
    this.cfg = cfg;
    this.parts = parts;
    this.log = deps.log;
    this.logs = deps.logs;
    this.dataDir = deps.dataDir;
    this.cacheOn = deps.cache ?? false;
  }

  defaults(c: { gpus: number | 'auto'; image?: string }): BackendDefaults {
    return { gpus: c.gpus === 'auto' ? 1 : c.gpus, ...(this.cfg.container === 'pyxis' && c.image ? { image: c.image } : {}) };
  }

  admit(v: ValidSubmit): void {
    if (v.image && this.cfg.container !== 'pyxis') {
      throw new GpurunError('E_BAD_REQUEST', `image: the cluster ${this.name} runs jobs without containers`, { hint: 'Leave out --image, or ask an admin to enable "container": "pyxis" for the cluster.' });
    }
    if (v.workspaceFrom === 'client') {
      throw new GpurunError('E_BAD_REQUEST', `workspaceFrom: the cluster ${this.name} stages the workspace from the broker; it cannot be served by the client`, { hint: 'Leave out --serve-workspace for cluster jobs.' });
    }
  }

  /** Slurm queues and places jobs itself: every queued job is submitted at once. */
  place(queued: PlaceRequest[]): AttemptPlacement[] {
    return queued.map((q) => ({ jobId: q.job.id, host: null, gpuIndices: [] }));
  }

  open(): void {
    const poll = setInterval(() => void this.poll(), this.cfg.pollMs);
    const tail = setInterval(() => void this.tail(), OUTPUT_MS);
    poll.unref();
    tail.unref();
    this.timers.push(poll, tail);
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
    this.parts.close?.();
  }

  knows(): boolean {
    return true;
  }

  /** The owner's folder on the shared storage: their staged workspaces, job output files and cache. */
  private ownerDir(owner: string): string {
    return join(this.cfg.stagingDir, /^[\w.-]{1,64}$/.test(owner) ? owner : `u-${hash(owner)}`);
  }

  /** Where `owner`'s persistent cache is on the shared storage (the same path on the login and compute nodes). */
  cacheDir(owner: string): string {
    return join(this.ownerDir(owner), CACHE_DIR);
  }

  /** `owner`'s cache here, with its size (`du` on the login node); kind `none` when caches are off. */
  async cacheInfo(owner: string): Promise<UserCacheInfo> {
    if (!this.cacheOn) return { host: this.name, kind: 'none', name: null, path: null, bytes: null, note: 'the broker config turns caches off (cache.enabled)' };
    const dir = this.cacheDir(owner);
    const info: UserCacheInfo = { host: this.name, kind: 'folder', name: dir, path: dir, bytes: null };
    try {
      const r = await this.parts.exec.exec(['du', '-s', '-B1', '--apparent-size', '--', dir], { timeoutMs: 60_000 });
      if (r.code === 0) return { ...info, bytes: Number(/^(\d+)/.exec(r.stdout)?.[1] ?? 'NaN') };
      if (/no such file/i.test(r.stderr)) return { ...info, bytes: 0 };
      return { ...info, note: `du failed on the login node: ${r.stderr.trim() || `exit ${r.code}`}` };
    } catch (e) {
      return { ...info, note: `the login node cannot be reached: ${(e as Error).message}` };
    }
  }

  /** Empties `owner`'s cache here (the caller has checked that no job of theirs runs on the cluster). */
  async clearCache(owner: string): Promise<void> {
    const r = await this.parts.exec.exec(['rm', '-rf', '--', this.cacheDir(owner)], { timeoutMs: 120_000 });
    if (r.code !== 0) throw new GpurunError('E_INTERNAL', `removing your cache on ${this.name} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
  }

  private paths(job: StoredJob, n: number): ClusterPaths {
    const ownerDir = this.ownerDir(job.owner);
    const wsName = basename(job.workspace).replace(/[^\w.-]/g, '_').slice(0, 40) || 'workspace';
    const key = `${wsName}-${hash(job.workspace)}`;
    return {
      cluster: this.name,
      staged: join(ownerDir, key),
      output: join(ownerDir, '.gpurun-jobs', n > 1 ? `${job.id}.${n}.out` : `${job.id}.out`),
      manifest: join(this.dataDir, 'staging', this.name, basename(ownerDir), `${key}.json`),
    };
  }

  /** Stages the workspace (the same staged copy for every attempt) and submits; the job stays queued in Slurm. */
  async start(a: AttemptSpec, ev: AttemptEvents): Promise<ClusterRef> {
    const job = a.job;
    const p = this.paths(job, a.n);
    const stage = await stageWorkspace(this.parts.files, job.workspace, p.staged, p.manifest);
    this.log.info('workspace staged', { job: job.id, cluster: this.name, copied: stage.copied, unchanged: stage.unchanged, removed: stage.removed, bytes: stage.bytes, ms: stage.ms });
    if (!ev.isCurrent()) throw new GpurunError('E_CONFLICT', 'cancelled while staging');
    await this.parts.files.mkdirp(join(p.output, '..'));
    const cache = this.cacheOn ? this.cacheDir(job.owner) : undefined;
    if (cache) await this.parts.files.mkdirp(cache);
    const script = sbatchScript(job, this.cfg, { workdir: p.staged, output: p.output, ...(cache ? { cache } : {}) });
    const slurmId = parseSbatchParsable(await runOk(this.parts.exec, ['sbatch', '--parsable'], { stdin: script }));
    this.log.info('submitted to slurm', { job: job.id, cluster: this.name, slurmId, attempt: a.n });
    const ref: ClusterRef = { ...p, slurmId, stage, logOffset: a.logOffset };
    if (!ev.isCurrent()) {
      // Cancelled while sbatch ran: take it back out of Slurm.
      await this.parts.exec.exec(['scancel', slurmId], { timeoutMs: SLURM_COMMAND_MS });
      return ref;
    }
    this.tracked.set(job.id, { job, ref, ev, runningOn: null });
    ev.pending(pendingReason(this.name, 'None'));
    void this.poll();
    return ref;
  }

  wait(job: StoredJob, attempt: StoredAttempt, signal: AbortSignal, ev: AttemptEvents): Promise<AttemptEnd> {
    const ref = attempt.runtimeRef as ClusterRef;
    const t = this.tracked.get(job.id) ?? { job, ref, ev, runningOn: null };
    this.tracked.set(job.id, t);
    return new Promise<AttemptEnd>((resolve, reject) => {
      t.done = resolve;
      signal.addEventListener('abort', () => {
        if (this.tracked.get(job.id) === t) this.tracked.delete(job.id);
        reject(signal.reason);
      });
    });
  }

  /** scancel, pending or running; the poll then sees it end. */
  async stop(_job: StoredJob, attempt: StoredAttempt): Promise<void> {
    const ref = attempt.runtimeRef as ClusterRef | null;
    if (ref?.slurmId) await runOk(this.parts.exec, ['scancel', ref.slurmId]);
  }

  async discard(job: StoredJob, attempt: StoredAttempt): Promise<void> {
    await this.stop(job, attempt).catch(() => {});
  }

  /** After a broker restart: follow the attempt again by its Slurm id, or find it by name; null when never submitted. */
  async recover(job: StoredJob, attempt: StoredAttempt, ev: AttemptEvents): Promise<ClusterRef | null> {
    const ref = attempt.runtimeRef as ClusterRef | null;
    if (ref?.slurmId) {
      this.tracked.set(job.id, { job, ref, ev, runningOn: job.state === 'running' ? job.host : null });
      this.log.info('following slurm job again after restart', { job: job.id, slurmId: ref.slurmId });
      return ref;
    }
    const r = await this.parts.exec.exec(['squeue', '-h', '--states=all', `--name=${slurmJobName(job.id)}`, '-o', '%i'], { timeoutMs: SLURM_COMMAND_MS });
    const found = r.code === 0 ? r.stdout.trim().split('\n').pop() ?? '' : '';
    if (!/^\d+$/.test(found)) return null;
    const back: ClusterRef = { ...this.paths(job, attempt.n), slurmId: found, logOffset: attempt.logOffset };
    this.tracked.set(job.id, { job, ref: back, ev, runningOn: null });
    this.log.info('found slurm job of a submit the broker did not finish recording', { job: job.id, slurmId: found });
    return back;
  }

  /** What the API shows of a cluster job: position among pending jobs in its partition, staging figures. */
  describe(job: StoredJob): { queuePosition?: number; cluster: ClusterJobInfo } {
    const ref = job.runtimeRef as ClusterRef | null;
    const pos = ref?.slurmId ? this.positions.get(ref.slurmId) : undefined;
    const cluster: ClusterJobInfo = {
      name: this.name,
      slurmJobId: ref?.slurmId ?? null,
      ...(ref?.stage ? { staged: { copied: ref.stage.copied, unchanged: ref.stage.unchanged, removed: ref.stage.removed, bytes: ref.stage.bytes, ms: ref.stage.ms } } : {}),
      ...(ref?.returned ? { returned: ref.returned } : {}),
    };
    return { ...(job.state === 'queued' && pos !== undefined ? { queuePosition: pos } : {}), cluster };
  }

  /** Attempts with a Slurm id whose end someone waits for. */
  private followed(): Tracked[] {
    return [...this.tracked.values()].filter((t) => t.ref.slurmId && t.done && t.ev.isCurrent());
  }

  /** One squeue for every job of the cluster's partitions; each followed attempt's phase follows from it. */
  async poll(): Promise<void> {
    const list = this.followed();
    if (this.polling || list.length === 0) return;
    this.polling = true;
    try {
      const parts = [...new Set(Object.values(this.cfg.partitions))].join(',');
      const out = await runOk(this.parts.exec, ['squeue', '-h', '--states=all', `--partition=${parts}`, '-o', SQUEUE_FORMAT]);
      const rows = new Map<string, SqueueRow>(parseSqueue(out).map((r) => [r.slurmId, r]));
      this.positions = pendingPositions([...rows.values()]);
      for (const t of list) await this.observe(t, rows.get(t.ref.slurmId!));
    } catch (err) {
      this.log.warn('slurm poll failed', { cluster: this.name, err });
    } finally {
      this.polling = false;
    }
  }

  private async observe(t: Tracked, row: SqueueRow | undefined): Promise<void> {
    const phase = row ? phaseOf(row.state) : { kind: 'ended' as const };
    if (phase.kind === 'queued') t.ev.pending(pendingReason(this.name, row!.reason));
    else if (phase.kind === 'running') {
      if (t.runningOn === null || (row!.nodes && t.runningOn !== row!.nodes)) this.reportRunning(t, row!.nodes);
    } else await this.end(t, row);
  }

  /** Running, seen by the poll (with its node) or by its first output (node filled in by the next poll). */
  private reportRunning(t: Tracked, nodes: string): void {
    t.runningOn = nodes;
    const where = nodes ? `cluster ${this.name}, node ${nodes}` : `cluster ${this.name}`;
    t.ev.running({ host: nodes ? `${this.name}/${nodes}` : null, reason: `running on ${where} (Slurm job ${t.ref.slurmId})` });
  }

  /** Final record (with the exit code, which squeue lacks), last output bytes, files brought back, then the report. */
  private async end(t: Tracked, row: SqueueRow | undefined): Promise<void> {
    const { job, ref } = t;
    const done = t.done;
    if (!done) return;
    t.done = undefined;
    const rec = await this.record(ref.slurmId!, row);
    // A job that ended between polls (or whose node failed before a poll saw it there) still names the node it ran
    // on, so its attempt, and the next attempt's marker, say where it ended.
    if (rec?.nodes && !t.runningOn) this.reportRunning(t, rec.nodes);
    await this.copyOutput(t).catch((err) => this.log.warn('reading job output failed', { job: job.id, err }));
    let returned: BringBackReport | undefined;
    try {
      returned = await bringBack(this.parts.files, job.workspace, ref.staged, ref.manifest);
      this.log.info('files brought back', { job: job.id, cluster: this.name, copied: returned.copied, keptNewer: returned.keptNewer.length });
    } catch (err) {
      this.log.error('bringing files back failed', { job: job.id, err });
    }
    if (this.tracked.get(job.id) === t) this.tracked.delete(job.id);
    const finalRef: ClusterRef = returned ? { ...ref, returned } : ref;
    if (!rec) {
      done({ lost: `Slurm no longer knows job ${ref.slurmId} and keeps no accounting of it`, evidence: { notes: ['no Slurm record of the job'] }, runtimeRef: finalRef });
      return;
    }
    const slurm = { state: rec.state, reason: rec.reason, exitCode: rec.exitCode, signal: rec.signal };
    done({ exitCode: rec.signal ? null : rec.exitCode, signal: rec.signal ? signalName(rec.signal) : null, endedAt: new Date().toISOString(), evidence: { slurm: { state: rec.state, reason: rec.reason } }, slurm, runtimeRef: finalRef });
  }

  /** scontrol knows ended jobs for MinJobAge; sacct, where the cluster keeps accounting, for longer. */
  private async record(slurmId: string, row: SqueueRow | undefined): Promise<SlurmRecord | undefined> {
    const sc = await this.parts.exec.exec(['scontrol', 'show', 'job', '-o', slurmId], { timeoutMs: SLURM_COMMAND_MS });
    const rec = sc.code === 0 ? parseScontrolJob(sc.stdout) : undefined;
    if (rec) return rec;
    const sa = await this.parts.exec.exec(['sacct', '-n', '-P', '-X', '-j', slurmId, '-o', SACCT_FIELDS], { timeoutMs: SLURM_COMMAND_MS });
    const acc = sa.code === 0 ? parseSacct(sa.stdout).find((r) => r.slurmId === slurmId) : undefined;
    if (acc) return acc;
    return row ? { slurmId, state: row.state, reason: row.reason, exitCode: 0, signal: 0, start: row.start, nodes: row.nodes } : undefined;
  }

  /** Copies what the attempt's output file gained since the last copy into the broker's log file; one copy at a time. */
  private copyOutput(t: Tracked): Promise<void> {
    const jobId = t.job.id;
    const prev = this.copying.get(jobId) ?? Promise.resolve();
    const run = prev.then(() => this.copyNow(t));
    const settled = run.catch(() => {});
    this.copying.set(jobId, settled);
    void settled.then(() => this.copying.get(jobId) === settled && this.copying.delete(jobId));
    return run;
  }

  /** From the attempt's own offset; only while it is the job's current attempt (a superseded one writes nothing). */
  private async copyNow(t: Tracked): Promise<void> {
    const logs = this.logs;
    for (;;) {
      if (!t.ev.isCurrent()) return;
      const offset = logs.size(t.job.id) - (t.ref.logOffset ?? 0);
      const buf = await this.parts.files.read(t.ref.output, Math.max(0, offset), READ_CHUNK);
      if (buf.length === 0 || !t.ev.isCurrent()) return;
      appendFileSync(logs.path(t.job.id), buf, { mode: 0o600 });
      if (buf.length < READ_CHUNK) return;
    }
  }

  private async tail(): Promise<void> {
    if (this.tailing) return;
    this.tailing = true;
    try {
      for (const t of this.followed()) {
        const before = this.logs.size(t.job.id);
        await this.copyOutput(t).catch((err) => this.log.warn('reading job output failed', { job: t.job.id, err }));
        // Output before the poll has seen it start: it runs (a user must not read output of a "queued" job).
        if (t.runningOn === null && this.logs.size(t.job.id) > before) this.reportRunning(t, '');
      }
    } finally {
      this.tailing = false;
    }
  }
}

function hash(s: string): string {
  return createHash('sha256').update(s).digest('hex').slice(0, 10);
}
