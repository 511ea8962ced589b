/**
 * The host pool as a Backend: placement by core/scheduler.ts over the hosts of the registry (away from what an
 * attempt must avoid), and each attempt run by its host's runtime (local process, Docker or process over SSH).
 *
 * An attempt's runtime handle carries `logOffset`, the byte of the job's log where its output begins: followers of
 * the SSH runtimes count what the log already has of this attempt from there.
 */
import { GpurunError } from '../protocol/errors.ts';
import type { AttemptEnd, AttemptEvents, AttemptPlacement, AttemptSpec, Avoid, Backend, BackendDefaults, PlaceRequest } from '../core/backend.ts';
import { schedule, unsatisfiableReason, waitReason, type Allocation, type HostCapacity } from '../core/scheduler.ts';
import type { StoredAttempt, StoredJob } from '../core/store.ts';
import type { ValidSubmit } from '../core/submit.ts';
import type { HostRegistry } from '../hosts/registry.ts';
import type { LogFiles } from '../logs/logFiles.ts';
import { HOSTS_BACKEND } from '../config.ts';

/** How long a discarded attempt's host is waited for between tries. */
const DISCARD_RETRY_MS = 10_000;

export class HostPool implements Backend {
  readonly name = HOSTS_BACKEND;
  private readonly hosts: HostRegistry;
  private readonly logs: LogFiles;

  constructor(hosts: HostRegistry, logs: LogFiles) {
    this.hosts = hosts;
    this.logs = logs;
  }

  defaults(c: { gpus: number | 'auto'; image?: string }): BackendDefaults {
    return { gpus: c.gpus === 'auto' ? (this.hosts.totalGpus() > 0 ? 1 : 0) : c.gpus, ...(c.image ? { image: c.image } : {}) };
  }

  admit(v: ValidSubmit): void {
    let usable = this.hosts.capacities();
    if (v.workspaceFrom === 'client') {
      const mounting = this.hosts.mountingHosts();
      usable = usable.filter((h) => mounting.has(h.name));
      if (usable.length === 0) {
        throw new GpurunError('E_BAD_REQUEST', 'workspaceFrom: "client" needs a host that mounts the workspace (an SSH host), and this broker has none: its hosts run jobs in place', {
          hint: 'Leave out --serve-workspace (set gpurun.workspaceFrom to "broker" in VS Code): this broker reads the workspace itself.',
        });
      }
    }
    const why = unsatisfiableReason(usable, v.resources);
    if (why) throw new GpurunError('E_UNSATISFIABLE', why, { hint: 'Ask for fewer GPUs, CPUs or less memory (or another GPU type), or ask an admin to add a larger host.' });
  }

  place(queued: PlaceRequest[], holding: Allocation[]): AttemptPlacement[] {
    const caps = this.hosts.capacities();
    const out: AttemptPlacement[] = [];
    // Jobs that avoid nothing are placed together; each that avoids something gets its own view of the hosts.
    const plain = queued.filter((q) => !q.avoid.hosts.length && !q.avoid.gpus.length);
    const held = [...holding];
    const take = (placed: AttemptPlacement[], req: PlaceRequest[]) => {
      for (const p of placed) {
        const job = req.find((r) => r.job.id === p.jobId)!.job;
        held.push({ jobId: p.jobId, host: p.host!, gpuIndices: p.gpuIndices, cpus: job.resources.cpus, memoryMiB: job.resources.memoryMiB });
        out.push(p);
      }
    };
    const avoiding = queued.filter((q) => !plain.includes(q));
    for (const q of avoiding) take(schedule(hostsAvoiding(caps, q.avoid, q.job), held, [q.job]), [q]);
    take(schedule(caps, held, plain.map((q) => q.job)), plain);
    return out;
  }

  async start(a: AttemptSpec, ev: AttemptEvents): Promise<Record<string, unknown>> {
    const host = a.host!;
    const rt = this.hosts.runtimeFor(host);
    if (a.job.workspaceFrom === 'client' && !rt.mountsWorkspace) {
      throw new GpurunError('E_BAD_REQUEST', `host ${host} runs jobs without a workspace mount (${rt.kind} runtime); a workspace served by the client needs an SSH host`);
    }
    const ref = await rt.start({ job: a.job, host, gpuIndices: a.gpuIndices, logPath: this.logs.path(a.job.id), env: a.env, n: a.n, ...(a.moved ? { moved: a.moved } : {}) });
    ev.running({ host, reason: `running on ${host} (${a.gpuIndices.length ? `GPU ${a.gpuIndices.join(',')}` : 'no GPU'})` });
    return { ...ref, logOffset: a.logOffset };
  }

  wait(_job: StoredJob, attempt: StoredAttempt, signal: AbortSignal): Promise<AttemptEnd> {
    return this.hosts.runtimeFor(attempt.host!).wait(attempt.runtimeRef!, signal);
  }

  async stop(_job: StoredJob, attempt: StoredAttempt, graceMs: number): Promise<void> {
    if (attempt.runtimeRef && attempt.host) await this.hosts.runtimeFor(attempt.host).stop(attempt.runtimeRef, graceMs);
  }

  async recover(job: StoredJob, attempt: StoredAttempt, ev: AttemptEvents, earlier: StoredAttempt[] = []): Promise<Record<string, unknown> | null> {
    if (attempt.runtimeRef) return attempt.runtimeRef;
    if (!attempt.host) return null;
    const held = earlier.filter((a) => a.fault === 'migrated' && a.host !== attempt.host && typeof a.runtimeRef?.container === 'string').map((a) => String(a.runtimeRef!.container));
    const ref = await this.hosts.runtimeFor(attempt.host).recover?.(job, this.logs.path(job.id), attempt.n, held);
    if (!ref) return null;
    ev.running({ host: attempt.host, reason: `running on ${attempt.host} (${attempt.gpuIndices.length ? `GPU ${attempt.gpuIndices.join(',')}` : 'no GPU'})` });
    return { ...ref, logOffset: attempt.logOffset };
  }

  /**
   * Stops the attempt, then follows it to its end into /dev/null (not the job's log), which also removes its
   * container or run directory and its mount. Tries again while the host cannot be reached.
   */
  async discard(_job: StoredJob, attempt: StoredAttempt, signal: AbortSignal): Promise<void> {
    if (!attempt.runtimeRef || !attempt.host || !this.knows(attempt.host)) return;
    const rt = this.hosts.runtimeFor(attempt.host);
    const ref = { ...attempt.runtimeRef, logPath: '/dev/null', logOffset: 0 };
    while (!signal.aborted) {
      try {
        await rt.stop(ref, 2_000);
        await rt.wait(ref, signal);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, DISCARD_RETRY_MS).unref());
      }
    }
  }

  knows(host: string): boolean {
    return this.hosts.names().includes(host);
  }

  describe(job: StoredJob, holding: Allocation[]): { reason?: string } {
    if (job.state !== 'queued' || !job.reason.startsWith('submitted') && !job.reason.startsWith('waiting')) return {};
    return { reason: waitReason(this.hosts.capacities(), holding, job.resources) };
  }

  close(): void {}
}

/**
 * The hosts as a job that must avoid some sees them: without the lost hosts and the failed GPUs, unless that leaves
 * no host that could ever run it (then it may go back: better than waiting forever).
 */
export function hostsAvoiding(caps: HostCapacity[], avoid: Avoid, job: Pick<StoredJob, 'resources'>): HostCapacity[] {
  const view = caps
    .filter((h) => !avoid.hosts.includes(h.name))
    .map((h) => ({ ...h, gpus: h.gpus.filter((g) => !avoid.gpus.some((a) => a.host === h.name && a.index === g.index)) }));
  return unsatisfiableReason(view, job.resources) ? caps : view;
}
