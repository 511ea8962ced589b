/** The Jobs view: Running, Queued and Recent groups over the JobList; refreshed by events, not by polling. */
import * as vscode from 'vscode';
import { GpurunError } from '../../server/protocol/errors.ts';
import type { Job } from '../../server/protocol/jobs.ts';
import { errorText } from '../core/errors.ts';
import { GROUPS, jobItem, type GroupId } from '../core/jobTree.ts';
import type { JobSync } from '../jobSync.ts';
import { COMMANDS } from '../contributions.ts';
import { jobGpuView } from '../core/gpuText.ts';
import { idleWindowSetting } from '../idleNotifier.ts';
import type { HostsTree } from './hostsTree.ts';

export type JobNode = { kind: 'group'; id: GroupId; label: string } | { kind: 'job'; job: Job } | { kind: 'message'; text: string; tooltip?: string; icon?: string; command?: vscode.Command };

export class JobsTree implements vscode.TreeDataProvider<JobNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<JobNode | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly subs: vscode.Disposable[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly sync: JobSync;

  private readonly hosts: HostsTree | undefined;

  constructor(sync: JobSync, hosts?: HostsTree) {
    this.sync = sync;
    this.hosts = hosts;
    this.subs.push(sync.onDidChange(() => this.changed.fire(undefined)));
    if (hosts) this.subs.push(hosts.onDidRefresh(() => this.sync.jobs.counts().running > 0 && this.changed.fire(undefined)));
    // Elapsed times of running jobs move on: redraw (from memory, no request) while any runs.
    this.timer = setInterval(() => {
      if (sync.jobs.counts().running > 0) this.changed.fire(undefined);
    }, 5000);
  }

  getChildren(node?: JobNode): JobNode[] {
    if (!node) {
      const st = this.sync.state;
      if (st.kind === 'error') {
        const e = st.error;
        const code = e instanceof GpurunError ? e.code : undefined;
        return [
          {
            kind: 'message',
            text: code === 'E_UNAUTHORIZED' ? 'Not signed in: Sign In…' : 'Cannot reach the broker',
            tooltip: e instanceof Error ? errorText(e as GpurunError) : String(e),
            command: code === 'E_UNAUTHORIZED' ? { command: COMMANDS.signIn.id, title: COMMANDS.signIn.title } : { command: COMMANDS.showLog.id, title: COMMANDS.showLog.title },
          },
        ];
      }
      if (st.kind === 'connecting') return [{ kind: 'message', text: 'Connecting to the broker…' }];
      if (this.sync.jobs.all().length === 0) return [];
      const groups: JobNode[] = GROUPS.map((g) => ({ kind: 'group', id: g.id, label: g.label }));
      const f = this.sync.jobs.filter;
      return f ? [{ kind: 'message', text: `Filter: "${f}" (click to change)`, icon: 'filter', command: { command: COMMANDS.filterJobs.id, title: COMMANDS.filterJobs.title } }, ...groups] : groups;
    }
    if (node.kind === 'group') return this.sync.jobs.group(node.id).map((job) => ({ kind: 'job', job }));
    return [];
  }

  getTreeItem(node: JobNode): vscode.TreeItem {
    if (node.kind === 'message') {
      const item = new vscode.TreeItem(node.text);
      item.iconPath = new vscode.ThemeIcon(node.icon ?? 'warning');
      if (node.tooltip) item.tooltip = node.tooltip;
      if (node.command) item.command = node.command;
      return item;
    }
    if (node.kind === 'group') {
      const n = this.sync.jobs.group(node.id).length;
      // Always expandable: an item that starts without children and later gets some would stay collapsed.
      const item = new vscode.TreeItem(node.label, vscode.TreeItemCollapsibleState.Expanded);
      item.id = `group:${node.id}`;
      item.description = String(n);
      item.contextValue = `group-${node.id}`;
      return item;
    }
    const v = jobItem(node.job, Date.now());
    const usage = jobGpuView(node.job, this.hosts?.current() ?? [], Date.now(), idleWindowSetting());
    const item = new vscode.TreeItem(v.label);
    item.id = `job:${node.job.id}`;
    item.description = usage ? `${v.description} · ${usage.short}` : v.description;
    item.tooltip = new vscode.MarkdownString(usage ? `${v.tooltip}\n\n**GPU usage** (last probes)\n\n${usage.lines.join('\n')}` : v.tooltip);
    item.iconPath = usage?.idle ? new vscode.ThemeIcon('warning', new vscode.ThemeColor('list.warningForeground')) : new vscode.ThemeIcon(v.icon.id, v.icon.color ? new vscode.ThemeColor(v.icon.color) : undefined);
    item.contextValue = v.contextValue;
    item.accessibilityInformation = { label: `${v.label}, ${node.job.state.replace('_', ' ')}, ${v.description}` };
    item.command = { command: COMMANDS.showOutput.id, title: COMMANDS.showOutput.title, arguments: [node] };
    return item;
  }

  dispose(): void {
    clearInterval(this.timer);
    for (const s of this.subs) s.dispose();
    this.changed.dispose();
  }
}
