/** The answer of `GET /v1/pool`, made from the broker's state. Pure. */
import type { HostInfo, Queue } from '../protocol/jobs.ts';
import type { PoolCluster, PoolSnapshot } from '../protocol/pool.ts';
import { QUEUES } from '../protocol/jobs.ts';

export interface PoolInput {
  hosts: HostInfo[];
  queues: Record<Queue, { maxTimeSec: number; defaultTimeSec: number }>;
  /** Queue of each queued job of the host pool. */
  queued: Queue[];
  clusters: PoolCluster[];
  hasHosts: boolean;
  defaultBackend: string;
  defaultImage?: string;
  now: Date;
}

export function poolSnapshot(p: PoolInput): PoolSnapshot {
  return {
    at: p.now.toISOString(),
    hosts: p.hosts,
    queues: QUEUES.map((name) => ({ name, ...p.queues[name], queued: p.queued.filter((q) => q === name).length })),
    clusters: p.clusters,
    backends: [...(p.hasHosts ? ['hosts'] : []), ...p.clusters.map((c) => c.name)],
    defaultBackend: p.defaultBackend,
    // The default image first, then every image an up host has.
    ...(p.defaultImage ? { defaultImage: p.defaultImage } : {}),
    images: [...new Set([...(p.defaultImage ? [p.defaultImage] : []), ...p.hosts.filter((h) => h.state === 'up').flatMap((h) => h.images ?? []).sort()])],
  };
}
