/**
 * The language server of `# gpurun:` lines (`gpurun lsp`, bundled as dist/cli.js) started with vscode-languageclient:
 * completion, hover, diagnostics and quick fixes come from it. It gets the broker's address and token through its
 * environment (GPURUN_BROKER, GPURUN_TOKEN), never its argv, and is started again when they change.
 */
import { join } from 'node:path';
import * as vscode from 'vscode';
import { LanguageClient, TransportKind, type LanguageClientOptions, type ServerOptions } from 'vscode-languageclient/node';
import { LSP_ESTIMATE_REQUEST, LSP_POOL_CHANGED, type EstimateResult } from '../../server/protocol/lsp.ts';
import type { Broker } from '../brokerClient.ts';
import type { Log } from '../log.ts';

export class DirectiveLanguageClient implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private starting: Promise<void> | undefined;
  private readonly changed = new vscode.EventEmitter<void>();
  /** Fires when the server says the pool changed: run buttons ask for their estimate again. */
  readonly onDidChangePool = this.changed.event;
  private readonly extensionPath: string;
  private readonly broker: Broker;
  private readonly log: Log;

  constructor(extensionPath: string, broker: Broker, log: Log) {
    this.extensionPath = extensionPath;
    this.broker = broker;
    this.log = log;
  }

  /** Starts the server (again, if it runs: the broker settings changed). */
  restart(): Promise<void> {
    const prev = this.starting ?? Promise.resolve();
    this.starting = prev.then(async () => {
      await this.stop();
      await this.start();
    }).catch((err) => this.log.error(`the gpurun language server did not start: ${err instanceof Error ? err.message : String(err)}`));
    return this.starting;
  }

  private async start(): Promise<void> {
    const { address, token } = await this.broker.credentials();
    const env: Record<string, string> = { ...(process.env as Record<string, string>), GPURUN_BROKER: address };
    if (token) env.GPURUN_TOKEN = token;
    else delete env.GPURUN_TOKEN;
    const run = { module: join(this.extensionPath, 'dist', 'cli.js'), args: ['lsp'], transport: TransportKind.stdio, options: { env } };
    const server: ServerOptions = { run, debug: run };
    const opts: LanguageClientOptions = {
      documentSelector: [{ language: 'python' }],
      diagnosticCollectionName: 'gpurun',
      outputChannelName: 'GPU Run Language Server',
    };
    const client = new LanguageClient('gpurun', 'GPU Run directives', server, opts);
    await client.start();
    client.onNotification(LSP_POOL_CHANGED, () => this.changed.fire());
    this.client = client;
    this.log.info(`the gpurun language server runs (broker ${address})`);
  }

  private async stop(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    if (c) await c.stop().catch(() => {});
  }

  /** "~now", "~queued #3", "never fits" for a document; undefined when the server has none to give. */
  async estimate(uri: vscode.Uri): Promise<string | undefined> {
    if (!this.client?.isRunning()) return undefined;
    try {
      const r = await this.client.sendRequest<EstimateResult>(LSP_ESTIMATE_REQUEST, { uri: uri.toString() });
      return r.estimate;
    } catch {
      return undefined;
    }
  }

  dispose(): void {
    void this.stop();
    this.changed.dispose();
  }
}
