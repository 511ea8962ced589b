/**
 * A plain LSP client over a child's stdio: JSON-RPC with Content-Length framing, written out here so the server is
 * tested as any editor drives it (no VS Code, no client library). Used by the stdio suite and the lsp bench.
 */
import { spawn, type ChildProcess } from 'node:child_process';

type Msg = { id?: number; method?: string; params?: unknown; result?: unknown; error?: { message: string } };

export interface Published {
  uri: string;
  diagnostics: Array<{ message: string; severity: number; range: { start: { line: number; character: number }; end: { line: number; character: number } }; data?: unknown; source?: string; code?: string }>;
}

export class LspClient {
  readonly proc: ChildProcess;
  private buf = Buffer.alloc(0);
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** Every notification the server sent, in order. */
  readonly notifications: Msg[] = [];
  private listeners: Array<() => void> = [];
  stderr = '';

  constructor(argv: string[], env: NodeJS.ProcessEnv) {
    this.proc = spawn(argv[0], argv.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d: Buffer) => this.onData(d));
    this.proc.stderr!.on('data', (d) => (this.stderr += d));
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      const head = this.buf.indexOf('\r\n\r\n');
      if (head < 0) return;
      const len = Number(/Content-Length: (\d+)/i.exec(this.buf.subarray(0, head).toString())?.[1]);
      if (this.buf.length < head + 4 + len) return;
      const msg = JSON.parse(this.buf.subarray(head + 4, head + 4 + len).toString('utf8')) as Msg;
      this.buf = this.buf.subarray(head + 4 + len);
      if (msg.id !== undefined && msg.method === undefined) {
        const w = this.waiting.get(msg.id);
        this.waiting.delete(msg.id);
        if (msg.error) w?.reject(new Error(msg.error.message));
        else w?.resolve(msg.result);
      } else if (msg.id !== undefined) {
        // A request from the server (e.g. workspace/configuration): answer null.
        this.send({ id: msg.id, result: null });
      } else {
        this.notifications.push(msg);
        for (const l of this.listeners) l();
      }
    }
  }

  private send(m: object): void {
    const body = Buffer.from(JSON.stringify({ jsonrpc: '2.0', ...m }), 'utf8');
    this.proc.stdin!.write(`Content-Length: ${body.length}\r\n\r\n`);
    this.proc.stdin!.write(body);
  }

  request<T = unknown>(method: string, params: unknown): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.send({ id, method, params });
    });
  }

  notify(method: string, params: unknown): void {
    this.send({ method, params });
  }

  async initialize(): Promise<{ capabilities: Record<string, unknown> }> {
    const r = await this.request<{ capabilities: Record<string, unknown> }>('initialize', { processId: process.pid, rootUri: null, capabilities: {} });
    this.notify('initialized', {});
    return r;
  }

  open(uri: string, text: string, version = 1): void {
    this.notify('textDocument/didOpen', { textDocument: { uri, languageId: 'python', version, text } });
  }

  change(uri: string, text: string, version: number): void {
    this.notify('textDocument/didChange', { textDocument: { uri, version }, contentChanges: [{ text }] });
  }

  /** The diagnostics of `uri` last published. */
  diagnostics(uri: string): Published['diagnostics'] | undefined {
    const all = this.notifications.filter((n) => n.method === 'textDocument/publishDiagnostics' && (n.params as Published).uri === uri);
    return (all.at(-1)?.params as Published | undefined)?.diagnostics;
  }

  /** Resolves with the first published diagnostics of `uri`, after `after` notifications, that pass `ok`. */
  waitDiagnostics(uri: string, ok: (d: Published['diagnostics']) => boolean, timeoutMs = 10_000, after = 0): Promise<Published['diagnostics']> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.notifications.slice(after).filter((n) => n.method === 'textDocument/publishDiagnostics' && (n.params as Published).uri === uri).map((n) => (n.params as Published).diagnostics).find(ok);
        if (hit) {
          done();
          resolve(hit);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no matching diagnostics for ${uri} within ${timeoutMs} ms; last: ${JSON.stringify(this.diagnostics(uri))}\n${this.stderr}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== check);
      };
      this.listeners.push(check);
      check();
    });
  }

  async close(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const gone = new Promise((r) => this.proc.once('close', r));
    await this.request('shutdown', null).catch(() => {});
    this.notify('exit', null);
    await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}
