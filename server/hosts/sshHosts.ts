/**
 * The SSH hosts of the broker config: one connection pool each, probing, health checks, and the lookup the SSH
 * runtimes use. Emits `lost` with the host name when a connection to it drops, so its state is checked again at once
 * instead of at the next periodic probe, and `health` when a host's reachability or its GPU quarantines change.
 */
import { EventEmitter } from 'node:events';
import type { Gpu } from '../protocol/jobs.ts';
import { GpurunError } from '../protocol/errors.ts';
import type { SshHostConfig } from './sshConfig.ts';
import { SshPool, type RemoteExec } from './ssh.ts';
import { parseProbe, probeScript } from './probe.ts';
import { transparentFromProbe } from '../runtimes/criu.ts';
import { HostHealth, healthScript, parseHealth, type GpuEvent, type Quarantine, type QuarantineKeeper } from './health.ts';
import type { HostReach } from '../core/hostHealth.ts';

export interface SshProbeResult {
  up: boolean;
  gpus: Gpu[];
  cpus: number;
  memoryMiB: number;
  /** Why the host is down, or what is wrong with an up host (e.g. nvidia-smi failing); null when all is well. */
  error: string | null;
  /** The images Docker has on the host (up hosts with Docker). */
  images?: string[];
  /** Transparent checkpoint (CRIU through Docker): null when the host has it, else why not. */
  transparent?: string | null;
}

export interface SshHostsOptions {
  /** The grace (ms) before a host whose probes fail is lost (`hostLostAfter`). */
  hostLostAfterMs?: number;
  /** How often each host's health is checked (ms). */
  healthEveryMs?: number;
  /** Where GPU quarantines are kept across broker restarts (the broker's store); absent: in memory only. */
  quarantines?: QuarantineKeeper;
  /** Called with what the health loop noticed (state changes only). */
  log?: (msg: string, fields: Record<string, unknown>) => void;
}

export const DEFAULT_HOST_LOST_AFTER_MS = 60_000;
const HEALTH_EVERY_MS = 5_000;
/**
 * A health check slower than this counts as failed (then a fresh connection is tried, with twice the time). Short on
 * purpose: `unreachable` ends nothing (only the whole grace does), and a blip should show as one.
 */
const HEALTH_TIMEOUT_MS = 5_000;
/** After a failed check, the next one starts this soon (a check that fails takes 5–15 s itself). */
const RECHECK_MS = 1_000;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`${what} did not answer within ${ms / 1000} s`)), ms)))]).finally(() => clearTimeout(t));
}

export class SshHosts extends EventEmitter<{ lost: [string]; health: [string] }> {
  private readonly cfgs = new Map<string, SshHostConfig>();
  private readonly pools = new Map<string, SshPool>();
  readonly health: HostHealth;
  readonly hostLostAfterMs: number;
  private readonly healthEveryMs: number;
  private readonly log: (msg: string, fields: Record<string, unknown>) => void;
  private healthTimer?: NodeJS.Timeout;
  private closed = false;
  /** Health checks under way, by host: a second caller waits for the same one. */
  private readonly checking = new Map<string, Promise<void>>();
  /** What the host's workspace mounts are, once known (set by the SSH side to Mounts.snapshotState). */
  workspaceNote: (host: string) => string | undefined = () => undefined;

  constructor(configs: SshHostConfig[], opts: SshHostsOptions = {}) {
    super();
    this.hostLostAfterMs = opts.hostLostAfterMs ?? DEFAULT_HOST_LOST_AFTER_MS;
    this.healthEveryMs = opts.healthEveryMs ?? HEALTH_EVERY_MS;
    this.log = opts.log ?? (() => {});
    this.health = new HostHealth(this.hostLostAfterMs, opts.quarantines);
    for (const c of configs) {
      this.cfgs.set(c.name, c);
      const dropped = (err: Error) => {
        // Every channel on that connection ended with it (follows, relay mounts): the reason explains their ends.
        this.log('an SSH connection to the host dropped', { host: c.name, err: err.message });
        this.emit('lost', c.name);
      };
      // Never given up by their keepalives: a connection silent after a blip waits for TCP (its channels with it);
      // the health checks decide whether the host is gone, and then its connections go (changed()).
      this.pools.set(c.name, new SshPool(c, dropped, undefined, { keepaliveToleranceMs: Infinity }));
    }
  }

  has(name: string): boolean {
    return this.cfgs.has(name);
  }

  names(): string[] {
    return [...this.cfgs.keys()];
  }

  config(name: string): SshHostConfig {
    const c = this.cfgs.get(name);
    if (!c) throw new GpurunError('E_INTERNAL', `no SSH host ${name}`);
    return c;
  }

  exec(name: string): RemoteExec {
    const p = this.pools.get(name);
    if (!p) throw new GpurunError('E_INTERNAL', `no SSH host ${name}`);
    return p;
  }

  /** Whether the host can be reached now (health checks), with since when it cannot and its last boot id. */
  reach(name: string): HostReach {
    return this.health.reach(name);
  }

  quarantined(name: string): ReadonlyMap<number, Quarantine> {
    return this.health.quarantined(name);
  }

  /** GPU fault events on the given GPUs of a host seen since `sinceIso`. */
  gpuEvents(name: string, gpus: readonly number[], sinceIso: string): GpuEvent[] {
    return this.health.eventsFor(name, gpus, sinceIso);
  }

  clearQuarantine(name: string, gpu: number): boolean {
    const ok = this.health.clear(name, gpu);
    if (ok) this.emit('health', name);
    return ok;
  }

  /** Connects (or reuses the connection) and probes; never rejects: an unreachable host is `up: false` with why. */
  async probe(name: string): Promise<SshProbeResult> {
    const cfg = this.config(name);
    const down = (error: string): SshProbeResult => ({ up: false, gpus: [], cpus: 0, memoryMiB: 0, error });
    let out: string;
    try {
      const r = await this.exec(name).exec(['sh', '-c', probeScript()], { timeoutMs: 20_000 });
      out = r.stdout;
    } catch (e) {
      const err = e as GpurunError;
      return down(err.hint ? `${err.message}. ${err.hint}` : err.message);
    }
    let p;
    try {
      p = parseProbe(out);
    } catch (e) {
      return down((e as Error).message);
    }
    if (!p.sshfs) return down('sshfs is not installed on the host (apt-get install sshfs fuse3)');
    if (cfg.runtime === 'docker' && !p.docker) return down(`${p.dockerError} (runtime "docker" needs it; or set runtime: "process")`);
    if (cfg.runtime === 'process' && !p.processTools) return down('setsid or GNU tail (with --pid) is missing on the host (runtime "process" needs util-linux and coreutils)');
    return { up: true, gpus: p.gpus, cpus: p.cpus, memoryMiB: p.memoryMiB, error: p.gpuError, ...(cfg.runtime === 'docker' ? { images: p.images } : {}), transparent: transparentFromProbe(p.criu, cfg.runtime === 'docker') };
  }

  /**
   * One health check of a host: over its pooled connection, and when that fails or hangs, over a fresh connection
   * (so a connection that hangs does not make a reachable host look lost). Only when both fail is the host failing.
   */
  checkHealth(name: string): Promise<void> {
    let p = this.checking.get(name);
    if (!p) {
      p = this.checkHealthNow(name).finally(() => this.checking.delete(name));
      this.checking.set(name, p);
    }
    return p;
  }

  private async checkHealthNow(name: string): Promise<void> {
    const { reach: before, bootId: bootBefore } = this.reach(name);
    // A check that fails, hangs, or whose connection drops part way (output cut short) is tried again over a fresh
    // connection: that one says why the host cannot be reached (e.g. ECONNREFUSED once its sshd is gone).
    const read = async (exec: RemoteExec, ms: number, what: string) => parseHealth((await withTimeout(exec.exec(['sh', '-c', healthScript()]), ms, what)).stdout);
    let reading;
    try {
      reading = await read(this.exec(name), HEALTH_TIMEOUT_MS, `host ${name}`);
    } catch (pooled) {
      const fresh = new SshPool(this.config(name), () => {}, undefined, { readyTimeoutMs: HEALTH_TIMEOUT_MS });
      try {
        reading = await read(fresh, HEALTH_TIMEOUT_MS * 2, `host ${name} (fresh connection)`);
      } catch (e) {
        const why = `${(pooled as Error).message}; a fresh connection: ${(e as Error).message}`;
        if (this.health.failed(name, Date.now(), why)) this.changed(name, before);
        // Checked again soon rather than at the next round: the few seconds a link is back between blips must be
        // seen, or the blips add up to the grace and a reachable host is called lost.
        if (!this.closed) setTimeout(() => void this.checkHealth(name).catch(() => {}), RECHECK_MS).unref();
        return;
      } finally {
        fresh.close();
      }
    }
    if (this.health.reading(name, Date.now(), reading)) this.changed(name, before);
    // A new boot id: the connections from before the reboot lead nowhere (their processes are gone).
    if (bootBefore && reading.bootId && reading.bootId !== bootBefore) this.pools.get(name)?.dropAll();
  }

  private changed(name: string, before: string): void {
    const r = this.reach(name);
    if (r.reach !== before) this.log('host reachability changed', { host: name, from: before, to: r.reach, ...(r.lastError ? { why: r.lastError } : {}) });
    // Lost for the whole grace: its connections (silent since) are given up with every channel on them.
    if (r.reach === 'lost' && before !== 'lost') this.pools.get(name)?.dropAll();
    this.emit('health', name);
  }

  /** Checks every host's health now and then every few seconds. */
  startHealth(): void {
    const all = () => {
      for (const n of this.cfgs.keys()) void this.checkHealth(n).catch((err) => this.log('health check failed', { host: n, err: (err as Error).message }));
    };
    all();
    this.healthTimer = setInterval(all, this.healthEveryMs);
    this.healthTimer.unref();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.healthTimer);
    for (const p of this.pools.values()) p.close();
  }
}
