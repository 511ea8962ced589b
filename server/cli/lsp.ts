/**
 * `gpurun lsp [--stdio]`: the language server of `# gpurun:` lines on stdin/stdout (server/lsp/server.ts). It talks
 * to the broker the CLI talks to — GPURUN_BROKER with GPURUN_TOKEN, else the local broker's socket — and starts no
 * broker itself: without one it checks the options alone and says it is offline.
 */
import { BrokerClient } from '../protocol/client.ts';
import { embeddedSocket, gpurunHome } from '../protocol/paths.ts';
import { startLanguageServer } from '../lsp/server.ts';
import { parseArgs } from './args.ts';

export const LSP_HELP = `Usage: gpurun lsp [--stdio]

Runs the language server of "# gpurun:" lines on stdin/stdout (LSP): completion of keys and of values from the live
pool, hover, diagnostics and quick fixes. Broker: $GPURUN_BROKER with $GPURUN_TOKEN, else the local broker.
`;

export async function lspCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  // vscode-languageclient adds --stdio and --clientProcessId=PID to the server's argv.
  const { opts } = parseArgs(argv, { values: ['clientProcessId'], flags: ['stdio', 'help'], short: { h: 'help' } }, 'lsp');
  if (opts.help) {
    process.stdout.write(LSP_HELP);
    return 0;
  }
  const address = env.GPURUN_BROKER || `unix:${embeddedSocket(gpurunHome(env))}`;
  const client = new BrokerClient({ address, ...(env.GPURUN_TOKEN ? { token: env.GPURUN_TOKEN } : {}) });
  const pollMs = Number(env.GPURUN_LSP_POLL_MS) || undefined;
  startLanguageServer(client, pollMs ? { pollMs } : {});
  // The connection keeps the process alive until the client sends exit.
  return new Promise<number>(() => {});
}
