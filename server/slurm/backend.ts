/**
 * The Slurm backend: jobs sent to a cluster are staged, submitted with sbatch, tracked with ONE squeue per cluster
 * per poll interval (for all of its jobs), their output file copied into the broker's log file by byte offset, and
 * cancelled with scancel. The broker keeps deciding states; it hears from here through a ClusterJobSink.
 *
 * runtimeRef of a cluster job (what a restarted broker needs): {cluster, slurmId, staged, output, manifest, stage,
 * returned}. A job whose broker died between sbatch and recording the id is found again by its Slurm job name.
 */
import { createHash } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GpurunError } from '../protocol/errors.ts';
import type { ClusterJobInfo } from '../protocol/jobs.ts';
import type { JobPatch, StoredJob } from '../core/store.ts';
import type { Logger } from '../logger.ts';
import type { LogFiles } from '../logs/logFiles.ts';
import type { ClusterConfig } from './config.ts';
import type { CommandExec } from '../core/remoteExec.ts';
import { runOk, SLURM_COMMAND_MS } from './exec.ts';
import type { ClusterFiles } from './files.ts';
import { outcomeOf, parseSacct, parseSbatchParsable, parseScontrolJob, parseSqueue, pendingPositions, pendingReason, phaseOf, SACCT_FIELDS, SQUEUE_FORMAT, type Outcome, type SlurmRecord, type SqueueRow } from './parse.ts';
import { sbatchScript, slurmJobName } from './script.ts';
import { bringBack, stageWorkspace, type BringBackReport, type StageReport } from './staging.ts';

/** What the broker lets the backend do to its jobs. */
export interface ClusterJobSink {
  /** The job while it is active (queued/starting/running); undefined once it has ended. */
  get(id: string): StoredJob | undefined;
  update(id: string, patch: JobPatch): StoredJob | undefined;
  finish(id: string, outcome: Outcome): void;
}

interface ClusterPaths {
  cluster: string;
  /** The staged workspace on the cluster. */
  staged: string;
  /** The job's output file on the cluster. */
  output: string;
  /** The broker's staging manifest of the workspace. */
  manifest: string;
}

export interface ClusterRef extends ClusterPaths {
  slurmId: string | null;
  stage?: StageReport;
  returned?: BringBackReport;
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

class Cluster {
  readonly cfg: ClusterConfig;
  readonly parts: ClusterParts;
  /** Pending jobs' positions from the last poll, by Slurm id. */
  positions = new Map<string, number>();
  private polling = false;
  private tailing = false;
  private timers: NodeJS.Timeout[] = [];
  private readonly owner: SlurmClusters;

  constructor(cfg: ClusterConfig, parts: ClusterParts, owner: SlurmClusters) {
    this.cfg = cfg;
    this.parts = parts;
    this.owner = owner;
  }

  start(): void {
    const poll = setInterval(() => void this.poll(), this.cfg.pollMs);
    const tail = setInterval(() => void this.tail(), OUTPUT_MS);
    poll.unref();
    tail.unref();
    this.timers.push(poll, tail);
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.parts.close?.();
  }

  /** One squeue for every job of the cluster's partitions; each tracked job's state follows from it. */
  async poll(): Promise<void> {
    const jobs = this.owner.trackedOn(this.cfg.name);
    if (this.polling || jobs.length === 0) return;
    this.polling = true;
    try {
      const parts = [...new Set(Object.values(this.cfg.partitions))].join(',');
      const out = await runOk(this.parts.exec, ['squeue', '-h', '--states=all', `--partition=${parts}`, '-o', SQUEUE_FORMAT]);
      const rows = new Map<string, SqueueRow>(parseSqueue(out).map((r) => [r.slurmId, r]));
      this.positions = pendingPositions([...rows.values()]);
      for (const { job, ref } of jobs) await this.observe(job, ref, rows.get(ref.slurmId!));
    } catch (err) {
      this.owner.log.warn('slurm poll failed', { cluster: this.cfg.name, err });
    } finally {
      this.polling = false;
    }
  }

  private async observe(job: StoredJob, ref: ClusterRef, row: SqueueRow | undefined): Promise<void> {
    const sink = this.owner.sink;
    const phase = row ? phaseOf(row.state) : { kind: 'ended' as const };
    if (phase.kind === 'queued') {
      const reason = pendingReason(this.cfg.name, row!.reason);
      if (job.reason !== reason && !job.stopIntent) sink.update(job.id, { reason });
    } else if (phase.kind === 'running') {
      if (job.state !== 'running' || !job.host) this.markRunning(job, ref, row!.nodes);
    } else {
      await this.end(job, ref, row);
    }
  }

  /** Running, seen by the poll (with its node) or by its first output (node filled in by the next poll). */
  private markRunning(job: StoredJob, ref: ClusterRef, nodes: string): void {
    const where = nodes ? `cluster ${this.cfg.name}, node ${nodes}` : `cluster ${this.cfg.name}`;
    const patch: JobPatch = { reason: `running on ${where} (Slurm job ${ref.slurmId})`, ...(nodes ? { host: `${this.cfg.name}/${nodes}` } : {}) };
    if (job.state !== 'running') Object.assign(patch, { state: 'running', startedAt: new Date().toISOString() });
    this.owner.sink.update(job.id, patch);
  }

  /** Final record (with the exit code, which squeue lacks), last output bytes, files brought back, then finish. */
  private async end(job: StoredJob, ref: ClusterRef, row: SqueueRow | undefined): Promise<void> {
    const rec = await this.record(ref.slurmId!, row);
    await this.copyOutput(job.id, ref);
    let returned: BringBackReport | undefined;
    try {
      returned = await bringBack(this.parts.files, job.workspace, ref.staged, ref.manifest);
      this.owner.log.info('files brought back', { job: job.id, cluster: this.cfg.name, copied: returned.copied, keptNewer: returned.keptNewer.length });
    } catch (err) {
      this.owner.log.error('bringing files back failed', { job: job.id, err });
    }
    const current = this.owner.sink.get(job.id);
    if (!current) return;
    if (returned) this.owner.sink.update(job.id, { runtimeRef: { ...ref, returned } });
    let outcome: Outcome;
    if (!rec) outcome = { state: 'lost', reason: `Slurm no longer knows job ${ref.slurmId} and keeps no accounting of it`, exitCode: null };
    else {
      // A job stopped for passing a limit (its output cap) was scancel'ed like a cancel, and ends failed.
      outcome = outcomeOf(rec, current.stopIntent === 'limit' ? 'cancel' : current.stopIntent);
      if (current.stopIntent) outcome = { ...outcome, reason: current.reason, ...(current.stopIntent === 'limit' ? { state: 'failed' as const } : {}) };
      if (job.state !== 'running' && outcome.state === 'succeeded' && !current.startedAt) this.owner.sink.update(job.id, { startedAt: new Date().toISOString() });
    }
    this.owner.sink.finish(job.id, outcome);
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

  private readonly copying = new Map<string, Promise<void>>();

  /** Copies what the job's output file gained since the last copy into the broker's log file; one copy at a time. */
  copyOutput(jobId: string, ref: ClusterRef): Promise<void> {
    const prev = this.copying.get(jobId) ?? Promise.resolve();
    const run = prev.then(() => this.copyNow(jobId, ref));
    const settled = run.catch(() => {});
    this.copying.set(jobId, settled);
    void settled.then(() => this.copying.get(jobId) === settled && this.copying.delete(jobId));
    return run;
  }

  private async copyNow(jobId: string, ref: ClusterRef): Promise<void> {
    const logs = this.owner.logs;
    for (;;) {
      const offset = logs.size(jobId);
      const buf = await this.parts.files.read(ref.output, offset, READ_CHUNK);
      if (buf.length === 0) return;
      appendFileSync(logs.path(jobId), buf);
      if (buf.length < READ_CHUNK) return;
    }
  }

  private async tail(): Promise<void> {
    if (this.tailing) return;
    this.tailing = true;
    try {
      for (const { job, ref } of this.owner.trackedOn(this.cfg.name)) {
        const before = this.owner.logs.size(job.id);
        await this.copyOutput(job.id, ref).catch((err) => this.owner.log.warn('reading job output failed', { job: job.id, err }));
        // Output before the poll has seen it start: it runs (a user must not read output of a "queued" job).
        const now = this.owner.sink.get(job.id);
        if (now?.state === 'queued' && !now.stopIntent && this.owner.logs.size(job.id) > before) this.markRunning(now, ref, '');
      }
    } finally {
      this.tailing = false;
    }
  }
}

export class SlurmClusters {
  readonly log: Logger;
  readonly logs: LogFiles;
  sink!: ClusterJobSink;
  private readonly clusters = new Map<string, Cluster>();
  private readonly dataDir: string;
  /** Jobs followed, by gpurun id. */
  private readonly tracked = new Map<string, string>();

  constructor(configs: ClusterConfig[], deps: { dataDir: string; logs: LogFiles; log: Logger; parts: (c: ClusterConfig) => ClusterParts }) {
    this.log = deps.log;
    this.logs = deps.logs;
    this.dataDir = deps.dataDir;
    for (const c of configs) this.clusters.set(c.name, new Cluster(c, deps.parts(c), this));
  }

  names(): string[] {
    return [...this.clusters.keys()];
  }

  has(name: string | null | undefined): boolean {
    return !!name && this.clusters.has(name);
  }

  /** Whether the cluster runs images (pyxis). */
  runsImages(name: string): boolean {
    return this.clusters.get(name)?.cfg.container === 'pyxis';
  }

  attach(sink: ClusterJobSink): void {
    this.sink = sink;
    for (const c of this.clusters.values()) c.start();
  }

  close(): void {
    for (const c of this.clusters.values()) c.stop();
  }

  /** Active jobs of a cluster that have a Slurm id. */
  trackedOn(cluster: string): Array<{ job: StoredJob; ref: ClusterRef }> {
    const out: Array<{ job: StoredJob; ref: ClusterRef }> = [];
    for (const [id, c] of this.tracked) {
      if (c !== cluster) continue;
      const job = this.sink.get(id);
      const ref = job?.runtimeRef as ClusterRef | null | undefined;
      if (!job) this.tracked.delete(id);
      else if (ref?.slurmId) out.push({ job, ref });
    }
    return out;
  }

  private cluster(job: StoredJob): Cluster {
    const c = this.clusters.get(job.backend ?? '');
    if (!c) throw new GpurunError('E_INTERNAL', `job ${job.id} names no known cluster (${job.backend})`);
    return c;
  }

  private paths(c: Cluster, job: StoredJob): ClusterPaths {
    const owner = /^[\w.-]{1,64}$/.test(job.owner) ? job.owner : `u-${hash(job.owner)}`;
    const wsName = basename(job.workspace).replace(/[^\w.-]/g, '_').slice(0, 40) || 'workspace';
    const key = `${wsName}-${hash(job.workspace)}`;
    return {
      cluster: c.cfg.name,
      staged: join(c.cfg.stagingDir, owner, key),
      output: join(c.cfg.stagingDir, owner, '.gpurun-jobs', `${job.id}.out`),
      manifest: join(this.dataDir, 'staging', c.cfg.name, owner, `${key}.json`),
    };
  }

  /** Stages the workspace and submits; the job stays queued. Failures end the job as failed with the reason. */
  submit(job: StoredJob): void {
    void this.submitNow(job).catch((err) => {
      this.log.error('slurm submit failed', { job: job.id, err });
      const msg = err instanceof GpurunError ? err.message : String((err as Error).message ?? err);
      if (this.sink.get(job.id)) this.sink.finish(job.id, { state: 'failed', reason: `could not start: ${msg}`, exitCode: null });
    });
  }

  private async submitNow(job: StoredJob): Promise<void> {
    const c = this.cluster(job);
    const p = this.paths(c, job);
    this.tracked.set(job.id, c.cfg.name);
    const stage = await stageWorkspace(c.parts.files, job.workspace, p.staged, p.manifest);
    this.log.info('workspace staged', { job: job.id, cluster: c.cfg.name, copied: stage.copied, unchanged: stage.unchanged, removed: stage.removed, bytes: stage.bytes, ms: stage.ms });
    if (!this.sink.get(job.id)) return; // cancelled while staging
    await c.parts.files.mkdirp(join(p.output, '..'));
    const script = sbatchScript(job, c.cfg, { workdir: p.staged, output: p.output });
    const slurmId = parseSbatchParsable(await runOk(c.parts.exec, ['sbatch', '--parsable'], { stdin: script }));
    this.log.info('submitted to slurm', { job: job.id, cluster: c.cfg.name, slurmId });
    const ref: ClusterRef = { ...p, slurmId, stage };
    if (!this.sink.get(job.id)) {
      // Cancelled while sbatch ran: take it back out of Slurm.
      await c.parts.exec.exec(['scancel', slurmId], { timeoutMs: SLURM_COMMAND_MS });
      return;
    }
    this.sink.update(job.id, { runtimeRef: ref, reason: pendingReason(c.cfg.name, 'None') });
    void c.poll();
  }

  /** After a broker restart: follow the job again by its Slurm id (or find it by name, or submit it). */
  recover(job: StoredJob): void {
    const c = this.cluster(job);
    const ref = job.runtimeRef as ClusterRef | null;
    if (ref?.slurmId) {
      this.tracked.set(job.id, c.cfg.name);
      this.log.info('following slurm job again after restart', { job: job.id, slurmId: ref.slurmId });
      return;
    }
    void (async () => {
      const r = await c.parts.exec.exec(['squeue', '-h', '--states=all', `--name=${slurmJobName(job.id)}`, '-o', '%i'], { timeoutMs: SLURM_COMMAND_MS });
      const found = r.code === 0 ? r.stdout.trim().split('\n')[0] : '';
      if (/^\d+$/.test(found)) {
        this.tracked.set(job.id, c.cfg.name);
        this.sink.update(job.id, { runtimeRef: { ...this.paths(c, job), slurmId: found } });
        this.log.info('found slurm job of a submit the broker did not finish recording', { job: job.id, slurmId: found });
      } else this.submit(job);
    })().catch((err) => this.log.error('recovering slurm job failed', { job: job.id, err }));
  }

  /** scancel, pending or running. The poll then sees it end; a queued job the broker has already finished. */
  async cancel(job: StoredJob): Promise<void> {
    const ref = job.runtimeRef as ClusterRef | null;
    if (!ref?.slurmId) return; // not submitted yet: submitNow sees the job gone and cancels
    const c = this.cluster(job);
    await runOk(c.parts.exec, ['scancel', ref.slurmId]);
  }

  /** What the API shows of a cluster job: position among pending jobs in its partition, staging figures. */
  info(job: StoredJob): { queuePosition?: number; cluster: ClusterJobInfo } {
    const ref = job.runtimeRef as ClusterRef | null;
    const pos = ref?.slurmId ? this.clusters.get(job.backend ?? '')?.positions.get(ref.slurmId) : undefined;
    const cluster: ClusterJobInfo = {
      name: job.backend ?? '',
      slurmJobId: ref?.slurmId ?? null,
      ...(ref?.stage ? { staged: { copied: ref.stage.copied, unchanged: ref.stage.unchanged, removed: ref.stage.removed, bytes: ref.stage.bytes, ms: ref.stage.ms } } : {}),
      ...(ref?.returned ? { returned: ref.returned } : {}),
    };
    return { ...(pos === undefined ? {} : { queuePosition: pos }), cluster };
  }
}

function hash(s: string): string {
  return createHash('sha256').update(s).digest('hex').slice(0, 10);
}
