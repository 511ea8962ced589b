/**
 * Whether the signed-in user is a broker admin, asked once per connection (GET /v1/whoami) and kept as the context
 * key `gpurun.isAdmin`, so the Hosts view's Drain / Undrain show only to admins. The broker decides in the end: a
 * non-admin who gets the command anyway is answered 403.
 */
import * as vscode from 'vscode';
import type { Broker, Connection } from './brokerClient.ts';
import { CONTEXT_KEYS } from './contributions.ts';
import type { JobSync } from './jobSync.ts';
import type { Log } from './log.ts';

/** Connections already asked: whoami is not asked again on every job event. */
const asked = new WeakSet<Connection>();

export function registerAdminContext(context: vscode.ExtensionContext, broker: Broker, sync: JobSync, log: Log): void {
  const update = async (): Promise<void> => {
    const conn = await broker.connection();
    if (asked.has(conn)) return;
    asked.add(conn);
    let admin = false;
    try {
      admin = (await conn.client.whoami()).admin;
    } catch (err) {
      // An older broker without whoami, or a token it refuses: no admin menus; the event stream reports the error.
      log.debug(`whoami: ${String(err)}`);
    }
    await vscode.commands.executeCommand('setContext', CONTEXT_KEYS.isAdmin, admin);
  };
  context.subscriptions.push(
    // Signing out or in as someone else makes a new connection; the menus hide until it is asked.
    broker.onDidChange(() => void vscode.commands.executeCommand('setContext', CONTEXT_KEYS.isAdmin, false)),
    sync.onDidChange(() => {
      if (sync.state.kind === 'connected') void update().catch((err: unknown) => log.debug(`whoami: ${String(err)}`));
    }),
  );
}
