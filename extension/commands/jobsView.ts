/** Filter Jobs… and Clear Finished Jobs: what the Jobs view shows (the broker keeps every job; `gpurun ls` lists them). */
import * as vscode from 'vscode';
import { COMMANDS, STATE } from '../contributions.ts';
import { register, type Ctx } from './common.ts';

export function registerJobsView(ctx: Ctx): void {
  ctx.sync.jobs.clearedBefore = ctx.context.workspaceState.get<string>(STATE.clearedBefore) ?? '';
  register(ctx, COMMANDS.filterJobs.id, async () => {
    const text = await vscode.window.showInputBox({
      title: 'Filter Jobs',
      prompt: 'Show only jobs whose name, id, command or state contains this (any case); empty shows all',
      value: ctx.sync.jobs.filter,
    });
    if (text === undefined) return;
    ctx.sync.jobs.filter = text.trim();
    await vscode.commands.executeCommand('setContext', 'gpurun.jobsFiltered', !!text.trim());
    ctx.sync.redraw();
  });
  register(ctx, COMMANDS.clearFinished.id, async () => {
    const now = new Date().toISOString();
    ctx.sync.jobs.clearedBefore = now;
    await ctx.context.workspaceState.update(STATE.clearedBefore, now);
    ctx.sync.redraw();
  });
}
