/** Rerun Job: the same command, workspace and resources as a new job. */
import type { SubmitRequest } from '../../server/protocol/jobs.ts';
import { COMMANDS } from '../contributions.ts';
import { fromTree, jobArg, register, submitAndShow, type Ctx } from './common.ts';

export function registerRerunJob(ctx: Ctx): void {
  register(ctx, COMMANDS.rerunJob.id, async (arg?: unknown) => {
    // Rows stay where they are while the new job appears, so a second click reruns the same job, not its neighbour.
    if (fromTree(arg)) ctx.sync.holdRows();
    const job = await jobArg(ctx, arg, () => true, 'Job to run again');
    const r = job.resources;
    const req: SubmitRequest = {
      command: job.command,
      workspace: job.workspace,
      gpus: r.gpus,
      cpus: r.cpus,
      memory: r.memoryMiB,
      time: r.timeLimitSec,
      queue: job.queue,
      name: job.name,
      ...(r.gpuType ? { gpuType: r.gpuType } : {}),
      ...(job.image ? { image: job.image } : {}),
      ...(Object.keys(job.env).length ? { env: job.env } : {}),
    };
    await submitAndShow(ctx, req);
  });
}
