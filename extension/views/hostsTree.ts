/**
 * The Hosts view: each host with its free/used GPUs, their utilisation, memory and a bar per probe; fetched again when
 * a job changes (events), and every 15 s while a GPU is held (utilisation has no events). Only rows whose text changed
 * are redrawn (core/rowChanges.ts).
 */
import * as vscode from 'vscode';
import { formatMemory } from '../../server/protocol/directives.ts';
import type { HostInfo } from '../../server/protocol/jobs.ts';
import type { Broker } from '../brokerClient.ts';
import type { JobSync } from '../jobSync.ts';
import { hostItem } from '../core/hostTree.ts';
import type { Log } from '../log.ts';
import { sparkline } from '../../server/protocol/gpuUsage.ts';
import { NodeCache, RowChanges, type RowLook } from '../core/rowChanges.ts';

/** How often the view fetches the hosts again while a GPU is held (the broker probes every 30 s). */
const USAGE_POLL_MS = 15_000;

/** A row: a host, or one of its GPUs. Commands on a host row get `{kind: 'host', host}`. */
export type HostNode = { kind: 'host'; host: HostInfo } | { kind: 'gpu'; host: HostInfo; gpu: HostInfo['gpus'][number] };

/** A row's key: also its TreeItem id. */
function nodeKey(node: HostNode): string {
  return node.kind === 'host' ? `host:${node.host.name}` : `gpu:${node.host.name}:${node.gpu.index}`;
}

export class HostsTree implements vscode.TreeDataProvider<HostNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<HostNode | HostNode[] | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private hosts: HostInfo[] = [];
  private pending: NodeJS.Timeout | undefined;
  private readonly sub: vscode.Disposable;
  private readonly broker: Broker;
  private readonly log: Log;
  private readonly nodes = new NodeCache<HostNode>();
  private readonly rows = new RowChanges<HostNode>();

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
    this.redraw();
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
    this.redraw();
    this.refreshed.fire();
  }

  /** Tells VS Code what changed since the last fetch: the whole tree (hosts or GPUs came or went), some rows, or nothing. */
  private redraw(): void {
    const shape = JSON.stringify(this.hosts.map((h) => [h.name, h.gpus.map((g) => g.index)]));
    const rows: RowLook<HostNode>[] = [];
    for (const host of this.hosts) for (const node of [this.hostNode(host), ...this.gpuNodes(host)]) rows.push({ key: nodeKey(node), node, look: JSON.stringify(this.look(node)) });
    const keep = new Set(rows.map((r) => r.key));
    this.nodes.prune(keep);
    const r = this.rows.next(shape, rows);
    if (r === 'all') this.changed.fire(undefined);
    else if (r.length) this.changed.fire(r);
  }

  private hostNode(host: HostInfo): HostNode {
    return this.nodes.get(`host:${host.name}`, () => ({ kind: 'host', host }), { host });
  }

  private gpuNodes(host: HostInfo): HostNode[] {
    return host.gpus.map((gpu) => this.nodes.get(`gpu:${host.name}:${gpu.index}`, () => ({ kind: 'gpu', host, gpu }), { host, gpu }));
  }

  getChildren(node?: HostNode): HostNode[] {
    if (!node) return this.hosts.map((host) => this.hostNode(host));
    if (node.kind === 'host') return this.gpuNodes(node.host);
    return [];
  }

  getTreeItem(node: HostNode): vscode.TreeItem {
    const v = this.look(node);
    const item = new vscode.TreeItem(v.label, node.kind === 'host' && node.host.gpus.length ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None);
    item.id = nodeKey(node);
    item.description = v.description;
    item.tooltip = v.tooltip;
    item.iconPath = new vscode.ThemeIcon(v.icon);
    if (v.contextValue) item.contextValue = v.contextValue;
    return item;
  }

  /** Everything a row shows, as plain data: what the row is drawn from, and compared by to skip a redraw. */
  private look(node: HostNode): { label: string; description: string; tooltip: string; icon: string; contextValue?: string } {
    if (node.kind === 'host') return hostItem(node.host);
    const g = node.gpu;
    return {
      label: `GPU ${g.index} ${g.name}`,
      description: `${g.jobId ? `used by ${g.jobId}` : 'free'} · ${g.utilizationPct}% · ${formatMemory(g.memoryUsedMiB)}/${formatMemory(g.memoryTotalMiB)}${g.history?.length ? ` ${sparkline(g.history, 10)}` : ''}`,
      tooltip: `${g.name}, ${formatMemory(g.memoryTotalMiB)}, ${g.uuid}\nutilisation ${g.utilizationPct}%, memory used ${formatMemory(g.memoryUsedMiB)}${g.history?.length ? `\nlast probes: ${sparkline(g.history, 40)}` : ''}`,
      icon: g.jobId ? 'circle-filled' : 'circle-outline',
    };
  }

  dispose(): void {
    clearTimeout(this.pending);
    clearInterval(this.poll);
    this.refreshed.dispose();
    this.sub.dispose();
    this.changed.dispose();
  }
}
