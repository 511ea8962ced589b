/**
 * The transparent checkpoint (hosts whose probe found CRIU and Docker's experimental mode): the job's container is
 * checkpointed by CRIU (`docker checkpoint create`, which stops it), the images are copied to the destination through
 * the broker, and the next attempt creates the same container there (same name, network, mounts; the workspace
 * mounted again) and starts it from the images (runtimes/criu.ts). The job needs to do nothing.
 *
 * No pre-copy: CRIU's memory pre-copy needs the kernel's soft-dirty page tracking, which these hosts lack, and the
 * images exist only once the container is stopped; so the whole image travels after the stop.
 */
import { GpurunError } from '../protocol/errors.ts';
import type { StoredJob } from '../core/store.ts';
import type { AttemptEnd } from '../core/backend.ts';
import { checkpointContainer, checkpointDone, checkpointName, criuDir } from '../runtimes/criu.ts';
import { copyDir } from './copy.ts';
import type { Checkpointer, CopyResult, HostSide, MoveContext, RestoreSpec } from './checkpoint.ts';

export class TransparentCheckpointer implements Checkpointer {
  readonly method = 'transparent' as const;
  private readonly why: (host: string) => string | null;
  /** Jobs whose container is being checkpointed now: its stop is the checkpoint, not a failure. */
  private readonly inFlight = new Set<string>();

  /** `unavailable(host)`: the host probe's answer (HostRegistry.transparentUnavailable). */
  constructor(unavailable: (host: string) => string | null) {
    this.why = unavailable;
  }

  unavailable(host: string): string | null {
    return this.why(host);
  }

  /** `docker checkpoint create` stops the container with SIGKILL's status (137) once the images are written. */
  isCheckpointEnd(end: AttemptEnd | { startError: string }): boolean {
    return this.inFlight.size > 0 && 'exitCode' in end && !end.oomKilled && (end.exitCode === 137 || end.signal === 'SIGKILL');
  }

  async precopy(): Promise<CopyResult> {
    return { bytes: 0, files: 0, ms: 0 };
  }

  async checkpoint(ctx: MoveContext): Promise<{ at: string }> {
    const container = String(ctx.attempt.runtimeRef?.container ?? '');
    if (!container) throw new GpurunError('E_CONFLICT', `job ${ctx.job.id} has no container to checkpoint`);
    this.inFlight.add(ctx.job.id);
    try {
      // A broker taking the move on after a restart waits for the dump its predecessor started (or starts it).
      const { ms } = await checkpointContainer(ctx.from.exec, container, criuDir(ctx.from.workDir, ctx.job.id), checkpointName(ctx.attempt.n), ctx.deadlineMs, !ctx.alreadyAsked);
      ctx.log('transparent checkpoint taken', { ms });
      // The broker sees the container's stop through its follower; the move goes on once it has.
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new GpurunError('E_CONFLICT', 'the checkpointed container did not stop')), 60_000);
      });
      try {
        return await Promise.race([ctx.sourceEnded, late]);
      } finally {
        clearTimeout(timer);
      }
    } finally {
      this.inFlight.delete(ctx.job.id);
    }
  }

  /** Copies this move's images only (`criu/ID/move-N`): other folders there are earlier moves' leftovers. */
  async transfer(ctx: MoveContext): Promise<CopyResult> {
    const name = checkpointName(ctx.attempt.n);
    // The engine writes the images out after the container has stopped: copied once the dump has ended.
    const done = await checkpointDone(ctx.from.exec, criuDir(ctx.from.workDir, ctx.job.id), name, ctx.deadlineMs);
    if (!done.ok) throw new GpurunError('E_CONFLICT', `the checkpoint's images on ${ctx.from.host} are not complete: ${done.err}`);
    return copyDir(ctx.from, `${criuDir(ctx.from.workDir, ctx.job.id)}/${name}`, ctx.to, `${criuDir(ctx.to.workDir, ctx.job.id)}/${name}`, ctx.signal);
  }

  resume(ctx: MoveContext): { env: Record<string, string>; restore: RestoreSpec } {
    return { env: {}, restore: { method: 'transparent', dir: criuDir(ctx.to.workDir, ctx.job.id), name: checkpointName(ctx.attempt.n) } };
  }

  async discard(side: HostSide, job: StoredJob): Promise<void> {
    await side.exec.exec(['rm', '-rf', criuDir(side.workDir, job.id)], { timeoutMs: 60_000 });
  }
}
