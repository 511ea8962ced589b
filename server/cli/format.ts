/** Text output of the CLI: tables and short descriptions. Pure. */
import type { HostInfo, Job } from '../protocol/jobs.ts';
import { formatDuration, formatMemory } from '../core/units.ts';
import { IDLE_AFTER_MS, idleForMs, sparkline } from '../core/gpuUsage.ts';

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

/** A running job's GPUs as the hosts' last probes saw them. */
export function jobGpus(job: Job, hosts: HostInfo[]): HostInfo['gpus'] {
  if (!job.host || !job.gpuIndices.length || (job.state !== 'running' && job.state !== 'starting')) return [];
  const h = hosts.find((x) => x.name === job.host);
  return h ? job.gpuIndices.map((i) => h.gpus.find((g) => g.index === i)).filter((g): g is HostInfo['gpus'][number] => !!g) : [];
}

/**
 * What a running job's GPUs do now: "0:37% 12G/80G 1:0% 1G/80G" (utilisation, memory used of total, per GPU index),
 * then "idle 12m" when they have all read 0 % for 10 minutes or more of the job's time; empty for a job that holds no
 * GPU or a host that did not report them.
 */
export function jobGpuUsage(job: Job, hosts: HostInfo[], now = Date.now()): string {
  const gpus = jobGpus(job, hosts);
  if (!gpus.length) return '';
  const text = gpus.map((g) => `${g.index}:${g.utilizationPct}% ${formatMemory(g.memoryUsedMiB)}/${formatMemory(g.memoryTotalMiB)}`).join(' ');
  const idle = idleOf(job, gpus, now);
  return idle ? `${text} idle ${formatDuration(Math.round(idle / 1000))}` : text;
}

/** How long all of a job's GPUs have sat at 0 % during the job (ms), when that is IDLE_AFTER_MS or more; else 0. */
export function idleOf(job: Job, gpus: HostInfo['gpus'], now = Date.now()): number {
  if (!gpus.length) return 0;
  const idle = Math.min(...gpus.map((g) => idleForMs(g.idleSince, job.startedAt, now)));
  return idle >= IDLE_AFTER_MS ? idle : 0;
}

/** `gpurun show ID`: one job, every field a person looks at, and for a running one what its GPUs do. */
export function jobDetails(job: Job, hosts: HostInfo[], now = Date.now()): string {
  const r = job.resources;
  const lines = [
    `job ${job.id}  ${job.name}  ${job.state.replace('_', ' ')}${job.exitCode !== null ? ` (exit ${job.exitCode})` : ''}`,
    `  command:   ${job.command.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')}`,
    `  workspace: ${job.workspace}`,
    `  asked:     ${r.gpus} GPU${r.gpus === 1 ? '' : 's'}${r.gpuType ? ` (${r.gpuType})` : ''}, ${r.cpus} CPU${r.cpus === 1 ? '' : 's'}, ${formatMemory(r.memoryMiB)}, ${r.timeLimitSec ? `limit ${formatDuration(r.timeLimitSec)}` : 'no time limit'}, queue ${job.queue}`,
    ...(job.host ? [`  host:      ${job.host}${job.gpuIndices.length ? `, GPU ${job.gpuIndices.join(',')}` : ''}`] : []),
    `  submitted: ${job.createdAt}${job.startedAt ? `, started ${job.startedAt}` : ''}${job.endedAt ? `, ended ${job.endedAt}` : ''} (${elapsed(job, now)})`,
    ...(job.reason ? [`  reason:    ${job.reason}`] : []),
  ];
  const gpus = jobGpus(job, hosts);
  for (const g of gpus) lines.push(`  GPU ${g.index}: ${String(g.utilizationPct).padStart(3)}%  ${formatMemory(g.memoryUsedMiB)}/${formatMemory(g.memoryTotalMiB)}  ${sparkline(g.history ?? [], 20)}  (${g.name})`);
  const idle = idleOf(job, gpus, now);
  if (idle) lines.push(`  its GPUs have sat idle (0 %) for ${formatDuration(Math.round(idle / 1000))}: a data-loading bottleneck, or a hung job?`);
  return lines.join('\n') + '\n';
}

export function jobsTable(jobs: Job[], withOwner: boolean, hosts: HostInfo[] = []): string {
  const usage = jobs.map((j) => jobGpuUsage(j, hosts));
  const withUsage = usage.some(Boolean);
  const head = ['ID', ...(withOwner ? ['OWNER'] : []), 'NAME', 'STATE', 'QUEUE', 'HOST', 'GPUS', ...(withUsage ? ['GPU USE'] : []), 'TIME', 'REASON'];
  const rows = jobs.map((j, k) => [
    j.id,
    ...(withOwner ? [j.owner] : []),
    j.name,
    j.state === 'queued' && j.queuePosition ? `queued #${j.queuePosition}` : j.state,
    j.queue,
    j.host ?? '-',
    gpusOf(j),
    ...(withUsage ? [usage[k] || '-'] : []),
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
    if (h.lastError) out += `${h.name}: ${h.lastError}\n`;
    for (const g of h.gpus) out += `  ${h.name} GPU ${g.index}  ${g.name}  ${g.utilizationPct}%  ${formatMemory(g.memoryUsedMiB)}/${formatMemory(g.memoryTotalMiB)}  ${g.jobId ? `used by ${g.jobId}` : 'free'}${g.history?.length ? `  ${sparkline(g.history)}` : ''}\n`;
  }
  return out;
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
