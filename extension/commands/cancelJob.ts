/** Cancel Job: from the sidebar's inline action (no question: the button says it), or a pick of active jobs. */
import { isFinal } from '../../server/protocol/jobs.ts';
import { COMMANDS } from '../contributions.ts';
import { jobArg, register, type Ctx } from './common.ts';

export function registerCancelJob(ctx: Ctx): void {
  register(ctx, COMMANDS.cancelJob.id, async (arg?: unknown) => {
    const job = await jobArg(ctx, arg, (j) => !isFinal(j.state), 'Job to cancel');
    const conn = await ctx.broker.connection();
    const after = await conn.client.cancel(job.id);
    ctx.log.info(`cancel ${job.id}: ${after.state} (${after.reason})`);
    ctx.sync.upsert(after);
  });
}
