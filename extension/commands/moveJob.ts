/**
 * Move Job… (`gpurun migrate JOB [--to HOST]`): a running job moves to another host with its state, keeping its id
 * and log. A pick offers "any host" (the broker picks) and the hosts that are up; the row then shows the move from
 * job.move. The Jobs view lists only a person's own jobs unless they are an admin, so every running row may be moved.
 */
import * as vscode from 'vscode';
import { COMMANDS } from '../contributions.ts';
import { moveTargets } from '../core/hostTree.ts';
import { Cancelled, jobArg, register, type Ctx } from './common.ts';

export function registerMoveJob(ctx: Ctx): void {
  register(ctx, COMMANDS.moveJob.id, async (arg?: unknown) => {
    const job = await jobArg(ctx, arg, (j) => j.state === 'running', 'Job to move');
    // The hosts as they are now, not as last drawn: one may have been drained meanwhile.
    await ctx.hosts.refresh();
    const pick = await vscode.window.showQuickPick(moveTargets(job.host, ctx.hosts.current()), { placeHolder: `Move ${job.id} from ${job.host ?? '?'} to` });
    if (!pick) throw new Cancelled();
    const conn = await ctx.broker.connection();
    const after = await conn.client.migrate(job.id, pick.to);
    ctx.log.info(`move ${job.id}: ${after.move ? `${after.move.from} → ${after.move.to} (${after.move.cause})` : after.state}`);
    ctx.sync.upsert(after);
  });
}
