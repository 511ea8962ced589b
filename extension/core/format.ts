/** Short texts the extension shows for jobs and resources: lens titles, tree descriptions, tooltips. Pure. */
import { formatDuration, formatMemory, type Directive } from '../../server/protocol/directives.ts';
import type { Job, Resources } from '../../server/protocol/jobs.ts';

/** "2×A100", "1 GPU", "4 GPUs", "CPU only"; undefined when the count is not given (the broker decides). */
export function gpuText(gpus: number | undefined, gpuType: string | undefined): string | undefined {
  if (gpus === undefined) return gpuType ? `${gpuType}` : undefined;
  if (gpus === 0) return 'CPU only';
  if (gpuType) return `${gpus}×${gpuType}`;
  return gpus === 1 ? '1 GPU' : `${gpus} GPUs`;
}

/** `▶ Run on GPU (2×A100, offline, ~now)` — the resources a directive asks for, and the estimate if known. */
export function lensTitle(d: Directive, estimate?: string): string {
  const parts: string[] = [];
  const g = gpuText(d.gpus, d.gpuType);
  if (g) parts.push(g);
  if (d.cpus !== undefined) parts.push(`${d.cpus} CPU${d.cpus === 1 ? '' : 's'}`);
  if (d.memoryMiB !== undefined) parts.push(formatMemory(d.memoryMiB));
  if (d.timeSec !== undefined) parts.push(d.timeSec === 0 ? 'no time limit' : formatDuration(d.timeSec));
  if (d.queue) parts.push(d.queue);
  if (d.image) parts.push(d.image);
  if (estimate) parts.push(estimate);
  return parts.length ? `▶ Run on GPU (${parts.join(', ')})` : '▶ Run on GPU';
}

/** The resources of a job, e.g. "2×A100, 8 CPUs, 32G, 2h". */
export function resourcesText(r: Resources): string {
  return [gpuText(r.gpus, r.gpuType), `${r.cpus} CPU${r.cpus === 1 ? '' : 's'}`, formatMemory(r.memoryMiB), r.timeLimitSec ? `limit ${formatDuration(r.timeLimitSec)}` : 'no time limit']
    .filter(Boolean)
    .join(', ');
}

/** The GPUs a job holds ("GPU 0,1") or asks for ("2×A100") — what the tree shows. */
export function jobGpus(job: Job): string {
  if (job.gpuIndices.length) return `GPU ${job.gpuIndices.join(',')}`;
  return gpuText(job.resources.gpus, job.resources.gpuType) ?? '';
}

/**
 * Time since start (running), since submit (queued), in whole minutes ("<1m", "12m", "1h5m"): a row that ticked
 * every second would be redrawn under the pointer; or the run's duration (ended), to the second.
 */
export function jobTime(job: Job, now: number): string {
  const start = Date.parse(job.startedAt ?? job.createdAt);
  if (!job.endedAt) return liveDuration(Math.max(0, Math.round((now - start) / 1000)));
  return formatDuration(Math.max(0, Math.round((Date.parse(job.endedAt) - start) / 1000)));
}

/** A time that is still going on, in whole minutes: "<1m", "12m", "1h5m", "2d3h". */
export function liveDuration(sec: number): string {
  return sec < 60 ? '<1m' : formatDuration(Math.floor(sec / 60) * 60);
}

/** The script a job runs: the first argument ending in .py/.sh, else its name. */
export function jobScript(job: Pick<Job, 'command' | 'name'>): string {
  const script = job.command.find((a) => /\.(py|sh|ipynb)$/.test(a));
  return script ? (script.split('/').pop() ?? script) : job.name;
}

/** "a1b2c3 train.py" — the terminal title of a job is "gpurun: " + this. */
export function terminalName(job: Pick<Job, 'id' | 'command' | 'name'>): string {
  return `gpurun: ${job.id} ${jobScript(job)}`;
}

/** One argv as a person reads it (quotes only where needed); for display only, never run. */
export function displayCommand(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** "5 min ago" / "in 2 h" / "just now": how long ago an ISO time was. */
export function relativeTime(iso: string, now: number): string {
  const sec = Math.round((now - Date.parse(iso)) / 1000);
  const a = Math.abs(sec);
  if (a < 10) return 'just now';
  const [n, unit] = a < 60 ? [a, 's'] : a < 3600 ? [Math.floor(a / 60), 'min'] : a < 86400 ? [Math.floor(a / 3600), 'h'] : [Math.floor(a / 86400), 'd'];
  return sec >= 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
}

/** "5 min ago (Tue 1 Dec, 14:03:07)": relative, then the local date and time of this machine. */
export function whenText(iso: string, now: number, timeZone?: string): string {
  const local = new Date(iso).toLocaleString(undefined, { weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false, ...(timeZone ? { timeZone } : {}) });
  return `${relativeTime(iso, now)} (${local})`;
}
