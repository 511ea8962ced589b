/**
 * The broker's hosts: their configured and probed capacity, their state, and the view `GET /v1/hosts` returns.
 * Only the local host for now; SSH hosts plug in here.
 */
import type { HostConfig } from '../config.ts';
import type { Gpu, HostInfo, HostState } from '../protocol/jobs.ts';
import type { Allocation, HostCapacity } from '../core/scheduler.ts';
import type { Runtime } from '../core/runtime.ts';
import { probeLocal } from './local.ts';

interface HostEntry {
  config: HostConfig;
  state: HostState;
  lastError: string | null;
  gpus: Gpu[];
  cpus: number;
  memoryMiB: number;
  runtime: string;
}

export class HostRegistry {
  private readonly hosts: HostEntry[];

  private readonly env: NodeJS.ProcessEnv;
  private readonly runtimes: Record<string, Runtime>;

  /** `runtimes` maps a runtime kind (HostEntry.runtime, e.g. "process") to the runtime that runs it. */
  constructor(configs: HostConfig[], runtimes: Record<string, Runtime>, env: NodeJS.ProcessEnv = process.env) {
    this.env = env;
    this.runtimes = runtimes;
    this.hosts = configs.map((config) => ({ config, state: 'down', lastError: 'not probed yet', gpus: [], cpus: 0, memoryMiB: 0, runtime: 'process' }));
  }

  /** Probes every host; a host that cannot be probed is `down` with the reason. Returns true when anything changed. */
  async probeAll(): Promise<boolean> {
    let changed = false;
    await Promise.all(
      this.hosts.map(async (h) => {
        const before = JSON.stringify([h.state, h.gpus, h.cpus, h.memoryMiB, h.lastError]);
        const p = await probeLocal(this.env);
        h.gpus = p.gpus;
        h.cpus = h.config.cpus ?? p.cpus;
        h.memoryMiB = h.config.memoryMiB ?? p.memoryMiB;
        h.lastError = p.error;
        if (h.state !== 'draining') h.state = 'up';
        if (JSON.stringify([h.state, h.gpus, h.cpus, h.memoryMiB, h.lastError]) !== before) changed = true;
      }),
    );
    return changed;
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
    return this.hosts.map((h) => ({ name: h.config.name, up: h.state === 'up', gpus: h.gpus.map((g) => ({ index: g.index, name: g.name })), cpus: h.cpus, memoryMiB: h.memoryMiB }));
  }

  totalGpus(): number {
    return this.hosts.reduce((n, h) => n + h.gpus.length, 0);
  }

  info(allocations: Allocation[]): HostInfo[] {
    return this.hosts.map((h) => {
      const mine = allocations.filter((a) => a.host === h.config.name);
      const gpuJob = new Map<number, string>();
      for (const a of mine) for (const g of a.gpuIndices) gpuJob.set(g, a.jobId);
      return {
        name: h.config.name,
        state: h.state,
        lastError: h.lastError,
        runtime: h.runtime,
        gpus: h.gpus.map((g) => ({ ...g, jobId: gpuJob.get(g.index) ?? null })),
        cpus: h.cpus,
        cpusUsed: mine.reduce((n, a) => n + a.cpus, 0),
        memoryMiB: h.memoryMiB,
        memoryUsedMiB: mine.reduce((n, a) => n + a.memoryMiB, 0),
        labels: h.config.labels,
      };
    });
  }
}
