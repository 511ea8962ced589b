/** Rerun Job: the same command, workspace and resources as a new job; Rerun with Changes: edit them first. */
import type { Job, SubmitRequest } from '../../server/protocol/jobs.ts';
import { COMMANDS } from '../contributions.ts';
import { Cancelled, fromTree, jobArg, register, submitAndShow, type Ctx } from './common.ts';
import { editRequest } from './editRequest.ts';

export function registerRerunJob(ctx: Ctx): void {
  register(ctx, COMMANDS.rerunJob.id, async (arg?: unknown) => {
    // Rows stay where they are while the new job appears, so a second click reruns the same job, not its neighbour.
    if (fromTree(arg)) ctx.sync.holdRows();
    const job = await fullJob(ctx, await jobArg(ctx, arg, () => true, 'Job to run again'));
    const req = rerunRequest(job);
    await submitAndShow(ctx, req);
  });
}

/** What a job asked for, as a new request. */
export function rerunRequest(job: Job): SubmitRequest {
  const r = job.resources;
  return {
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
}

export function registerRerunWithChanges(ctx: Ctx): void {
  register(ctx, COMMANDS.rerunWithChanges.id, async (arg?: unknown) => {
    const job = await fullJob(ctx, await jobArg(ctx, arg, () => true, 'Job to run again with changes'));
    const req = await editRequest(rerunRequest(job), `Rerun ${job.id} with changes`, ['command', 'gpus', 'queue', 'time', 'memory', 'cpus', 'image', 'env']);
    if (!req) throw new Cancelled();
    await submitAndShow(ctx, req);
  });
}

/** The job as the broker has it, env values included (the event stream that fills the sidebar carries only names). */
async function fullJob(ctx: Ctx, job: Job): Promise<Job> {
  return (await ctx.broker.connection()).client.get(job.id);
}
