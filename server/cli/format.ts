/** Text output of the CLI: tables and short descriptions. Pure. */
import type { Attempt, HostInfo, Job } from '../protocol/jobs.ts';
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
    stateText(j),
    j.queue,
    j.host ?? '-',
    gpusOf(j),
    elapsed(j),
    j.exitCode !== null && j.state !== 'succeeded' ? `${j.reason}` : j.reason,
  ]);
  return table([head, ...rows]);
}

/** The STATE column: "queued #3", "running", and a later attempt's number ("running · attempt 2/4"). */
export function stateText(j: Job): string {
  const s = j.state === 'queued' && j.queuePosition ? `queued #${j.queuePosition}` : j.state;
  return j.attempt && j.attempt.n > 1 && !j.reason.includes(`attempt ${j.attempt.n}/`) ? `${s} · attempt ${j.attempt.n}/${j.attempt.of}` : s;
}

/** `gpurun show ID`: the job, then its attempts with fault and evidence. */
export function showJob(j: Job): string {
  const lines = [
    `job ${j.id} (${j.name}): ${j.state}${j.exitCode !== null ? `, exit code ${j.exitCode}` : ''}`,
    `  reason:    ${j.reason}`,
    `  command:   ${j.command.join(' ')}`,
    `  owner:     ${j.owner} · queue ${j.queue} · backend ${j.backend ?? 'hosts'}`,
    `  restarts:  ${j.restarts ?? 0}${j.restartOnExit?.length ? ` (also on exit ${j.restartOnExit.join(',')})` : ''}`,
    `  submitted: ${j.createdAt}${j.endedAt ? ` · ended ${j.endedAt}` : ''}`,
  ];
  const atts = j.attempts ?? [];
  if (atts.length === 0) return `${lines.join('\n')}\n  attempts:  none yet\n`;
  const rows = [['#', 'HOST', 'GPUS', 'STARTED', 'ENDED', 'STATE', 'FAULT', 'LOG AT', 'REASON']];
  for (const a of atts) rows.push([String(a.n), a.host ?? '-', a.gpuIndices.join(',') || '-', a.startedAt ?? '-', a.endedAt ?? '-', a.state ?? 'running', a.fault ?? '-', String(a.logOffset), a.reason ?? '']);
  let out = `${lines.join('\n')}\n\nattempts (of at most ${j.attempt?.of ?? (j.restarts ?? 0) + 1}):\n${table(rows)}`;
  for (const a of atts) {
    const ev = evidenceLines(a);
    if (ev.length) out += `evidence of attempt ${a.n}:\n${ev.map((l) => `  ${l}\n`).join('')}`;
  }
  return out;
}

function evidenceLines(a: Attempt): string[] {
  const e = a.evidence;
  const out: string[] = [];
  if (e.exitCode !== undefined && e.exitCode !== null) out.push(`exit code ${e.exitCode}`);
  if (e.signal) out.push(`signal ${e.signal}`);
  if (e.oomKilled) out.push('killed by the OOM killer');
  if (e.startError) out.push(`start error: ${e.startError}`);
  if (e.hostUnreachableSec !== undefined) out.push(`host unreachable for ${Math.round(e.hostUnreachableSec)} s`);
  if (e.bootIdChanged) out.push('host came back with another boot id (rebooted)');
  if (e.runtimeGone) out.push(`runtime: ${e.runtimeGone}`);
  if (e.engineDown) out.push(`engine: ${e.engineDown}`);
  if (e.workspaceLost) out.push(`workspace lost (${e.workspaceLost.controlPlane ? "gpurun's own path" : 'the files or the mount'}): ${e.workspaceLost.reason}`);
  for (const g of e.gpuFaults ?? []) out.push(`GPU ${g.gpu}${g.xid !== undefined ? ` Xid ${g.xid}` : ''} at ${g.at}: ${g.detail}`);
  if (e.slurm) out.push(`Slurm: ${e.slurm.state}${e.slurm.reason ? ` (${e.slurm.reason})` : ''}`);
  for (const n of e.notes ?? []) out.push(n);
  return out;
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
    for (const g of h.gpus) out += `  ${h.name} GPU ${g.index}  ${g.name}  ${formatMemory(g.memoryTotalMiB)}  ${g.jobId ? `used by ${g.jobId}` : 'free'}\n`;
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
