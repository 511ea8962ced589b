/** Refresh: reconnect the event stream (which lists the jobs again) and fetch the hosts. */
import { COMMANDS } from '../contributions.ts';
import { register, type Ctx } from './common.ts';

export function registerRefresh(ctx: Ctx): void {
  register(ctx, COMMANDS.refresh.id, async () => {
    ctx.sync.restart();
    await ctx.hosts.refresh();
  });
  register(ctx, COMMANDS.showLog.id, () => ctx.log.show());
}
