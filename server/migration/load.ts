/**
 * The online load of a host, from `docker stats` of its online jobs' containers (Docker hosts) or from /proc of their
 * sessions' processes (process hosts), and when it has been over the threshold for long enough to move offline jobs
 * off. Pure.
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

/**
 * What a process host says of its online jobs: the clock tick and page size, its uptime (the clock CPU time is
 * measured against), then `SID /proc/PID/stat` for every process of each job's session (a job on a process host has
 * its own session: runtimes/sshProcess.ts). The sessions are the script's arguments, numbers the broker recorded.
 */
export const PROC_USAGE_SCRIPT = [
  'getconf CLK_TCK; getconf PAGESIZE; cut -d" " -f1 /proc/uptime',
  'for s in "$@"; do for p in $(pgrep -s "$s"); do l=$(cat "/proc/$p/stat" 2>/dev/null) && printf "%s %s\\n" "$s" "$l"; done; done',
].join('\n');

export function procUsageArgs(sessions: readonly number[]): string[] {
  return ['sh', '-c', PROC_USAGE_SCRIPT, 'sh', ...sessions.map((n) => String(Math.trunc(n)))];
}

/** One reading of a process host: per session, CPU time used so far (s) and resident memory (bytes); its pids. */
export interface ProcUsage {
  /** The host's uptime at the reading (s). */
  at: number;
  sessions: Map<number, { cpuSec: number; memBytes: number; pids: number[] }>;
}

/** Parses PROC_USAGE_SCRIPT's output; null when its first lines are not what it prints (no getconf, no /proc). */
export function parseProcUsage(text: string): ProcUsage | null {
  const lines = text.split('\n');
  const tick = Number(lines[0]);
  const page = Number(lines[1]);
  const at = Number(lines[2]);
  if (!(tick > 0) || !(page > 0) || !(at > 0)) return null;
  const sessions: ProcUsage['sessions'] = new Map();
  for (const line of lines.slice(3)) {
    const m = /^(\d+) (\d+) \(.*\) (.*)$/.exec(line);
    if (!m) continue;
    // After "pid (comm)": state is field 3; utime, stime are 14 and 15; rss (pages) is 24.
    const f = m[3].split(' ');
    const utime = Number(f[11]), stime = Number(f[12]), rss = Number(f[21]);
    if (![utime, stime, rss].every(Number.isFinite)) continue;
    const sid = Number(m[1]);
    const s = sessions.get(sid) ?? { cpuSec: 0, memBytes: 0, pids: [] };
    s.cpuSec += (utime + stime) / tick;
    s.memBytes += rss * page;
    s.pids.push(Number(m[2]));
    sessions.set(sid, s);
  }
  return { at, sessions };
}

/**
 * The usage of each session between two readings, as `docker stats` gives it for a container: CPU in percent of one
 * core over the interval, memory now. A session not in the earlier reading is left out (its CPU has no interval yet).
 */
export function procUsageBetween(before: ProcUsage, now: ProcUsage): ContainerUsage[] {
  const dt = now.at - before.at;
  if (!(dt > 0)) return [];
  const out: ContainerUsage[] = [];
  for (const [sid, s] of now.sessions) {
    const b = before.sessions.get(sid);
    if (b) out.push({ cpuPct: (Math.max(0, s.cpuSec - b.cpuSec) / dt) * 100, memBytes: s.memBytes });
  }
  return out;
}

/**
 * A host's online load at one moment, as fractions of its CPUs and memory, and (when its online jobs hold GPUs and
 * nvidia-smi answered) of their GPUs' time and memory (gpuLoad.ts).
 */
export interface LoadSample {
  at: number;
  cpu: number;
  memory: number;
  gpu?: number;
  gpuMemory?: number;
}

/** The resources a threshold can be set on, as `migration.threshold` names them. */
export const LOAD_KINDS = ['cpu', 'memory', 'gpu', 'gpuMemory'] as const;
export type LoadKind = (typeof LOAD_KINDS)[number];
export type Threshold = Record<LoadKind, number>;

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
  /** Which resource is over and by how much at the last sample (fraction). */
  what: LoadKind;
  value: number;
  limit: number;
  /** How long it has been over, in ms. */
  forMs: number;
}

/**
 * Whether the samples (oldest first) show the load over the threshold for at least `windowMs` up to the last one:
 * every sample in the window over it, and the first over-sample at least `windowMs` before the last. Null when not.
 */
export function overloaded(samples: readonly LoadSample[], threshold: Threshold, windowMs: number): Overload | null {
  if (samples.length === 0) return null;
  const last = samples[samples.length - 1];
  for (const what of LOAD_KINDS) {
    const limit = threshold[what];
    let since: number | null = null;
    // A sample without a GPU reading is not over a GPU threshold.
    for (let i = samples.length - 1; i >= 0 && (samples[i][what] ?? 0) > limit; i--) since = samples[i].at;
    if (since !== null && last.at - since >= windowMs) return { what, value: last[what] ?? 0, limit, forMs: last.at - since };
  }
  return null;
}

const WORDS: Record<LoadKind, string> = { cpu: 'load', memory: 'memory', gpu: 'GPU use', gpuMemory: 'GPU memory' };

/** "online load 94% > 90% for 60 s" (cpu), "online memory …", "online GPU use …", "online GPU memory …". */
export function overloadWords(o: Overload): string {
  return `online ${WORDS[o.what]} ${Math.round(o.value * 100)}% > ${Math.round(o.limit * 100)}% for ${Math.round(o.forMs / 1000)} s`;
}

/** The most loaded of a sample's resources (a destination's load, to pick the least loaded). */
export function peakLoad(s: LoadSample | undefined): number {
  return s ? Math.max(...LOAD_KINDS.map((k) => s[k] ?? 0)) : 0;
}
