/**
 * Load-driven moves: every `migration.sampleEvery` the hosts with online jobs report those jobs' usage (Docker hosts:
 * their containers' `docker stats`; process hosts: their sessions' processes in /proc) and, where they hold GPUs,
 * those GPUs' utilisation and their processes' GPU memory (nvidia-smi; gpuLoad.ts); when a host's online load stays over `migration.threshold` for `migration.window`, one
 * offline job of that host that checkpoints is moved to a less-loaded host that fits it. Online jobs never move for
 * load. After a move starts, the host's window begins again (so one burst moves one job, then looks again).
 */
import type { HostInfo } from '../protocol/jobs.ts';
import type { Broker } from '../broker.ts';
import type { HostRegistry } from '../hosts/registry.ts';
import type { Logger } from '../logger.ts';
import type { MigrationConfig } from './config.ts';
import type { MoveManager } from './manager.ts';
import { checkpoints } from './cooperative.ts';
import type { RemoteExec } from '../hosts/ssh.ts';
import { NVIDIA_SMI_QUERY, parseNvidiaSmi } from '../hosts/nvidiaSmi.ts';
import { COMPUTE_APPS_QUERY, dockerTopPidsArgs, onlineGpuLoad, parseComputeApps, parseDockerTopPids, type GpuLoad } from './gpuLoad.ts';
import { hostLoad, overloaded, overloadWords, parseDockerStats, parseProcUsage, peakLoad, procUsageArgs, procUsageBetween, type ContainerUsage, type LoadSample, type ProcUsage } from './load.ts';
import type { StoredJob } from '../core/store.ts';

/** Samples kept per host (enough for the window at the sampling rate). */
const KEEP = 200;

export class LoadWatch {
  private readonly samples = new Map<string, LoadSample[]>();
  private timer?: NodeJS.Timeout;
  private busy = false;
  /** Hosts whose nvidia-smi failed at the last sample (said once in the log, not every few seconds). */
  private readonly noGpuReading = new Set<string>();
  /** The same for process hosts whose /proc reading failed. */
  private readonly noProcReading = new Set<string>();
  /** Each process host's last reading of its online jobs' sessions (CPU is measured between two). */
  private readonly lastProc = new Map<string, ProcUsage>();
  private readonly d: { broker: Broker; hosts: HostRegistry; moves: MoveManager; config: MigrationConfig; log: Logger };

  constructor(d: LoadWatch['d']) {
    this.d = d;
  }

  start(): void {
    if (!this.d.config.threshold) return;
    this.timer = setInterval(() => {
      if (this.busy) return;
      this.busy = true;
      this.sample().catch((e) => this.d.log.warn('load sample failed', { err: (e as Error).message })).finally(() => (this.busy = false));
    }, this.d.config.sampleMs);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** The online load `gpurun hosts` shows (last sample of each host with online jobs). */
  view(hosts: HostInfo[]): HostInfo[] {
    return hosts.map((h) => {
      const s = this.samples.get(h.name)?.at(-1);
      if (!s || Date.now() - s.at >= 3 * this.d.config.sampleMs) return h;
      const gpu = s.gpu === undefined ? {} : { gpu: s.gpu, gpuMemory: s.gpuMemory ?? 0 };
      return { ...h, onlineLoad: { cpu: s.cpu, memory: s.memory, ...gpu, at: new Date(s.at).toISOString() } };
    });
  }

  private async sample(): Promise<void> {
    const jobs = this.d.broker.activeJobs().filter((j) => j.state === 'running' && j.host);
    const caps = new Map(this.d.hosts.capacities().map((c) => [c.name, c]));
    const byHost = new Map<string, StoredJob[]>();
    for (const j of jobs) if (j.queue === 'online') byHost.set(j.host!, [...(byHost.get(j.host!) ?? []), j]);
    for (const host of this.samples.keys()) if (!byHost.has(host)) this.samples.delete(host);
    for (const host of this.lastProc.keys()) if (!byHost.has(host)) this.lastProc.delete(host);
    await Promise.all([...byHost].map(async ([host, online]) => {
      const side = this.d.hosts.sshSide(host);
      const cap = caps.get(host);
      if (!side || !cap) return;
      const kind = this.d.hosts.runtimeFor(host).kind;
      const reading = kind === 'docker' ? await this.dockerUsage(side.exec, online) : kind === 'ssh-process' ? await this.processUsage(host, side.exec, online) : null;
      if (!reading) return;
      const held = online.flatMap((j) => j.gpuIndices);
      const gpu = held.length ? await this.gpuLoad(host, side.exec, held, reading.pids) : null;
      const list = this.samples.get(host) ?? [];
      list.push({ ...hostLoad(reading.usage, cap, Date.now()), ...gpu });
      if (list.length > KEEP) list.splice(0, list.length - KEEP);
      this.samples.set(host, list);
      this.decide(host, list);
    }));
  }

  /** A Docker host's online jobs: their containers' `docker stats`; their pids asked for only when GPU use needs them. */
  private async dockerUsage(exec: RemoteExec, online: StoredJob[]): Promise<{ usage: ContainerUsage[]; pids: () => Promise<Set<number>> } | null> {
    // The container in the job's handle: a job moved by hand runs in the one prepared for it (gpurun-ID-N).
    const containers = online.map((j) => String(j.runtimeRef?.container ?? `gpurun-${j.id}`));
    const r = await exec.exec(['docker', 'stats', '--no-stream', '--format', '{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}', ...containers], { timeoutMs: 30_000 });
    if (r.code !== 0 && !r.stdout.trim()) return null;
    const stats = parseDockerStats(r.stdout);
    const pids = async () => {
      const out = new Set<number>();
      for (const c of containers) {
        const t = await exec.exec(dockerTopPidsArgs(c), { timeoutMs: 30_000 });
        if (t.code === 0) for (const pid of parseDockerTopPids(t.stdout)) out.add(pid);
      }
      return out;
    };
    return { usage: containers.map((c) => stats.get(c)).filter((u) => u !== undefined), pids };
  }

  /**
   * A process host's online jobs: CPU time and memory of each job's session from /proc, CPU over the time since the
   * host's last reading (the first reading only sets that start: no sample).
   */
  private async processUsage(host: string, exec: RemoteExec, online: StoredJob[]): Promise<{ usage: ContainerUsage[]; pids: () => Promise<Set<number>> } | null> {
    const sessions = online.map((j) => Number(j.runtimeRef?.pid)).filter((n) => Number.isInteger(n) && n > 1);
    if (!sessions.length) return null;
    const r = await exec.exec(procUsageArgs(sessions), { timeoutMs: 30_000 });
    const now = r.code === 0 ? parseProcUsage(r.stdout) : null;
    if (!now) {
      if (!this.noProcReading.has(host)) this.d.log.warn('the host gives no reading of its online jobs\' processes for the online load (it needs getconf, pgrep and /proc)', { host, code: r.code, stderr: r.stderr.trim().slice(0, 200) });
      this.noProcReading.add(host);
      return null;
    }
    this.noProcReading.delete(host);
    const before = this.lastProc.get(host);
    this.lastProc.set(host, now);
    if (!before) return null;
    const pids = new Set([...now.sessions.values()].flatMap((s) => s.pids));
    return { usage: procUsageBetween(before, now), pids: async () => pids };
  }

  /**
   * The GPU use of a host's online jobs (their GPUs `held`, their processes' host pids from `jobPids`), or null when
   * nvidia-smi gives no reading of those GPUs. The pids are asked for only when the driver lists processes on them.
   */
  private async gpuLoad(host: string, exec: RemoteExec, held: number[], jobPids: () => Promise<Set<number>>): Promise<GpuLoad | null> {
    const q = await exec.exec(NVIDIA_SMI_QUERY, { timeoutMs: 30_000 });
    if (q.code !== 0) {
      if (!this.noGpuReading.has(host)) this.d.log.warn('nvidia-smi gives no GPU reading for the online load', { host, code: q.code, stderr: q.stderr.trim().slice(0, 200) });
      this.noGpuReading.add(host);
      return null;
    }
    this.noGpuReading.delete(host);
    const gpus = parseNvidiaSmi(q.stdout);
    const a = await exec.exec(COMPUTE_APPS_QUERY, { timeoutMs: 30_000 });
    const apps = a.code === 0 ? parseComputeApps(a.stdout) : null;
    const uuids = new Set(gpus.filter((g) => held.includes(g.index)).map((g) => g.uuid));
    const pids = apps?.some((p) => uuids.has(p.gpuUuid)) ? await jobPids() : new Set<number>();
    return onlineGpuLoad(gpus, held, apps, pids);
  }

  private decide(host: string, list: LoadSample[]): void {
    const over = overloaded(list, this.d.config.threshold!, this.d.config.windowMs);
    if (!over) return;
    const active = this.d.broker.activeJobs();
    if (active.some((j) => this.d.moves.view(j.id)?.state === 'moving' && this.d.moves.view(j.id)?.from === host)) return;
    const candidates = active.filter((j) => j.host === host && j.state === 'running' && j.queue === 'offline' && checkpoints(j));
    for (const job of candidates) {
      try {
        const to = this.d.moves.begin(job.id, overloadWords(over), undefined, (h) => peakLoad(this.samples.get(h)?.at(-1)));
        this.d.log.info('online load over the threshold: moving an offline job', { host, job: job.id, to, load: over });
        this.samples.set(host, []);
        return;
      } catch (e) {
        this.d.log.info('online load over the threshold, but the job cannot move now', { host, job: job.id, why: (e as Error).message });
      }
    }
  }
}
