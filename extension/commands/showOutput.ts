/** Show Job Output: the job's terminal (a new one replays the output from offset 0 and follows it). */
import { COMMANDS } from '../contributions.ts';
import { jobArg, register, type Ctx } from './common.ts';

export function registerShowOutput(ctx: Ctx): void {
  register(ctx, COMMANDS.showOutput.id, async (arg?: unknown) => {
    const job = await jobArg(ctx, arg, () => true, 'Job whose output to show');
    ctx.terminals.show(ctx.sync.jobs.get(job.id) ?? job);
  });
}
