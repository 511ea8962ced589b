/**
 * The SSH hosts of the broker config: one connection pool each, probing, and the lookup the SSH runtimes use.
 * Emits `lost` with the host name when a connection to it drops, so its state is checked again at once instead of
 * at the next periodic probe.
 */
import { EventEmitter } from 'node:events';
import type { Gpu } from '../protocol/jobs.ts';
import { GpurunError } from '../protocol/errors.ts';
import type { SshHostConfig } from './sshConfig.ts';
import { SshPool, type RemoteExec } from './ssh.ts';
import { parseProbe, probeScript } from './probe.ts';

export interface SshProbeResult {
  up: boolean;
  gpus: Gpu[];
  cpus: number;
  memoryMiB: number;
  /** Why the host is down, or what is wrong with an up host (e.g. nvidia-smi failing); null when all is well. */
  error: string | null;
}

export class SshHosts extends EventEmitter<{ lost: [string] }> {
  private readonly cfgs = new Map<string, SshHostConfig>();
  private readonly pools = new Map<string, SshPool>();

  constructor(configs: SshHostConfig[]) {
    super();
    for (const c of configs) {
      this.cfgs.set(c.name, c);
      this.pools.set(c.name, new SshPool(c, () => this.emit('lost', c.name)));
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
    return { up: true, gpus: p.gpus, cpus: p.cpus, memoryMiB: p.memoryMiB, error: p.gpuError };
  }

  close(): void {
    for (const p of this.pools.values()) p.close();
  }
}
