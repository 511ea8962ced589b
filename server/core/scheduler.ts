/**
 * Placement of queued jobs on hosts. Pure: no I/O, no clock.
 *
 * Policy: `online` before `offline`; FIFO within a queue; a job that does not fit now is skipped so that a later,
 * smaller job can start (backfill). A host is chosen best-fit (fewest free GPUs that still fit), so big holes stay
 * open for big jobs. GPUs are never double-booked: a GPU held by an allocation is not free.
 */
import type { Queue, Resources } from '../protocol/jobs.ts';

export interface HostCapacity {
  name: string;
  /** Only `up` hosts get new jobs. */
  up: boolean;
  gpus: Array<{ index: number; name: string }>;
  cpus: number;
  memoryMiB: number;
}

/** What a starting or running job holds. */
export interface Allocation {
  jobId: string;
  host: string;
  gpuIndices: number[];
  cpus: number;
  memoryMiB: number;
}

export interface QueuedJob {
  id: string;
  queue: Queue;
  resources: Resources;
  /** Whose job it is; needed only with a per-user GPU cap. */
  owner?: string;
}

/** A cap on the GPUs one user's jobs may hold: `held` GPUs per user now, at most `max` each (0 = no cap). */
export interface OwnerGpuCap {
  max: number;
  held: ReadonlyMap<string, number>;
}

export interface Placement {
  jobId: string;
  host: string;
  gpuIndices: number[];
}

interface HostFree {
  name: string;
  freeGpus: Array<{ index: number; name: string }>;
  cpus: number;
  memoryMiB: number;
}

export function gpuMatches(gpuName: string, type: string | undefined): boolean {
  if (!type) return true;
  // Whole words of the name, in order: "A100" and "a100 80gb" match "NVIDIA A100-SXM4-80GB", "A10" does not
  // (it is another GPU), "RTX 4090" matches "NVIDIA GeForce RTX 4090".
  const words = (s: string) => s.toLowerCase().split(/[^a-z0-9]+/).filter(Boolean);
  const want = words(type);
  if (!want.length) return false;
  let i = 0;
  for (const w of words(gpuName)) if (w === want[i] && ++i === want.length) return true;
  return false;
}

/** Free capacity of each up host after subtracting the allocations. */
export function freeCapacity(hosts: HostCapacity[], allocations: Allocation[]): HostFree[] {
  const used = new Map<string, { gpus: Set<number>; cpus: number; mem: number }>();
  for (const a of allocations) {
    let u = used.get(a.host);
    if (!u) used.set(a.host, (u = { gpus: new Set(), cpus: 0, mem: 0 }));
    for (const g of a.gpuIndices) u.gpus.add(g);
    u.cpus += a.cpus;
    u.mem += a.memoryMiB;
  }
  return hosts
    .filter((h) => h.up)
    .map((h) => {
      const u = used.get(h.name);
      return {
        name: h.name,
        freeGpus: h.gpus.filter((g) => !u?.gpus.has(g.index)),
        cpus: h.cpus - (u?.cpus ?? 0),
        memoryMiB: h.memoryMiB - (u?.mem ?? 0),
      };
    });
}

/**
 * One placement pass. `queued` in the order to serve (submission order, or core/fairness.ts's fair order); queues are
 * separated here. With `cap`, a job whose owner would hold more than `cap.max` GPUs waits.
 * Returns the placements in the order they were made.
 */
export function schedule(hosts: HostCapacity[], allocations: Allocation[], queued: QueuedJob[], cap?: OwnerGpuCap): Placement[] {
  const held = new Map(cap?.held ?? []);
  const free = freeCapacity(hosts, allocations);
  const maxGpus = free.reduce((m, h) => Math.max(m, h.freeGpus.length), 0);
  // buckets[k]: hosts with exactly k free GPUs. Best-fit walks k upwards from the request.
  const buckets: Array<Set<number>> = Array.from({ length: maxGpus + 1 }, () => new Set());
  free.forEach((h, i) => buckets[h.freeGpus.length].add(i));
  let top = maxGpus;
  // Requests that failed this pass: resources only shrink during a pass, so anything at least as big fails too.
  const failed: Resources[] = [];
  const placements: Placement[] = [];

  const ordered = [...queued.filter((j) => j.queue === 'online'), ...queued.filter((j) => j.queue !== 'online')];
  for (const job of ordered) {
    const r = job.resources;
    if (r.gpus > top) continue;
    if (cap?.max && job.owner !== undefined && r.gpus > 0 && (held.get(job.owner) ?? 0) + r.gpus > cap.max) continue;
    if (failed.some((f) => dominates(r, f))) continue;
    const hostIdx = findHost(free, buckets, top, r);
    if (hostIdx < 0) {
      if (failed.length < 64) failed.push(r);
      continue;
    }
    const h = free[hostIdx];
    const taken = takeGpus(h, r);
    buckets[h.freeGpus.length + taken.length].delete(hostIdx);
    buckets[h.freeGpus.length].add(hostIdx);
    h.cpus -= r.cpus;
    h.memoryMiB -= r.memoryMiB;
    while (top > 0 && buckets[top].size === 0) top--;
    placements.push({ jobId: job.id, host: h.name, gpuIndices: taken });
    if (job.owner !== undefined) held.set(job.owner, (held.get(job.owner) ?? 0) + taken.length);
  }
  return placements;
}

/** True when `a` asks for at least as much as `b` of everything (so it cannot fit where `b` did not). */
function dominates(a: Resources, b: Resources): boolean {
  if (a.gpus < b.gpus || a.cpus < b.cpus || a.memoryMiB < b.memoryMiB) return false;
  // A typed request draws on a subset of the GPUs an untyped one could use.
  return b.gpus === 0 || b.gpuType === undefined || a.gpuType?.toLowerCase() === b.gpuType.toLowerCase();
}

function findHost(free: HostFree[], buckets: Array<Set<number>>, top: number, r: Resources): number {
  for (let k = r.gpus; k <= top; k++) {
    for (const i of buckets[k]) {
      const h = free[i];
      if (h.cpus < r.cpus || h.memoryMiB < r.memoryMiB) continue;
      if (r.gpus > 0 && r.gpuType && h.freeGpus.filter((g) => gpuMatches(g.name, r.gpuType)).length < r.gpus) continue;
      return i;
    }
  }
  return -1;
}

function takeGpus(h: HostFree, r: Resources): number[] {
  if (r.gpus === 0) return [];
  const chosen = h.freeGpus.filter((g) => gpuMatches(g.name, r.gpuType)).slice(0, r.gpus);
  const ids = new Set(chosen.map((g) => g.index));
  h.freeGpus = h.freeGpus.filter((g) => !ids.has(g.index));
  return chosen.map((g) => g.index).sort((a, b) => a - b);
}

/**
 * Whether any host could ever run the request (ignoring what is in use now).
 * Returns null when one could, else a message that says what the largest host has.
 */
export function unsatisfiableReason(hosts: HostCapacity[], r: Resources): string | null {
  if (hosts.length === 0) return 'the broker has no hosts configured';
  const fits = hosts.some((h) => h.gpus.filter((g) => gpuMatches(g.name, r.gpuType)).length >= r.gpus && h.cpus >= r.cpus && h.memoryMiB >= r.memoryMiB);
  if (fits) return null;
  const want = `${r.gpus} GPU${r.gpus === 1 ? '' : 's'}${r.gpuType ? ` of type ${r.gpuType}` : ''}, ${r.cpus} CPU${r.cpus === 1 ? '' : 's'} and ${fmtMiB(r.memoryMiB)} memory`;
  const largest = [...hosts].sort((a, b) => count(b, r.gpuType) - count(a, r.gpuType) || b.cpus - a.cpus || b.memoryMiB - a.memoryMiB)[0];
  const types = [...new Set(largest.gpus.map((g) => g.name))].join(', ');
  const has = `${count(largest, r.gpuType)} GPU${count(largest, r.gpuType) === 1 ? '' : 's'}${r.gpuType ? ` of type ${r.gpuType}` : ''}${types ? ` (${types})` : ''}, ${largest.cpus} CPUs and ${fmtMiB(largest.memoryMiB)} memory`;
  return `no host can ever run this job: it asks for ${want}; the largest host, ${largest.name}, has ${has}`;
}

function count(h: HostCapacity, type?: string): number {
  return h.gpus.filter((g) => gpuMatches(g.name, type)).length;
}

function fmtMiB(mib: number): string {
  return mib >= 1024 ? `${+(mib / 1024).toFixed(1)}G` : `${mib}M`;
}

/** Why a queued job is still waiting, in words, given the free capacity now. */
export function waitReason(hosts: HostCapacity[], allocations: Allocation[], r: Resources): string {
  const free = freeCapacity(hosts, allocations);
  if (free.length === 0) return 'waiting: no host is up';
  const best = free.reduce((m, h) => Math.max(m, h.freeGpus.filter((g) => gpuMatches(g.name, r.gpuType)).length), 0);
  if (best < r.gpus) return `waiting for ${r.gpus} free GPU${r.gpus === 1 ? '' : 's'}${r.gpuType ? ` of type ${r.gpuType}` : ''} on one host (most free now: ${best})`;
  const cpus = free.reduce((m, h) => Math.max(m, h.cpus), 0);
  if (cpus < r.cpus) return `waiting for ${r.cpus} free CPUs on one host (most free now: ${cpus})`;
  const mem = free.reduce((m, h) => Math.max(m, h.memoryMiB), 0);
  if (mem < r.memoryMiB) return `waiting for ${fmtMiB(r.memoryMiB)} free memory on one host (most free now: ${fmtMiB(Math.max(0, mem))})`;
  return 'waiting for its turn in the queue';
}
