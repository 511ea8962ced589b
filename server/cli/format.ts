/** Text output of the CLI: tables and short descriptions. Pure. */
import type { HostInfo, Job } from '../protocol/jobs.ts';
import { formatDuration, formatMemory } from '../core/units.ts';

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ').trimEnd()).join('\n') + '\n';
}

export function gpusOf(job: Job): string {
  const r = job.resources;
  if (job.gpuIndices.length) return job.gpuIndices.join(',');
  return r.gpus ? `${r.gpus}${r.gpuType ? `×${r.gpuType}` : ''}` : '-';
}

export function elapsed(job: Job, now = Date.now()): string {
  const start = Date.parse(job.startedAt ?? job.createdAt);
  const end = job.endedAt ? Date.parse(job.endedAt) : now;
  return formatDuration(Math.max(0, Math.round((end - start) / 1000)));
}

export function jobsTable(jobs: Job[], withOwner: boolean): string {
  const head = ['ID', ...(withOwner ? ['OWNER'] : []), 'NAME', 'STATE', 'QUEUE', 'HOST', 'GPUS', 'TIME', 'REASON'];
  const rows = jobs.map((j) => [
    j.id,
    ...(withOwner ? [j.owner] : []),
    j.name,
    j.state === 'queued' && j.queuePosition ? `queued #${j.queuePosition}` : j.state,
    j.queue,
    j.host ?? '-',
    gpusOf(j),
    elapsed(j),
    j.exitCode !== null && j.state !== 'succeeded' ? `${j.reason}` : j.reason,
  ]);
  return table([head, ...rows]);
}

export function hostsTable(hosts: HostInfo[]): string {
  let out = table([
    ['NAME', 'STATE', 'GPUS FREE', 'CPUS FREE', 'MEMORY FREE', 'RUNTIME'],
    ...hosts.map((h) => {
      const used = h.gpus.filter((g) => g.jobId).length;
      return [h.name, h.state, `${h.gpus.length - used}/${h.gpus.length}`, `${h.cpus - h.cpusUsed}/${h.cpus}`, `${formatMemory(h.memoryMiB - h.memoryUsedMiB)}/${formatMemory(h.memoryMiB)}`, h.runtime];
    }),
  ]);
  for (const h of hosts) {
    const since = h.since ? `${h.state} since ${clock(h.since)} (${formatDuration(Math.max(0, Math.round((Date.now() - Date.parse(h.since)) / 1000)))}): ` : '';
    if (h.lastError || since) out += `${h.name}: ${since}${h.lastError ?? ''}\n`;
    for (const g of h.gpus) {
      const q = g.quarantined;
      const use = q ? `quarantined (${q.xid === undefined ? q.detail : `Xid ${q.xid}`} at ${clock(q.at).slice(0, 5)})${g.jobId ? `, used by ${g.jobId}` : ''}` : g.jobId ? `used by ${g.jobId}` : 'free';
      out += `  ${h.name} GPU ${g.index}  ${g.name}  ${formatMemory(g.memoryTotalMiB)}  ${use}\n`;
    }
  }
  return out;
}

/** HH:MM:SS of an ISO time, in the local time zone of the CLI. */
function clock(iso: string): string {
  const d = new Date(iso);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/** The CLI's exit code for a job that has ended (documented in the README). */
export function exitCodeOf(job: Job): number {
  switch (job.state) {
    case 'succeeded':
      return 0;
    case 'failed':
      if (job.reason.startsWith('could not start')) return 125;
      return job.exitCode && job.exitCode > 0 ? job.exitCode : 1;
    case 'cancelled':
      return 130;
    case 'timed_out':
      return 124;
    case 'lost':
      return 75;
    default:
      return 0;
  }
}
