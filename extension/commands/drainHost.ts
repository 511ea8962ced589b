/**
 * Drain Host / Undrain Host (admins, `gpurun drain HOST` / `gpurun undrain HOST`): from a host row of the Hosts view,
 * or a pick of hosts. Drain asks first, saying what it does; the broker's answer redraws the view at once.
 */
import * as vscode from 'vscode';
import { GpurunError } from '../../server/protocol/errors.ts';
import type { HostInfo } from '../../server/protocol/jobs.ts';
import { COMMANDS } from '../contributions.ts';
import { Cancelled, register, type Ctx } from './common.ts';

export function registerDrainHost(ctx: Ctx): void {
  register(ctx, COMMANDS.drainHost.id, async (arg?: unknown) => {
    const host = await hostArg(ctx, arg, (h) => h.state !== 'draining', 'Host to drain');
    const pick = await vscode.window.showWarningMessage(
      `Drain ${host}?`,
      { modal: true, detail: `No new jobs start on ${host}. Its offline jobs that checkpoint move to other hosts; the rest run on to their end. Undrain Host lets it take jobs again.` },
      'Drain',
    );
    if (pick !== 'Drain') throw new Cancelled();
    await setDrain(ctx, host, true);
  });
  register(ctx, COMMANDS.undrainHost.id, async (arg?: unknown) => {
    const host = await hostArg(ctx, arg, (h) => h.state === 'draining', 'Host to undrain');
    await setDrain(ctx, host, false);
  });
}

async function setDrain(ctx: Ctx, host: string, on: boolean): Promise<void> {
  const conn = await ctx.broker.connection();
  const hosts = await conn.client.drain(host, on);
  ctx.log.info(`${on ? 'drain' : 'undrain'} ${host}: ${hosts.find((h) => h.name === host)?.state ?? '?'}`);
  ctx.hosts.show(hosts);
}

/** The host a command is about: a Hosts view row, a host name, or one the person picks from `filter`ed hosts. */
async function hostArg(ctx: Ctx, arg: unknown, filter: (h: HostInfo) => boolean, placeHolder: string): Promise<string> {
  if (arg && typeof arg === 'object' && 'host' in arg) return (arg as { host: HostInfo }).host.name;
  if (typeof arg === 'string') return arg;
  const hosts = ctx.hosts.current().filter(filter);
  if (!hosts.length) throw new GpurunError('E_NOT_FOUND', 'there is no host to pick');
  const pick = await vscode.window.showQuickPick(
    hosts.map((h) => ({ label: h.name, description: h.state })),
    { placeHolder },
  );
  if (!pick) throw new Cancelled();
  return pick.label;
}
