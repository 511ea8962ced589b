/**
 * The online load of a host, from `docker stats` of its online jobs' containers, and when it has been over the
 * threshold for long enough to move offline jobs off. Pure.
 */

/** One container's usage: CPU in percent of one core (Docker's CPUPerc), memory in bytes. */
export interface ContainerUsage {
  cpuPct: number;
  memBytes: number;
}

const UNITS: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 1024, MIB: 1024 ** 2, GIB: 1024 ** 3, TIB: 1024 ** 4 };

function bytes(text: string): number | null {
  const m = /^([\d.]+)\s*([A-Za-z]+)$/.exec(text.trim());
  const u = m && UNITS[m[2].toUpperCase()];
  return m && u ? Number(m[1]) * u : null;
}

/** Parses `docker stats --no-stream --format '{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}'` ("93.52%", "12.5MiB / 256MiB"). */
export function parseDockerStats(text: string): Map<string, ContainerUsage> {
  const out = new Map<string, ContainerUsage>();
  for (const line of text.split('\n')) {
    const [name, cpu, mem] = line.split('\t');
    if (!name || !cpu || !mem) continue;
    const pct = Number(cpu.trim().replace(/%$/, ''));
    const used = bytes(mem.split('/')[0] ?? '');
    if (!Number.isFinite(pct) || used === null) continue;
    out.set(name.trim(), { cpuPct: pct, memBytes: used });
  }
  return out;
}

/** A host's online load at one moment, as fractions of its CPUs and memory. */
export interface LoadSample {
  at: number;
  cpu: number;
  memory: number;
}

export function hostLoad(usages: Iterable<ContainerUsage>, host: { cpus: number; memoryMiB: number }, at: number): LoadSample {
  let cpu = 0;
  let mem = 0;
  for (const u of usages) {
    cpu += u.cpuPct;
    mem += u.memBytes;
  }
  return { at, cpu: host.cpus > 0 ? cpu / 100 / host.cpus : 0, memory: host.memoryMiB > 0 ? mem / (host.memoryMiB * 1024 * 1024) : 0 };
}

export interface Overload {
  /** Which resource is over ("cpu" or "memory") and by how much at the last sample (fraction). */
  what: 'cpu' | 'memory';
  value: number;
  limit: number;
  /** How long it has been over, in ms. */
  forMs: number;
}

/**
 * Whether the samples (oldest first) show the load over the threshold for at least `windowMs` up to the last one:
 * every sample in the window over it, and the first over-sample at least `windowMs` before the last. Null when not.
 */
export function overloaded(samples: readonly LoadSample[], threshold: { cpu: number; memory: number }, windowMs: number): Overload | null {
  if (samples.length === 0) return null;
  const last = samples[samples.length - 1];
  for (const what of ['cpu', 'memory'] as const) {
    const limit = threshold[what];
    let since: number | null = null;
    for (let i = samples.length - 1; i >= 0 && samples[i][what] > limit; i--) since = samples[i].at;
    if (since !== null && last.at - since >= windowMs) return { what, value: last[what], limit, forMs: last.at - since };
  }
  return null;
}

/** "online load 94% > 90% for 60 s" (cpu) or "online memory 95% > 90% for 60 s". */
export function overloadWords(o: Overload): string {
  return `online ${o.what === 'cpu' ? 'load' : 'memory'} ${Math.round(o.value * 100)}% > ${Math.round(o.limit * 100)}% for ${Math.round(o.forMs / 1000)} s`;
}
