/** Text output of the CLI: tables and short descriptions. Pure. */
import { attemptWords, drainWords, type Attempt, type GpuQuarantine, type HostInfo, type Job } from '../protocol/jobs.ts';
import { formatDuration, formatMemory } from '../core/units.ts';
import { IDLE_AFTER_MS, idleForMs, sparkline } from '../core/gpuUsage.ts';

/**
 * Text from the broker (a job's name, argv, reason, host errors) made safe for a terminal: control characters
 * (ESC, CR, BEL, C1, …) become visible escapes such as `\x1b`, so a job cannot move the cursor, change colours,
 * set the window title or rewrite earlier lines of `gpurun ls`.
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const n = c.charCodeAt(0);
    return c === '\t' ? ' ' : n > 0xff ? `\\u${n.toString(16)}` : `\\x${n.toString(16).padStart(2, '0')}`;
  });
}

export function table(rows: string[][]): string {
  rows = rows.map((r) => r.map(printable));
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
export function jobGpuUsage(job: Job, hosts: HostInfo[], now = Date.now(), windowMs = IDLE_AFTER_MS): string {
  const gpus = jobGpus(job, hosts);
  if (!gpus.length) return '';
  const text = gpus.map((g) => `${g.index}:${g.utilizationPct}% ${formatMemory(g.memoryUsedMiB)}/${formatMemory(g.memoryTotalMiB)}`).join(' ');
  const idle = idleOf(job, gpus, now, windowMs);
  return idle ? `${text} idle ${formatDuration(Math.round(idle / 1000))}` : text;
}

/** How long all of a job's GPUs have sat at 0 % during the job (ms), when that is `windowMs` or more; else 0. */
export function idleOf(job: Job, gpus: HostInfo['gpus'], now = Date.now(), windowMs = IDLE_AFTER_MS): number {
  if (!gpus.length) return 0;
  const idle = Math.min(...gpus.map((g) => idleForMs(g.idleSince, job.startedAt, now)));
  return idle >= windowMs ? idle : 0;
}

/** For `gpurun show`: each of a running job's GPUs with a bar per probe, and whether they sit idle; '' otherwise. */
export function gpuUsageLines(job: Job, hosts: HostInfo[], now = Date.now(), windowMs = IDLE_AFTER_MS): string {
  const gpus = jobGpus(job, hosts);
  if (!gpus.length) return '';
  const lines = ['', 'GPUs (the broker\'s last probes, about 30 s apart):'];
  for (const g of gpus) lines.push(`  GPU ${g.index}: ${String(g.utilizationPct).padStart(3)}%  ${formatMemory(g.memoryUsedMiB)}/${formatMemory(g.memoryTotalMiB)}  ${sparkline(g.history ?? [], 20)}  (${g.name})`);
  const idle = idleOf(job, gpus, now, windowMs);
  if (idle) lines.push(`  its GPUs have sat idle (0 %) for ${formatDuration(Math.round(idle / 1000))}: a data-loading bottleneck, or a hung job?`);
  return lines.join('\n') + '\n';
}

export function jobsTable(jobs: Job[], withOwner: boolean, hosts: HostInfo[] = [], windowMs = IDLE_AFTER_MS): string {
  const usage = jobs.map((j) => jobGpuUsage(j, hosts, Date.now(), windowMs));
  const withUsage = usage.some(Boolean);
  const head = ['ID', ...(withOwner ? ['OWNER'] : []), 'NAME', 'STATE', 'QUEUE', 'HOST', 'GPUS', ...(withUsage ? ['GPU USE'] : []), 'TIME', 'REASON'];
  const rows = jobs.map((j, k) => [
    j.id,
    ...(withOwner ? [j.owner] : []),
    j.name,
    stateText(j),
    j.queue,
    j.host ?? '-',
    gpusOf(j),
    ...(withUsage ? [usage[k] || '-'] : []),
    elapsed(j),
    j.exitCode !== null && j.state !== 'succeeded' ? `${j.reason}` : j.reason,
  ]);
  return table([head, ...rows]);
}

/** The STATE column: "queued #3", "running", and a later attempt's number ("running · attempt 2/4"). */
export function stateText(j: Job): string {
  const s = j.state === 'queued' && j.queuePosition ? `queued #${j.queuePosition}` : j.state;
  const words = attemptWords(j.attempt);
  return words && !j.reason.includes(words) ? `${s} · ${words}` : s;
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
  const head = lines.map(printable).join('\n');
  if (atts.length === 0) return `${head}\n  attempts:  none yet\n`;
  const rows = [['#', 'HOST', 'GPUS', 'STARTED', 'ENDED', 'STATE', 'FAULT', 'LOG AT', 'REASON']];
  for (const a of atts) rows.push([String(a.n), a.host ?? '-', a.gpuIndices.join(',') || '-', a.startedAt ?? '-', a.endedAt ?? '-', a.state ?? 'running', a.fault ?? '-', String(a.logOffset), a.reason ?? '']);
  let out = `${head}\n\nattempts (of at most ${j.attempt?.of ?? (j.restarts ?? 0) + 1}):\n${table(rows)}`;
  for (const a of atts) {
    const ev = evidenceLines(a);
    if (ev.length) out += `evidence of attempt ${a.n}:\n${ev.map((l) => `  ${printable(l)}\n`).join('')}`;
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
  const m = e.move;
  if (m) out.push(`${m.to ? `move ${m.from} → ${m.to}` : `preempted on ${m.from}`} (${m.method}): ${m.cause}${m.checkpointAt ? `; checkpoint at ${m.checkpointAt}` : ''}${m.downtimeSec !== undefined ? `; downtime ${m.downtimeSec} s` : ''}${m.precopyBytes !== undefined || m.finalBytes !== undefined ? `; copied ${m.precopyBytes ?? 0} B while running, ${m.finalBytes ?? 0} B after${m.totalBytes !== undefined ? ` (a full copy: ${m.totalBytes} B)` : ''}` : ''}${m.fellBack ? `; ${m.fellBack}` : ''}`);
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
    const since = h.since ? `${h.state} since ${clock(h.since)} (${formatDuration(Math.max(0, Math.round((Date.now() - Date.parse(h.since)) / 1000)))}): ` : '';
    if (h.lastError || since) out += `${printable(`${h.name}: ${since}${h.lastError ?? ''}`)}\n`;
    if (h.checkpoint && (h.runtime === 'docker' || h.runtime === 'ssh-process')) out += `${printable(`${h.name}: checkpoint: ${h.checkpoint.transparent === null ? 'transparent (CRIU), cooperative' : `cooperative (transparent unavailable: ${h.checkpoint.transparent})`}`)}\n`;
    if (h.workspace) out += `${printable(`${h.name}: workspace: ${h.workspace}`)}\n`;
    if (h.onlineLoad) out += `${h.name}: ${onlineLoadWords(h.onlineLoad)}\n`;
    if (h.drain) out += `${h.name}: ${drainWords(h.drain)}\n`;
    for (const g of h.gpus) {
      const q = g.quarantined;
      const use = q ? `quarantined (${q.xid === undefined ? q.detail : `Xid ${q.xid}`} at ${clock(q.at).slice(0, 5)})${g.jobId ? `, used by ${g.jobId}` : ''}` : g.jobId ? `used by ${g.jobId}` : 'free';
      out += `${printable(`  ${h.name} GPU ${g.index}  ${g.name}  ${g.utilizationPct}%  ${formatMemory(g.memoryUsedMiB)}/${formatMemory(g.memoryTotalMiB)}  ${use}`)}${g.history?.length ? `  ${sparkline(g.history)}` : ''}\n`;
      if (q) out += `${printable(`    ${quarantineLine(h.name, g.index, q)}`)}\n`;
    }
  }
  return out;
}

/** "online jobs use 94% of its CPUs, 12% of its memory, 97% of their GPUs' time, 80% of their GPUs' memory". */
export function onlineLoadWords(l: NonNullable<HostInfo['onlineLoad']>): string {
  const pct = (f: number) => `${Math.round(f * 100)}%`;
  const gpu = l.gpu === undefined ? '' : `, ${pct(l.gpu)} of their GPUs' time, ${pct(l.gpuMemory ?? 0)} of their GPUs' memory`;
  return `online jobs use ${pct(l.cpu)} of its CPUs, ${pct(l.memory)} of its memory${gpu}`;
}

/** Why a GPU is quarantined and what lifts it, for the hosts table. */
export function quarantineLine(host: string, gpu: number, q: GpuQuarantine): string {
  const lift = q.source === 'health' ? `lifts by itself once nvidia-smi reports it healthy` : `an admin lifts it with: gpurun hosts clear ${host} ${gpu} (a reboot of ${host} lifts it too)`;
  return `${q.xid === undefined ? '' : `Xid ${q.xid}: `}${q.detail}; ${lift}`;
}

/** HH:MM:SS of an ISO time, in the local time zone of the CLI. */
function clock(iso: string): string {
  const d = new Date(iso);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

export function tokensTable(tokens: Array<{ id: string; user: string; admin: boolean; createdAt: string; expiresAt: string | null; state: string }>): string {
  return table([['ID', 'USER', 'ADMIN', 'CREATED', 'EXPIRES', 'STATE'], ...tokens.map((t) => [t.id, t.user, t.admin ? 'yes' : 'no', t.createdAt.slice(0, 19), t.expiresAt?.slice(0, 19) ?? 'never', t.state])]);
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
