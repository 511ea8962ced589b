/**
 * When a job this window saw running ends (not cancelled from here) and its terminal is not in view: a notification with how it ended, its
 * last lines of output, and Show Output / Rerun. Setting gpurun.notifyOnEnd: whenHidden (default), always, never.
 */
import * as vscode from 'vscode';
import { isFinal, type Job } from '../server/protocol/jobs.ts';
import { lastLines } from '../server/protocol/text.ts';
import { endNotice } from './core/notice.ts';
import { COMMANDS, SETTINGS, SETTINGS_SECTION } from './contributions.ts';
import type { Ctx } from './commands/common.ts';

/** How much output the notification reads (the end of it) and shows. */
const TAIL_BYTES = 8 * 1024;
const TAIL_LINES = 3;

export function registerJobNotifier(ctx: Ctx): void {
  const active = new Set<string>();
  ctx.context.subscriptions.push(
    ctx.sync.onDidChange((job) => {
      if (!job) {
        // A list (after a connect): remember what is active now; ends of jobs never seen active are not news.
        for (const j of ctx.sync.jobs.all()) if (!isFinal(j.state)) active.add(j.id);
        return;
      }
      if (!isFinal(job.state)) return void active.add(job.id);
      if (!active.delete(job.id) || ctx.sync.cancelledHere.delete(job.id)) return;
      const mode = vscode.workspace.getConfiguration(SETTINGS_SECTION).get<string>(SETTINGS.notifyOnEnd.key, SETTINGS.notifyOnEnd.default);
      if (mode === 'never' || (mode === 'whenHidden' && ctx.terminals.inView(job.id))) return;
      void notify(ctx, job);
    }),
  );
}

async function notify(ctx: Ctx, job: Job): Promise<void> {
  let tail = '';
  try {
    const conn = await ctx.broker.connection();
    // The API reads from an offset only: keep the end of what comes.
    let end = Buffer.alloc(0);
    for await (const { data } of conn.client.logs(job.id, 0)) {
      end = Buffer.concat([end, data]);
      if (end.length > TAIL_BYTES) end = end.subarray(end.length - TAIL_BYTES);
    }
    tail = lastLines(end.toString('utf8'), TAIL_LINES);
  } catch (err) {
    ctx.log.warn(`last lines of ${job.id}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const n = endNotice(job, tail);
  ctx.log.info(`notify: ${n.text}`);
  const show = n.ok ? vscode.window.showInformationMessage : vscode.window.showWarningMessage;
  const pick = await show(n.text, 'Show Output', 'Rerun');
  if (pick === 'Show Output') await vscode.commands.executeCommand(COMMANDS.showOutput.id, job.id);
  else if (pick === 'Rerun') await vscode.commands.executeCommand(COMMANDS.rerunJob.id, job.id);
}
