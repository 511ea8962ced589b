/**
 * Cancel Job: from the sidebar's inline action (no question: the button says it), or a pick of active jobs. From the
 * sidebar, the rows are held in place first, so the job that moves up next is not under the pointer for a second click.
 */
import { isFinal } from '../../server/protocol/jobs.ts';
import { COMMANDS } from '../contributions.ts';
import { fromTree, jobArg, register, type Ctx } from './common.ts';

export function registerCancelJob(ctx: Ctx): void {
  register(ctx, COMMANDS.cancelJob.id, async (arg?: unknown) => {
    if (fromTree(arg)) ctx.sync.holdRows();
    const job = await jobArg(ctx, arg, (j) => !isFinal(j.state), 'Job to cancel');
    // Held rows keep an ended job under the pointer: a second click says so instead of cancelling anything.
    if (isFinal((ctx.sync.jobs.get(job.id) ?? job).state)) return;
    const conn = await ctx.broker.connection();
    ctx.sync.cancelledHere.add(job.id);
    const after = await conn.client.cancel(job.id);
    ctx.log.info(`cancel ${job.id}: ${after.state} (${after.reason})`);
    ctx.sync.upsert(after);
  });
}
