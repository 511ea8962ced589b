/**
 * Says once per job when a running job's GPUs have all read 0 % for the idle window (setting gpurun.idleGpuWarning,
 * "10m"; "off": never): a warning with Show Output. Checked at each refresh of the Hosts view, which polls while GPUs
 * are in use; the sidebar row shows the same with a warning icon (views/jobsTree.ts).
 */
import * as vscode from 'vscode';
import { IDLE_AFTER_MS, idleWindowMs } from '../server/protocol/gpuUsage.ts';
import { jobGpuView } from './core/gpuText.ts';
import { idleNotice } from './core/notice.ts';
import { COMMANDS, SETTINGS, SETTINGS_SECTION } from './contributions.ts';
import type { Ctx } from './commands/common.ts';

/** The idle window of the setting (ms; Infinity: never); a value it cannot read counts as the default. */
export function idleWindowSetting(): number {
  const w = idleWindowMs(vscode.workspace.getConfiguration(SETTINGS_SECTION).get<string>(SETTINGS.idleGpuWarning.key, SETTINGS.idleGpuWarning.default));
  return typeof w === 'number' ? w : IDLE_AFTER_MS;
}

export function registerIdleNotifier(ctx: Ctx): void {
  /** Jobs already warned about (once each, for as long as this window runs). */
  const warned = new Set<string>();
  ctx.context.subscriptions.push(
    ctx.hosts.onDidRefresh(() => {
      const window = idleWindowSetting();
      if (window === Infinity) return;
      const hosts = ctx.hosts.current();
      for (const job of ctx.sync.jobs.all()) {
        if (job.state !== 'running' || warned.has(job.id)) continue;
        const v = jobGpuView(job, hosts, Date.now(), window);
        if (!v?.idle) continue;
        warned.add(job.id);
        const text = idleNotice(job, v.idleMs);
        ctx.log.info(`notify: ${text}`);
        void vscode.window.showWarningMessage(text, 'Show Output').then((pick) => pick === 'Show Output' && vscode.commands.executeCommand(COMMANDS.showOutput.id, job.id));
      }
    }),
  );
}
