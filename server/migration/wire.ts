/** Builds the move orchestration and the drains for main.ts, and hooks them into the broker. */
import type { Job } from '../protocol/jobs.ts';
import { MoveManager, type MoveManagerDeps } from './manager.ts';
import { Drains } from './drain.ts';
import { LoadWatch } from './loadWatch.ts';
import type { MoveRoutesDeps } from './routes.ts';

export function wireMoves(d: MoveManagerDeps): MoveRoutesDeps {
  const moves = new MoveManager(d);
  d.broker.setMoves(moves);
  moves.restore();
  d.broker.on('job', (j: Job) => moves.ended(j));
  const drains = new Drains({ broker: d.broker, hosts: d.hosts, moves, log: d.log });
  const load = new LoadWatch({ ...d, moves });
  load.start();
  return { moves, drains, hostsView: (h) => load.view(drains.view(h)) };
}
