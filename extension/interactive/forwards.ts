/**
 * Ports of running jobs forwarded to this machine (server/protocol/forwardClient.ts: a listener on 127.0.0.1, one
 * broker upgrade per connection), one per job and port, closed when the job ends or the window closes. Opening one
 * in the browser goes through vscode.env.asExternalUri, so in a browser-based VS Code (code-server, Codespaces) the
 * address is the one the browser can reach.
 */
import * as vscode from 'vscode';
import { openForward, type OpenForward } from '../../server/protocol/forwardClient.ts';
import { isFinal } from '../../server/protocol/jobs.ts';
import type { Broker } from '../brokerClient.ts';
import type { JobSync } from '../jobSync.ts';
import type { Log } from '../log.ts';
import type { JobUrl } from '../core/jobUrls.ts';

export class Forwards implements vscode.Disposable {
  private readonly open = new Map<string, Promise<OpenForward>>();
  /** Addresses already offered (job and port), so a job printing its URL again is not offered again. */
  private readonly offered = new Set<string>();
  private readonly printed = new Map<string, number>();
  private readonly sub: vscode.Disposable;
  private readonly broker: Broker;
  private readonly log: Log;

  constructor(broker: Broker, sync: JobSync, log: Log) {
    this.broker = broker;
    this.log = log;
    this.sub = sync.onDidChange((j) => j && isFinal(j.state) && this.closeJob(j.id));
  }

  /** The local port that carries `port` of job `jobId` (opened on first use). */
  async local(jobId: string, port: number): Promise<number> {
    const key = `${jobId}:${port}`;
    let f = this.open.get(key);
    if (!f) {
      f = this.broker.connection().then((c) => openForward(c.client, jobId, port, 0, (s) => this.log.warn(s)));
      this.open.set(key, f);
      f.then((o) => this.log.info(`forwarding 127.0.0.1:${o.local} to port ${port} of job ${jobId}`), () => this.open.delete(key));
    }
    return (await f).local;
  }

  /** Opens port `port` (and `path`) of the job in the browser. */
  async openInBrowser(jobId: string, url: JobUrl): Promise<void> {
    const local = await this.local(jobId, url.port);
    const uri = await vscode.env.asExternalUri(vscode.Uri.parse(`http://127.0.0.1:${local}${url.path}`));
    this.log.info(`opening ${uri.toString(true)} (port ${url.port} of job ${jobId})`);
    await vscode.env.openExternal(uri);
  }

  /** The last port a job printed an address for (what Forward Port… proposes). */
  lastPort(jobId: string): number | undefined {
    return this.printed.get(jobId);
  }

  /** Offers an Open button for an address the job printed (once per job and port). */
  offer(jobId: string, url: JobUrl): void {
    const key = `${jobId}:${url.port}`;
    if (this.offered.has(key)) return;
    this.offered.add(key);
    this.printed.set(jobId, url.port);
    void vscode.window.showInformationMessage(`Job ${jobId} serves port ${url.port}${url.path === '/' ? '' : ` (${url.path.slice(0, 60)})`}: open it here through the broker?`, 'Open').then(async (pick) => {
      if (pick !== 'Open') return;
      try {
        await this.openInBrowser(jobId, url);
      } catch (e) {
        this.log.error(`opening port ${url.port} of job ${jobId}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
        void vscode.window.showErrorMessage(`GPU Run: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  }

  private closeJob(jobId: string): void {
    for (const [key, f] of this.open) {
      if (!key.startsWith(`${jobId}:`)) continue;
      this.open.delete(key);
      void f.then((o) => o.close(), () => {});
    }
  }

  dispose(): void {
    this.sub.dispose();
    for (const f of this.open.values()) void f.then((o) => o.close(), () => {});
    this.open.clear();
  }
}
