/**
 * `gpurun lsp`: the language server of `# gpurun:` lines, over stdio. It wires the pure providers (providers.ts) to
 * an LSP connection and to the pool feed. Besides the standard requests it answers `gpurun/estimate` and sends
 * `gpurun/poolChanged` (protocol/lsp.ts), so a client's run buttons can show the estimate.
 */
import { createConnection, TextDocuments, TextDocumentSyncKind, type Connection } from 'vscode-languageserver/node';
import { TextDocument } from 'vscode-languageserver-textdocument';
import type { BrokerClient } from '../protocol/client.ts';
import { LSP_ESTIMATE_REQUEST as ESTIMATE_REQUEST, LSP_POOL_CHANGED as POOL_CHANGED, type EstimateResult } from '../protocol/lsp.ts';
import { PoolFeed } from './poolFeed.ts';
import { codeActions, completions, diagnostics, hover, runEstimate } from './providers.ts';


/** While offline, diagnostics are published again this often, so the snapshot's age stays roughly right. */
const OFFLINE_REPUBLISH_MS = 30_000;

export function startLanguageServer(client: BrokerClient, opts: { pollMs?: number } = {}, conn: Connection = createConnection(process.stdin, process.stdout)): void {
  const docs = new TextDocuments(TextDocument);
  const feed = new PoolFeed(client, opts.pollMs ? { pollMs: opts.pollMs } : {});
  const publish = (doc: TextDocument) => void conn.sendDiagnostics({ uri: doc.uri, diagnostics: diagnostics(doc.getText(), feed.view) });
  let offlineTimer: NodeJS.Timeout | undefined;

  feed.onChange = () => {
    for (const d of docs.all()) publish(d);
    void conn.sendNotification(POOL_CHANGED, { online: feed.view.online });
    clearInterval(offlineTimer);
    if (!feed.view.online) offlineTimer = setInterval(() => docs.all().forEach(publish), OFFLINE_REPUBLISH_MS);
  };

  conn.onInitialize(() => ({
    capabilities: {
      textDocumentSync: TextDocumentSyncKind.Incremental,
      completionProvider: { triggerCharacters: ['=', ' ', ':'] },
      hoverProvider: true,
      codeActionProvider: { codeActionKinds: ['quickfix'] },
    },
    serverInfo: { name: 'gpurun', version: '0.1.0' },
  }));
  // The first answers use the pool when it is quick to come; a broker that does not answer leaves them offline.
  const firstPool = Promise.race([feed.ready, new Promise((r) => setTimeout(r, 1500).unref())]);
  docs.onDidOpen((e) => void firstPool.then(() => publish(e.document)));
  docs.onDidChangeContent((e) => publish(e.document));
  docs.onDidClose((e) => void conn.sendDiagnostics({ uri: e.document.uri, diagnostics: [] }));
  conn.onCompletion((p) => {
    const doc = docs.get(p.textDocument.uri);
    return doc ? completions(doc.getText(), p.position, feed.view) : [];
  });
  conn.onHover((p) => {
    const doc = docs.get(p.textDocument.uri);
    return doc ? hover(doc.getText(), p.position, feed.view) : null;
  });
  conn.onCodeAction((p) => codeActions(p.textDocument.uri, p.context.diagnostics));
  conn.onRequest(ESTIMATE_REQUEST, (p: { uri: string }): EstimateResult => {
    const doc = docs.get(p.uri);
    const e = doc ? runEstimate(doc.getText(), feed.view) : undefined;
    return e ? { estimate: e } : {};
  });
  conn.onShutdown(() => {
    clearInterval(offlineTimer);
    feed.close();
  });
  conn.onExit(() => process.exit(0));
  docs.listen(conn);
  conn.listen();
}
