/**
 * The broker's hosts: their configured and probed capacity, their state, and the view `GET /v1/hosts` returns.
 * The local host is probed in-process; SSH hosts (type "ssh") through their connection (hosts/sshHosts.ts).
 */
import type { HostConfig } from '../config.ts';
import type { Gpu, HostInfo, HostState } from '../protocol/jobs.ts';
import type { Allocation, HostCapacity } from '../core/scheduler.ts';
import type { Runtime } from '../core/runtime.ts';
import { probeLocal } from './local.ts';
import { GpuUsageHistory } from '../core/gpuUsage.ts';
import type { SshHosts } from './sshHosts.ts';
import type { RemoteExec } from './ssh.ts';
import { GpurunError } from '../protocol/errors.ts';

interface HostEntry {
  config: HostConfig;
  state: HostState;
  /** The last full probe answered and found what the runtime needs. */
  probedUp: boolean;
  /** It has been up at least once in this broker process (else a failing host is down, not unreachable). */
  everUp: boolean;
  lastError: string | null;
  gpus: Gpu[];
  cpus: number;
  memoryMiB: number;
  runtime: string;
  /** The images its Docker has, at the last probe that answered. */
  images: string[];
  /** Transparent checkpoint: null when the host has it, else why not (its last probe that answered). */
  transparent: string | null;

  /** Drained by an admin at run time (`gpurun drain`), over what the config says. */
  drained?: boolean;
}

export class HostRegistry {
  private readonly hosts: HostEntry[];

  private readonly env: NodeJS.ProcessEnv;
  private readonly runtimes: Record<string, Runtime>;
  private readonly ssh: SshHosts | undefined;
  private changed: () => void = () => {};
  private readonly probing = new Set<string>();

  /**
   * `runtimes` maps a runtime kind (HostEntry.runtime, e.g. "process", "docker", "ssh-process") to the runtime that
   * runs it. `ssh` probes the hosts of type "ssh"; a dropped connection re-probes that host at once.
   */
  constructor(configs: HostConfig[], runtimes: Record<string, Runtime>, env: NodeJS.ProcessEnv = process.env, ssh?: SshHosts) {
    this.env = env;
    this.runtimes = runtimes;
    this.ssh = ssh;
    this.hosts = configs.map((config) => ({ config, state: 'down', probedUp: false, everUp: false, lastError: 'not probed yet', gpus: [], cpus: config.cpus ?? 0, memoryMiB: config.memoryMiB ?? 0, runtime: config.type === 'ssh' ? (config.runtime === 'docker' ? 'docker' : 'ssh-process') : 'process', images: [], transparent: config.type === 'ssh' ? 'not probed yet' : 'the local host runs jobs as plain processes; CRIU is used through Docker only' }));
    ssh?.on('lost', (name) => void this.probeHost(name));
    ssh?.on('health', (name) => {
      const h = this.hosts.find((x) => x.config.name === name);
      if (!h) return;
      const wasFailing = h.state === 'unreachable' || h.state === 'lost';
      this.settle(h);
      // Back after failing: probe it fully again (GPUs, Docker) before it takes jobs.
      if (wasFailing && this.ssh!.reach(name).reach === 'up') void this.probeHost(name);
      this.changed();
    });
  }

  /** An SSH host's state from its last full probe and its health checks. */
  private settle(h: HostEntry): void {
    const r = this.ssh!.reach(h.config.name);
    if (r.reach !== 'up' && h.everUp) {
      h.state = r.reach;
      h.lastError = r.lastError;
    } else h.state = !h.probedUp ? 'down' : (h.config.type === 'ssh' && h.config.draining) || h.drained ? 'draining' : 'up';
  }

  /** Called when a host's state changes outside probeAll() (e.g. its connection dropped): the broker re-schedules. */
  onChange(fn: () => void): void {
    this.changed = fn;
  }

  /** Probes one host now; returns true when anything changed. */
  async probeHost(name: string): Promise<boolean> {
    const h = this.hosts.find((x) => x.config.name === name);
    if (!h || this.probing.has(name)) return false;
    this.probing.add(name);
    try {
      const changed = await this.probeEntry(h);
      if (changed) this.changed();
      return changed;
    } finally {
      this.probing.delete(name);
    }
  }

  private async probeEntry(h: HostEntry): Promise<boolean> {
    const before = JSON.stringify([h.state, h.gpus, h.cpus, h.memoryMiB, h.lastError]);
    if (h.config.type === 'ssh') {
      const p = await this.ssh!.probe(h.config.name);
      // A host that is down keeps what it had when last seen: jobs for it wait instead of being refused.
      if (p.up) {
        h.gpus = p.gpus;
        h.cpus = h.config.cpus ?? p.cpus;
        h.memoryMiB = h.config.memoryMiB ?? p.memoryMiB;
        h.images = p.images ?? [];
        h.transparent = p.transparent === undefined ? 'not probed' : p.transparent;
      }
      h.lastError = p.error;
      h.probedUp = p.up;
      if (p.up) h.everUp = true;
      this.settle(h);
    } else {
      const p = await probeLocal(this.env);
      h.gpus = p.gpus;
      h.cpus = h.config.cpus ?? p.cpus;
      h.memoryMiB = h.config.memoryMiB ?? p.memoryMiB;
      h.lastError = p.error;
      h.state = h.drained ? 'draining' : h.state === 'draining' ? 'draining' : 'up';
    }
    if (h.state !== 'down') this.usage.record(h.config.name, h.gpus, Date.now());
    return JSON.stringify([h.state, h.gpus, h.cpus, h.memoryMiB, h.lastError]) !== before;
  }

  /** Utilisation over the last probes, per GPU (GET /v1/hosts shows it; main.ts keeps it across restarts). */
  readonly usage = new GpuUsageHistory();

  /** Probes every host; a host that cannot be probed is `down` with the reason. Returns true when anything changed. */
  async probeAll(): Promise<boolean> {
    const changed = await Promise.all(this.hosts.map((h) => this.probeEntry(h)));
    return changed.some(Boolean);
  }

  /** The runtime that runs jobs on `host`. */
  runtimeFor(host: string): Runtime {
    const h = this.hosts.find((x) => x.config.name === host);
    const rt = h && this.runtimes[h.runtime];
    if (!rt) throw new Error(`no runtime for host ${host}`);
    return rt;
  }

  names(): string[] {
    return this.hosts.map((h) => h.config.name);
  }

  capacities(): HostCapacity[] {
    return this.hosts.map((h) => {
      const q = this.quarantine(h);
      return { name: h.config.name, up: h.state === 'up', gpus: h.gpus.filter((g) => !q.has(g.index)).map((g) => ({ index: g.index, name: g.name })), cpus: h.cpus, memoryMiB: h.memoryMiB };
    });
  }

  private quarantine(h: HostEntry): ReadonlyMap<number, { xid?: number; detail: string; at: string; source?: 'xid' | 'health' }> {
    return h.config.type === 'ssh' && this.ssh ? this.ssh.quarantined(h.config.name) : new Map();
  }

  /**
   * Lifts the quarantine of GPU `gpu` of `host` (an admin's decision). Throws a GpurunError when the host is unknown
   * or the GPU is not quarantined.
   */
  clearQuarantine(host: string, gpu: number): void {
    const h = this.hosts.find((x) => x.config.name === host);
    if (!h) throw new GpurunError('E_NOT_FOUND', `no host ${host}`, { hint: 'List the hosts with: gpurun hosts' });
    if (h.config.type !== 'ssh' || !this.ssh?.clearQuarantine(host, gpu)) {
      throw new GpurunError('E_CONFLICT', `GPU ${gpu} of ${host} is not quarantined`, { hint: 'gpurun hosts shows which GPUs are.' });
    }
    this.changed();
  }

  /**
   * Drains a host (no new jobs; the broker's move orchestration moves its jobs off) or puts it back (`on` false).
   * Throws a GpurunError for an unknown host.
   */
  setDrained(host: string, on: boolean): void {
    const h = this.hosts.find((x) => x.config.name === host);
    if (!h) throw new GpurunError('E_NOT_FOUND', `no host ${host}`, { hint: 'List the hosts with: gpurun hosts' });
    h.drained = on;
    if (h.config.type === 'ssh' && this.ssh) this.settle(h);
    else if (h.state === 'up' || h.state === 'draining') h.state = on ? 'draining' : 'up';
    this.changed();
  }

  /** Whether `host` can checkpoint a job's container transparently: null when it can, else why not. */
  transparentUnavailable(host: string): string | null {
    const h = this.hosts.find((x) => x.config.name === host);
    return h ? h.transparent : `no host ${host}`;
  }

  /** The host's SSH settings and command channel (hosts of type "ssh" only; undefined for others). */
  sshSide(host: string): { exec: RemoteExec; workDir: string } | undefined {
    const h = this.hosts.find((x) => x.config.name === host);
    if (!h || h.config.type !== 'ssh' || !this.ssh) return undefined;
    return { exec: this.ssh.exec(host), workDir: this.ssh.config(host).workDir };
  }

  /** Names of the hosts whose runtime mounts the workspace (SSH hosts): the only ones a client-served job can use. */
  mountingHosts(): Set<string> {
    return new Set(this.hosts.filter((h) => this.runtimes[h.runtime]?.mountsWorkspace).map((h) => h.config.name));
  }

  totalGpus(): number {
    return this.hosts.reduce((n, h) => n + h.gpus.length, 0);
  }

  info(allocations: Allocation[]): HostInfo[] {
    return this.hosts.map((h) => {
      const mine = allocations.filter((a) => a.host === h.config.name);
      const gpuJob = new Map<number, string>();
      for (const a of mine) for (const g of a.gpuIndices) gpuJob.set(g, a.jobId);
      const q = this.quarantine(h);
      const since = h.config.type === 'ssh' && this.ssh && (h.state === 'unreachable' || h.state === 'lost') ? this.ssh.reach(h.config.name).failingSince : null;
      return {
        name: h.config.name,
        state: h.state,
        lastError: h.lastError,
        ...(since ? { since: new Date(since).toISOString() } : {}),
        runtime: h.runtime,
        gpus: h.gpus.map((g) => {
          const gq = q.get(g.index);
          return { ...g, jobId: gpuJob.get(g.index) ?? null, ...this.usage.view(h.config.name, g.index), ...(gq ? { quarantined: { ...(gq.xid === undefined ? {} : { xid: gq.xid }), detail: gq.detail, at: gq.at, ...(gq.source ? { source: gq.source } : {}) } } : {}) };
        }),
        cpus: h.cpus,
        cpusUsed: mine.reduce((n, a) => n + a.cpus, 0),
        memoryMiB: h.memoryMiB,
        memoryUsedMiB: mine.reduce((n, a) => n + a.memoryMiB, 0),
        labels: h.config.labels,
        ...(h.images.length ? { images: h.images } : {}),
        checkpoint: { cooperative: h.runtime === 'docker' || h.runtime === 'ssh-process', transparent: h.transparent },
        ...this.workspaceNote(h),
      };
    });
  }

  /** How jobs' workspaces are mounted on an SSH host, once its first snapshot mount checked it (HostInfo.workspace). */
  private workspaceNote(h: HostEntry): { workspace?: string } {
    const w = h.config.type === 'ssh' ? this.ssh?.workspaceNote(h.config.name) : undefined;
    return w ? { workspace: w } : {};
  }
}
