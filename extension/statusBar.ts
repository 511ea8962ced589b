/** The status bar item: running and queued counts (from the event-fed job list); a click opens the sidebar. */
import * as vscode from 'vscode';
import { statusText } from './core/jobTree.ts';
import { OPEN_SIDEBAR } from './contributions.ts';
import type { JobSync } from './jobSync.ts';

export function registerStatusBar(context: vscode.ExtensionContext, sync: JobSync): void {
  const item = vscode.window.createStatusBarItem('gpurun.status', vscode.StatusBarAlignment.Left, 50);
  item.name = 'GPU Run';
  item.command = OPEN_SIDEBAR;
  const update = () => {
    const st = sync.state;
    if (st.kind === 'error') {
      item.text = '$(warning) GPU Run: offline';
      item.tooltip = `GPU Run: ${st.error instanceof Error ? st.error.message : String(st.error)}`;
    } else {
      item.text = statusText(sync.jobs.counts());
      item.tooltip = st.kind === 'connected' ? `GPU Run jobs (${st.embedded ? 'local broker' : st.address}) — click to open the sidebar` : 'GPU Run: connecting…';
    }
  };
  update();
  item.show();
  context.subscriptions.push(item, sync.onDidChange(update));
}
