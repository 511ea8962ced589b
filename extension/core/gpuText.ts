/** What a running job's GPUs do, as the sidebar shows it (from GET /v1/hosts). Pure. */
import { formatDuration, formatMemory } from '../../server/protocol/directives.ts';
import { IDLE_AFTER_MS, idleForMs, sparkline } from '../../server/protocol/gpuUsage.ts';
import { liveDuration } from './format.ts';
import type { HostInfo, Job } from '../../server/protocol/jobs.ts';

export interface JobGpuView {
  /** For the row: "37% ▂▅▇" (one GPU) or "avg 52%" (several), "idle 12m" when they sit idle. */
  short: string;
  /** Markdown lines for the tooltip, one per GPU. */
  lines: string[];
  /** All of the job's GPUs have read 0 % for the idle window or more of the job's time. */
  idle: boolean;
  /** For how long (ms), when idle. */
  idleMs: number;
}

/** `windowMs`: how long all its GPUs must read 0 % to count as idle (the gpurun.idleGpuWarning setting). */
export function jobGpuView(job: Job, hosts: HostInfo[], now: number, windowMs = IDLE_AFTER_MS): JobGpuView | undefined {
  if (job.state !== 'running' || !job.host || !job.gpuIndices.length) return undefined;
  const h = hosts.find((x) => x.name === job.host);
  const gpus = h ? job.gpuIndices.map((i) => h.gpus.find((g) => g.index === i)).filter((g): g is HostInfo['gpus'][number] => !!g) : [];
  if (!gpus.length) return undefined;
  const idleMs = Math.min(...gpus.map((g) => idleForMs(g.idleSince, job.startedAt, now)));
  const idle = idleMs >= windowMs;
  const avg = Math.round(gpus.reduce((n, g) => n + g.utilizationPct, 0) / gpus.length);
  const short = idle ? `GPUs idle ${liveDuration(Math.round(idleMs / 1000))}` : gpus.length === 1 ? `${gpus[0].utilizationPct}% ${sparkline(gpus[0].history ?? [], 8)}` : `avg ${avg}%`;
  const lines = gpus.map((g) => `- GPU ${g.index}: ${g.utilizationPct}% · ${formatMemory(g.memoryUsedMiB)}/${formatMemory(g.memoryTotalMiB)} · \`${sparkline(g.history ?? [], 20) || '–'}\``);
  if (idle) lines.push(`- ⚠ its GPUs have sat at 0 % for ${formatDuration(Math.round(idleMs / 1000))}: a data-loading bottleneck, or a hung job?`);
  return { short, lines, idle, idleMs: idle ? idleMs : 0 };
}
