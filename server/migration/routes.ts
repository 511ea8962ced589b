/**
 * The HTTP side of moves: `POST /v1/jobs/ID/migrate` ({"to": HOST} optional; the owner or an admin, others get 404)
 * and `POST /v1/hosts/NAME/drain` ({"on": true|false}; admins). The app (app.ts) mounts these routes.
 */
import { GpurunError } from '../protocol/errors.ts';
import type { Principal } from '../broker.ts';
import type { HostInfo } from '../protocol/jobs.ts';
import type { MoveManager } from './manager.ts';
import type { Drains } from './drain.ts';

export interface MoveRoutesDeps {
  moves: MoveManager;
  drains: Drains;
  /** `GET /v1/hosts` with what moves add: drain counts, online load. */
  hostsView(hosts: HostInfo[]): HostInfo[];
}

export function migrateRoute(d: MoveRoutesDeps | undefined, p: Principal, id: string, body: unknown): unknown {
  if (!d) throw new GpurunError('E_CONFLICT', 'this broker moves no jobs (it has no SSH hosts)', { hint: 'Jobs move between Docker hosts over SSH: add two or more under hosts in the broker config.' });
  const to = typeof body === 'object' && body !== null ? (body as { to?: unknown }).to : undefined;
  if (to !== undefined && (typeof to !== 'string' || !/^[A-Za-z0-9][\w.-]{0,99}$/.test(to))) throw new GpurunError('E_BAD_REQUEST', 'to: must be a host name');
  return d.moves.migrate(p, id, to as string | undefined);
}

export function drainRoute(d: MoveRoutesDeps | undefined, p: Principal, host: string, body: unknown): unknown {
  if (!p.admin) throw new GpurunError('E_FORBIDDEN', 'only an admin can drain a host', { hint: 'Ask an admin (a token made with gpurun token create USER --admin).' });
  if (!d) throw new GpurunError('E_CONFLICT', 'this broker has no SSH hosts to drain', { hint: 'Drain applies to the SSH hosts under hosts in the broker config; gpurun hosts lists them.' });
  const on = typeof body === 'object' && body !== null ? (body as { on?: unknown }).on : undefined;
  if (typeof on !== 'boolean') throw new GpurunError('E_BAD_REQUEST', 'on: must be true (drain) or false (take jobs again)');
  d.drains.set(host, on, p.user);
  return { hosts: d.hostsView(d.moves.hosts()) };
}
