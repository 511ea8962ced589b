/**
 * The Hosts view: each host with its free/used GPUs, their utilisation, memory and a bar per probe; fetched again when
 * a job changes (events), and every 15 s while a GPU is held (utilisation has no events).
 */
import * as vscode from 'vscode';
import { formatMemory } from '../../server/protocol/directives.ts';
import type { HostInfo } from '../../server/protocol/jobs.ts';
import type { Broker } from '../brokerClient.ts';
import type { JobSync } from '../jobSync.ts';
import { hostItem } from '../core/hostTree.ts';
import type { Log } from '../log.ts';
import { sparkline } from '../../server/protocol/gpuUsage.ts';

/** How often the view fetches the hosts again while a GPU is held (the broker probes every 30 s). */
const USAGE_POLL_MS = 15_000;

/** A row: a host, or one of its GPUs. Commands on a host row get `{kind: 'host', host}`. */
export type HostNode = { kind: 'host'; host: HostInfo } | { kind: 'gpu'; host: HostInfo; gpu: HostInfo['gpus'][number] };

export class HostsTree implements vscode.TreeDataProvider<HostNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<HostNode | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private hosts: HostInfo[] = [];
  private pending: NodeJS.Timeout | undefined;
  private readonly sub: vscode.Disposable;
  private readonly broker: Broker;
  private readonly log: Log;

  private readonly poll: NodeJS.Timeout;
  private readonly refreshed = new vscode.EventEmitter<void>();
  /** The hosts were fetched again (the Jobs view shows their GPU usage). */
  readonly onDidRefresh = this.refreshed.event;

  constructor(broker: Broker, sync: JobSync, log: Log) {
    this.broker = broker;
    this.log = log;
    // A job that starts or ends takes or frees GPUs; coalesce bursts of events into one request.
    this.sub = sync.onDidChange(() => this.refreshSoon());
    // GPU utilisation changes without job events: while a GPU is held, fetch again at about the broker's probe rate.
    this.poll = setInterval(() => {
      if (this.hosts.some((h) => h.gpus.some((g) => g.jobId))) void this.refresh();
    }, USAGE_POLL_MS);
  }

  /** The hosts as last fetched. */
  current(): HostInfo[] {
    return this.hosts;
  }

  /** Shows hosts the broker just answered with (a drain's answer), without fetching them again. */
  show(hosts: HostInfo[]): void {
    this.hosts = hosts;
    this.changed.fire(undefined);
    this.refreshed.fire();
  }

  refreshSoon(): void {
    clearTimeout(this.pending);
    this.pending = setTimeout(() => void this.refresh(), 200);
  }

  async refresh(): Promise<void> {
    try {
      const conn = await this.broker.connection();
      this.hosts = await conn.client.hosts();
    } catch (err) {
      this.log.debug(`hosts: ${String(err)}`);
      this.hosts = [];
    }
    this.changed.fire(undefined);
    this.refreshed.fire();
  }

  getChildren(node?: HostNode): HostNode[] {
    if (!node) return this.hosts.map((host) => ({ kind: 'host', host }));
    if (node.kind === 'host') return node.host.gpus.map((gpu) => ({ kind: 'gpu', host: node.host, gpu }));
    return [];
  }

  getTreeItem(node: HostNode): vscode.TreeItem {
    if (node.kind === 'host') {
      const v = hostItem(node.host);
      const item = new vscode.TreeItem(v.label, node.host.gpus.length ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None);
      item.id = `host:${node.host.name}`;
      item.description = v.description;
      item.tooltip = v.tooltip;
      item.iconPath = new vscode.ThemeIcon(v.icon);
      item.contextValue = v.contextValue;
      return item;
    }
    const g = node.gpu;
    const item = new vscode.TreeItem(`GPU ${g.index} ${g.name}`);
    item.id = `gpu:${node.host.name}:${g.index}`;
    item.description = `${g.jobId ? `used by ${g.jobId}` : 'free'} · ${g.utilizationPct}% · ${formatMemory(g.memoryUsedMiB)}/${formatMemory(g.memoryTotalMiB)}${g.history?.length ? ` ${sparkline(g.history, 10)}` : ''}`;
    item.tooltip = `${g.name}, ${formatMemory(g.memoryTotalMiB)}, ${g.uuid}\nutilisation ${g.utilizationPct}%, memory used ${formatMemory(g.memoryUsedMiB)}${g.history?.length ? `\nlast probes: ${sparkline(g.history, 40)}` : ''}`;
    item.iconPath = new vscode.ThemeIcon(g.jobId ? 'circle-filled' : 'circle-outline');
    return item;
  }

  dispose(): void {
    clearTimeout(this.pending);
    clearInterval(this.poll);
    this.refreshed.dispose();
    this.sub.dispose();
    this.changed.dispose();
  }
}
