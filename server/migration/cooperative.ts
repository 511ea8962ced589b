/**
 * The cooperative checkpoint (works on every SSH host, Docker or plain processes): the job gets its checkpoint signal
 * (GPURUN_CHECKPOINT_SIGNAL, SIGUSR1 unless it asked for another), writes its state into GPURUN_CHECKPOINT_DIR (the
 * host folder hostCheckpointDir, mounted into its container, or that folder itself for a plain process) and exits
 * with CHECKPOINT_EXIT_CODE. The folder is copied while the
 * job runs and again, incrementally, once it stopped; the next attempt starts with GPURUN_RESUME_FROM set to it.
 * A job that does not exit in time is left running: nothing here ever kills it.
 */
import { GpurunError } from '../protocol/errors.ts';
import type { StoredJob } from '../core/store.ts';
import { copyDir } from './copy.ts';
import { CHECKPOINT_EXIT_CODE, CONTAINER_CHECKPOINT_DIR, DEFAULT_CHECKPOINT_SIGNAL, hostCheckpointDir, type Checkpointer, type CopyResult, type HostSide, type MoveContext } from './checkpoint.ts';
import type { AttemptEnd } from '../core/backend.ts';
import { CHECKPOINT_SIGNALS } from '../core/jobOptions.ts';

/** The signal the job asked to get for a checkpoint (stored in its env at submit). */
export function checkpointSignal(job: Pick<StoredJob, 'env'>): string {
  return job.env.GPURUN_CHECKPOINT_SIGNAL ?? DEFAULT_CHECKPOINT_SIGNAL;
}

/** Whether the job said at submit that it answers the checkpoint signal (`--checkpoint`). */
export function checkpoints(job: Pick<StoredJob, 'env'>): boolean {
  return job.env.GPURUN_CHECKPOINT_SIGNAL !== undefined;
}

export class CooperativeCheckpointer implements Checkpointer {
  readonly method = 'cooperative' as const;

  unavailable(): string | null {
    return null;
  }

  isCheckpointEnd(end: AttemptEnd | { startError: string }): boolean {
    return 'exitCode' in end && end.exitCode === CHECKPOINT_EXIT_CODE;
  }

  precopy(ctx: MoveContext): Promise<CopyResult> {
    return copyDir(ctx.from, hostCheckpointDir(ctx.from.workDir, ctx.job.id), ctx.to, hostCheckpointDir(ctx.to.workDir, ctx.job.id), ctx.signal);
  }

  async checkpoint(ctx: MoveContext): Promise<{ at: string }> {
    const sig = checkpointSignal(ctx.job);
    if (!(CHECKPOINT_SIGNALS as readonly string[]).includes(sig)) throw new GpurunError('E_CONFLICT', `job ${ctx.job.id} asks for the checkpoint signal ${sig}, which is none of ${CHECKPOINT_SIGNALS.join(', ')}`);
    if (!ctx.alreadyAsked) {
      await ctx.signalJob(sig);
      ctx.log('checkpoint signal sent', { signal: sig });
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new GpurunError('E_CONFLICT', `the job did not checkpoint within ${Math.round(ctx.deadlineMs / 1000)} s of ${sig} (it should write its state to $GPURUN_CHECKPOINT_DIR and exit ${CHECKPOINT_EXIT_CODE}); it goes on running on ${ctx.from.host}`)), ctx.deadlineMs);
    });
    try {
      return await Promise.race([ctx.sourceEnded, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  transfer(ctx: MoveContext): Promise<CopyResult> {
    return this.precopy(ctx);
  }

  resume(): { env: Record<string, string> } {
    return { env: { GPURUN_RESUME_FROM: CONTAINER_CHECKPOINT_DIR } };
  }

  async discard(side: HostSide, job: StoredJob): Promise<void> {
    await side.exec.exec(['rm', '-rf', hostCheckpointDir(side.workDir, job.id)], { timeoutMs: 60_000 });
  }
}
