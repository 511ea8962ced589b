/**
 * What the pool says about a request: the GPU types with free and total counts, where a request fits now, whether
 * any host could ever run it, and the queue it would wait in. Pure: a pool snapshot in, plain data out.
 */
import type { HostInfo, Queue } from '../protocol/jobs.ts';
import type { PoolQueue, PoolSnapshot } from '../protocol/pool.ts';
import { gpuMatches } from '../core/scheduler.ts';
import type { Directive } from '../core/directives.ts';
import { formatMemory } from '../core/units.ts';

export interface GpuType {
  /** Short type a `gpu-type=` value names (matched as a substring of the GPU name): "A100", "L4". */
  type: string;
  /** The names nvidia-smi reports for it, e.g. "NVIDIA A100-SXM4-80GB". */
  names: string[];
  free: number;
  total: number;
  /** Most GPUs of this type on one host. */
  largest: number;
}

/** What a directive asks for, with the broker's defaults filled in. */
export interface Ask {
  gpus: number;
  gpuType?: string;
  cpus: number;
  memoryMiB: number;
  timeSec?: number;
  queue: Queue;
  /** A cluster backend: the host pool's checks do not apply. */
  cluster?: string;
}

const VENDOR = /^(nvidia|tesla|geforce|quadro|rtx)$/i;

/** "NVIDIA A100-SXM4-80GB" → "A100", "NVIDIA GeForce RTX 4090" → "4090", "NVIDIA L4" → "L4". */
export function shortGpuType(name: string): string {
  const words = name.split(/\s+/).filter((w) => w && !VENDOR.test(w));
  const first = (words[0] ?? name).split('-')[0];
  return first.replace(/[^\w.-]/g, '') || name;
}

/** GPU types of the hosts that are up, most GPUs first. */
export function gpuTypes(pool: PoolSnapshot): GpuType[] {
  const by = new Map<string, GpuType>();
  for (const h of pool.hosts) {
    if (h.state !== 'up') continue;
    const perHost = new Map<string, number>();
    for (const g of h.gpus) {
      const type = shortGpuType(g.name);
      let t = by.get(type);
      if (!t) by.set(type, (t = { type, names: [], free: 0, total: 0, largest: 0 }));
      if (!t.names.includes(g.name)) t.names.push(g.name);
      t.total++;
      if (g.jobId === null) t.free++;
      perHost.set(type, (perHost.get(type) ?? 0) + 1);
    }
    for (const [type, n] of perHost) by.get(type)!.largest = Math.max(by.get(type)!.largest, n);
  }
  return [...by.values()].sort((a, b) => b.total - a.total || a.type.localeCompare(b.type));
}

export function askOf(d: Directive, pool: PoolSnapshot): Ask {
  const backend = d.backend ?? pool.defaultBackend;
  const hasGpus = pool.hosts.some((h) => h.gpus.length > 0);
  return {
    gpus: d.gpus ?? (hasGpus ? 1 : 0),
    ...(d.gpuType ? { gpuType: d.gpuType } : {}),
    cpus: d.cpus ?? 1,
    memoryMiB: d.memoryMiB ?? 1024,
    ...(d.timeSec !== undefined ? { timeSec: d.timeSec } : {}),
    queue: d.queue ?? 'online',
    ...(backend !== 'hosts' ? { cluster: backend } : {}),
  };
}

function matching(h: HostInfo, type: string | undefined): HostInfo['gpus'] {
  return h.gpus.filter((g) => gpuMatches(g.name, type));
}

/** Hosts that could run the request now (up, with enough free GPUs of the type, CPUs and memory). */
export function fitsNow(pool: PoolSnapshot, a: Ask): string[] {
  return pool.hosts
    .filter((h) => h.state === 'up')
    .filter((h) => matching(h, a.gpuType).filter((g) => g.jobId === null).length >= a.gpus && h.cpus - h.cpusUsed >= a.cpus && h.memoryMiB - h.memoryUsedMiB >= a.memoryMiB)
    .map((h) => h.name);
}

/** Why no host could ever run the request, naming the largest host; undefined when one could. */
export interface NeverFits {
  /** The option at fault, and the most that any one host has of it. */
  key: 'gpus' | 'cpus' | 'memory' | 'gpu-type';
  most: number;
  message: string;
}

export function neverFits(pool: PoolSnapshot, a: Ask): NeverFits | undefined {
  if (a.cluster || pool.hosts.length === 0) return undefined;
  const hosts = pool.hosts;
  if (a.gpus > 0 && a.gpuType && !hosts.some((h) => matching(h, a.gpuType).length > 0)) {
    const types = gpuTypes(pool).map((t) => t.type);
    return { key: 'gpu-type', most: 0, message: `no host has a GPU of type ${a.gpuType}${types.length ? `; the pool has ${types.join(', ')}` : '; the pool has no GPUs'}` };
  }
  if (hosts.some((h) => matching(h, a.gpuType).length >= a.gpus && h.cpus >= a.cpus && h.memoryMiB >= a.memoryMiB)) return undefined;
  const top = [...hosts].sort((x, y) => matching(y, a.gpuType).length - matching(x, a.gpuType).length || y.cpus - x.cpus)[0];
  const n = matching(top, a.gpuType).length;
  if (n < a.gpus) {
    const kinds = [...new Set(matching(top, a.gpuType).map((g) => shortGpuType(g.name)))];
    const what = kinds.length === 1 ? `${n}×${kinds[0]}` : `${n} GPUs`;
    return { key: 'gpus', most: n, message: `${a.gpus} GPUs${a.gpuType ? ` of type ${a.gpuType}` : ''}: the largest host has ${n} (${top.name}, ${what})` };
  }
  const withGpus = hosts.filter((h) => matching(h, a.gpuType).length >= a.gpus);
  const cpuTop = [...withGpus].sort((x, y) => y.cpus - x.cpus)[0];
  if (cpuTop.cpus < a.cpus) return { key: 'cpus', most: cpuTop.cpus, message: `${a.cpus} CPUs: the largest host has ${cpuTop.cpus} (${cpuTop.name})` };
  const memTop = [...withGpus.filter((h) => h.cpus >= a.cpus)].sort((x, y) => y.memoryMiB - x.memoryMiB)[0] ?? cpuTop;
  return { key: 'memory', most: memTop.memoryMiB, message: `${formatMemory(a.memoryMiB)} memory: the largest host has ${formatMemory(memTop.memoryMiB)} (${memTop.name})` };
}

export function queueOf(pool: PoolSnapshot, q: Queue): PoolQueue | undefined {
  return pool.queues.find((x) => x.name === q);
}

/** Jobs that would start before this one: its own queue's, and for offline also online's (online goes first). */
export function queuedAhead(pool: PoolSnapshot, q: Queue): number {
  return pool.queues.filter((x) => x.name === q || (q === 'offline' && x.name === 'online')).reduce((n, x) => n + x.queued, 0);
}

/** The estimate a run button shows: "~now", "~queued #3", "never fits"; undefined for a cluster (Slurm decides). */
export function estimate(pool: PoolSnapshot, a: Ask): string | undefined {
  if (a.cluster) return undefined;
  if (neverFits(pool, a)) return 'never fits';
  const ahead = queuedAhead(pool, a.queue);
  if (ahead === 0 && fitsNow(pool, a).length > 0) return '~now';
  return `~queued #${ahead + 1}`;
}

/** The line's summary for a hover: "fits now on gpu1, gpu4; 2 jobs queued ahead in offline; max time 7d". */
export function fitSummary(pool: PoolSnapshot, a: Ask, fmtTime: (s: number) => string): string {
  if (a.cluster) {
    const c = pool.clusters.find((x) => x.name === a.cluster);
    return c ? `runs on the Slurm cluster ${c.name}: partition ${c.partitions[a.queue]}, gres ${c.gres}` : `backend ${a.cluster}`;
  }
  const never = neverFits(pool, a);
  const parts: string[] = [];
  if (never) parts.push(`never fits: ${never.message}`);
  else {
    const hosts = fitsNow(pool, a);
    parts.push(hosts.length ? `fits now on ${hosts.join(', ')}` : 'nothing free now that fits');
  }
  const ahead = queuedAhead(pool, a.queue);
  parts.push(`${ahead} job${ahead === 1 ? '' : 's'} queued ahead in ${a.queue}`);
  const q = queueOf(pool, a.queue);
  if (q) parts.push(q.maxTimeSec ? `max time ${fmtTime(q.maxTimeSec)}` : 'no time cap');
  return parts.join('; ');
}
