/** Rerun Job: the same command, workspace and resources as a new job. */
import type { SubmitRequest } from '../../server/protocol/jobs.ts';
import { COMMANDS } from '../contributions.ts';
import { jobArg, register, submitAndShow, type Ctx } from './common.ts';

export function registerRerunJob(ctx: Ctx): void {
  register(ctx, COMMANDS.rerunJob.id, async (arg?: unknown) => {
    // Fetched again: the event stream that fills the sidebar carries no env values.
    const job = await (await ctx.broker.connection()).client.get((await jobArg(ctx, arg, () => true, 'Job to run again')).id);
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
