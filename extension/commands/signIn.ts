/**
 * Sign In: the team broker's URL (saved in the user settings) and a token (saved in SecretStorage, never in
 * settings), checked against the broker before it is kept. Sign Out forgets the token.
 */
import * as vscode from 'vscode';
import { BrokerClient } from '../../server/protocol/client.ts';
import { COMMANDS, SETTINGS, SETTINGS_SECTION, tokenKey } from '../contributions.ts';
import { Cancelled, register, type Ctx } from './common.ts';

export function registerSignIn(ctx: Ctx): void {
  register(ctx, COMMANDS.signIn.id, async () => {
    const url = await vscode.window.showInputBox({
      title: 'GPU Run: Sign In (1/2)',
      prompt: 'Broker URL, e.g. http://gpu-broker:8750 (empty: use the local broker on this machine)',
      value: ctx.broker.url(),
      ignoreFocusOut: true,
      validateInput: (v) => {
        if (!v.trim()) return undefined;
        try {
          const u = new URL(v.trim());
          return u.protocol === 'http:' || u.protocol === 'https:' ? undefined : 'Use http:// or https://';
        } catch {
          return 'Not a URL; write e.g. http://gpu-broker:8750';
        }
      },
    });
    if (url === undefined) throw new Cancelled();
    const address = url.trim().replace(/\/+$/, '');
    const config = vscode.workspace.getConfiguration(SETTINGS_SECTION);
    if (!address) {
      await config.update(SETTINGS.brokerUrl.key, '', vscode.ConfigurationTarget.Global);
      vscode.window.showInformationMessage('GPU Run: using the local broker on this machine.');
      return;
    }
    const token = await vscode.window.showInputBox({
      title: 'GPU Run: Sign In (2/2)',
      prompt: `Token for ${address} (from your admin: gpurun token create USER). Kept in VS Code's secret storage.`,
      password: true,
      ignoreFocusOut: true,
      validateInput: (v) => (v.trim() ? undefined : 'Paste the token'),
    });
    if (token === undefined) throw new Cancelled();
    const who = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `GPU Run: signing in to ${address}…` }, async () => {
      const client = new BrokerClient({ address, token: token.trim() });
      try {
        return await client.whoami();
      } finally {
        await client.close();
      }
    });
    await ctx.context.secrets.store(tokenKey(address), token.trim());
    await config.update(SETTINGS.brokerUrl.key, address, vscode.ConfigurationTarget.Global);
    ctx.log.info(`signed in to ${address} as ${who.user}`);
    ctx.broker.reset();
    vscode.window.showInformationMessage(`GPU Run: signed in to ${address} as ${who.user}.`);
  });

  register(ctx, COMMANDS.signOut.id, async () => {
    const url = ctx.broker.url();
    if (!url) {
      vscode.window.showInformationMessage('GPU Run: the local broker needs no sign-in.');
      return;
    }
    await ctx.context.secrets.delete(tokenKey(url));
    ctx.log.info(`signed out of ${url}`);
    ctx.broker.reset();
    vscode.window.showInformationMessage(`GPU Run: signed out of ${url}.`);
  });
}
