/**
 * The Jobs view: Running, Queued and Recent groups over the JobList; refreshed by events, not by polling. A row is
 * redrawn only when what it shows changed, the whole tree only when its rows did (core/rowChanges.ts: a redraw
 * rebuilds a row's buttons under the pointer).
 */
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
import { NodeCache, RowChanges, type RowLook } from '../core/rowChanges.ts';

export type JobNode = { kind: 'group'; id: GroupId; label: string } | { kind: 'job'; job: Job } | { kind: 'message'; text: string; tooltip?: string; icon?: string; command?: vscode.Command };

export class JobsTree implements vscode.TreeDataProvider<JobNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<JobNode | JobNode[] | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly subs: vscode.Disposable[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly sync: JobSync;

  private readonly hosts: HostsTree | undefined;
  private readonly nodes = new NodeCache<JobNode>();
  private readonly rows = new RowChanges<JobNode>();

  constructor(sync: JobSync, hosts?: HostsTree) {
    this.sync = sync;
    this.hosts = hosts;
    this.subs.push(sync.onDidChange(() => this.redraw()));
    if (hosts) this.subs.push(hosts.onDidRefresh(() => this.redraw()));
    // Times shown move on (elapsed, "5 min ago"): look again (from memory, no request); rows whose text is the same
    // are left alone.
    this.timer = setInterval(() => this.redraw(), 5000);
  }

  /** Tells VS Code what changed since the last redraw: the whole tree, some rows, or nothing. */
  private redraw(): void {
    const st = this.sync.state;
    const groups = st.kind === 'connected' && this.sync.jobs.all().length ? GROUPS.map((g) => ({ id: g.id, jobs: this.sync.jobs.group(g.id) })) : [];
    const shape = JSON.stringify([st.kind, st.kind === 'error' ? String(st.error) : '', this.sync.jobs.filter ?? '', groups.map((g) => [g.id, g.jobs.map((j) => j.id)])]);
    const now = Date.now();
    const rows: RowLook<JobNode>[] = groups.flatMap((g) => g.jobs.map((job) => ({ key: job.id, node: this.jobNode(job), look: JSON.stringify(this.itemLook(job, now)) })));
    this.nodes.prune(new Set([...GROUPS.map((g) => `group:${g.id}`), ...rows.map((r) => `job:${r.key}`)]));
    const r = this.rows.next(shape, rows);
    if (r === 'all') this.changed.fire(undefined);
    else if (r.length) this.changed.fire(r);
  }

  private jobNode(job: Job): JobNode {
    return this.nodes.get(`job:${job.id}`, () => ({ kind: 'job', job }), { job });
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
      const groups: JobNode[] = GROUPS.map((g) => this.nodes.get(`group:${g.id}`, () => ({ kind: 'group', id: g.id, label: g.label }), {}));
      const f = this.sync.jobs.filter;
      return f ? [{ kind: 'message', text: `Filter: "${f}" (click to change)`, icon: 'filter', command: { command: COMMANDS.filterJobs.id, title: COMMANDS.filterJobs.title } }, ...groups] : groups;
    }
    if (node.kind === 'group') return this.sync.jobs.group(node.id).map((job) => this.jobNode(job));
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
    const v = this.itemLook(node.job, Date.now());
    const item = new vscode.TreeItem(v.label);
    item.id = `job:${node.job.id}`;
    item.description = v.description;
    // The tooltip (with "5 min ago" in it) is made on hover, by resolveTreeItem: a clock in the row would redraw it.
    item.iconPath = v.idle ? new vscode.ThemeIcon('warning', new vscode.ThemeColor('list.warningForeground')) : new vscode.ThemeIcon(v.icon.id, v.icon.color ? new vscode.ThemeColor(v.icon.color) : undefined);
    item.contextValue = v.contextValue;
    item.accessibilityInformation = { label: `${v.label}, ${node.job.state.replace('_', ' ')}, ${v.description}` };
    item.command = { command: COMMANDS.showOutput.id, title: COMMANDS.showOutput.title, arguments: [node] };
    return item;
  }

  resolveTreeItem(item: vscode.TreeItem, node: JobNode): vscode.TreeItem {
    if (node.kind === 'job') item.tooltip = new vscode.MarkdownString(this.tooltip(node.job, Date.now()));
    return item;
  }

  /** What a job's row shows, as plain data: what the row is drawn from, and compared by to skip a redraw. */
  private itemLook(job: Job, now: number) {
    const v = jobItem(job, now);
    const usage = jobGpuView(job, this.hosts?.current() ?? [], now, idleWindowSetting());
    return {
      label: v.label,
      description: usage ? `${v.description} · ${usage.short}` : v.description,
      icon: v.icon,
      idle: usage?.idle ?? false,
      contextValue: v.contextValue,
      // What the tooltip says, without its clock (its times taken from one fixed moment): new data redraws the row,
      // so the next hover makes the tooltip again.
      tooltip: this.tooltip(job, 0),
    };
  }

  private tooltip(job: Job, now: number): string {
    const v = jobItem(job, now);
    const usage = jobGpuView(job, this.hosts?.current() ?? [], now, idleWindowSetting());
    return usage ? `${v.tooltip}\n\n**GPU usage** (last probes)\n\n${usage.lines.join('\n')}` : v.tooltip;
  }

  dispose(): void {
    clearInterval(this.timer);
    for (const s of this.subs) s.dispose();
    this.changed.dispose();
  }
}
