/**
 * Draining a host (`gpurun drain HOST`): it takes no new jobs (the registry's state `draining`), its offline jobs that
 * checkpoint are moved off, the rest run to their end. `gpurun hosts` shows "draining: N jobs moving, M running".
 * Jobs that could not move yet (no room elsewhere) are tried again every few seconds while the host drains.
 */
import type { HostInfo } from '../protocol/jobs.ts';
import type { Broker } from '../broker.ts';
import type { HostRegistry } from '../hosts/registry.ts';
import type { Logger } from '../logger.ts';
import type { MoveManager } from './manager.ts';
import { checkpoints } from './cooperative.ts';

const RETRY_MS = 5_000;

export class Drains {
  private readonly draining = new Map<string, NodeJS.Timeout>();
  private readonly broker: Broker;
  private readonly hosts: HostRegistry;
  private readonly moves: MoveManager;
  private readonly log: Logger;

  constructor(d: { broker: Broker; hosts: HostRegistry; moves: MoveManager; log: Logger }) {
    this.broker = d.broker;
    this.hosts = d.hosts;
    this.moves = d.moves;
    this.log = d.log;
  }

  /** Drains (`on`) or puts back a host. */
  set(host: string, on: boolean, by: string): void {
    this.hosts.setDrained(host, on);
    clearInterval(this.draining.get(host));
    this.draining.delete(host);
    if (on) {
      this.log.info('draining a host', { host, by });
      const t = setInterval(() => this.moveOff(host, by), RETRY_MS);
      t.unref();
      this.draining.set(host, t);
      this.moveOff(host, by);
    } else this.log.info('host takes jobs again', { host, by });
  }

  /** Starts moving the host's offline jobs that checkpoint and are not moving yet. */
  private moveOff(host: string, by: string): void {
    for (const job of this.broker.activeJobs()) {
      // A job whose move was given up (it did not checkpoint) is not asked again: it runs to its end.
      if (job.host !== host || job.state !== 'running' || job.queue !== 'offline' || !checkpoints(job) || this.moves.view(job.id)) continue;
      try {
        this.moves.begin(job.id, `${host} drained by ${by}`, undefined, undefined, { restartIfStuck: true });
      } catch (e) {
        this.log.info('drain: a job cannot move yet', { host, job: job.id, why: (e as Error).message });
      }
    }
  }

  /** Adds "draining: N jobs moving, M running" to each draining host. */
  view(hosts: HostInfo[]): HostInfo[] {
    return hosts.map((h) => {
      if (h.state !== 'draining') return h;
      let moving = 0;
      let running = 0;
      for (const j of this.broker.activeJobs()) {
        const m = this.moves.view(j.id);
        if (m?.state === 'moving' && m.from === h.name) moving++;
        else if (j.host === h.name && (j.state === 'running' || j.state === 'starting')) running++;
      }
      return { ...h, drain: { moving, running } };
    });
  }

  close(): void {
    for (const t of this.draining.values()) clearInterval(t);
  }
}
