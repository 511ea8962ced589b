/**
 * GPU Run: Cache — your persistent cache on each host (what jobs downloaded there: models, wheels, torch hub) with its
 * size; picking a host offers to clear it there (`GET /v1/cache`, `POST /v1/cache/clear`).
 */
import * as vscode from 'vscode';
import { cacheSizeText, cacheWhereText, type UserCacheInfo } from '../../server/protocol/cache.ts';
import { COMMANDS } from '../contributions.ts';
import { register, type Ctx } from './common.ts';

export function registerCache(ctx: Ctx): void {
  register(ctx, COMMANDS.showCache.id, async () => {
    const conn = await ctx.broker.connection();
    const caches = await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'GPU Run: reading your cache sizes' }, () => conn.client.caches());
    if (!caches.length) {
      void vscode.window.showInformationMessage('GPU Run: this broker has no hosts that keep a cache for your jobs.');
      return;
    }
    const items = caches.map((c) => ({ label: c.host, description: cacheSizeText(c), detail: cacheWhereText(c), cache: c }));
    const pick = await vscode.window.showQuickPick(items, { title: 'GPU Run: your cache on each host', placeHolder: 'Pick a host to clear your cache there (Escape: keep it)', matchOnDetail: true });
    if (!pick) return;
    await clear(ctx, pick.cache);
  });
}

async function clear(ctx: Ctx, c: UserCacheInfo): Promise<void> {
  if (c.kind === 'none') {
    void vscode.window.showInformationMessage(`GPU Run: ${c.host} keeps no cache for your jobs: ${c.note ?? ''}`);
    return;
  }
  const size = c.bytes === null ? '' : ` (${cacheSizeText(c)})`;
  const ok = await vscode.window.showWarningMessage(`GPU Run: Clear your cache on ${c.host}${size}? Your next job there downloads again what it needs.`, 'Clear', 'Keep It');
  if (ok !== 'Clear') return;
  const conn = await ctx.broker.connection();
  const cleared = await conn.client.clearCache(c.host);
  const was = cleared[0];
  void vscode.window.showInformationMessage(`GPU Run: cleared your cache on ${c.host}${was && was.bytes !== null ? ` (${cacheSizeText(was)})` : ''}`);
}
