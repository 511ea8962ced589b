/** The text of the notification shown when a job ends. Pure. */
import type { Job } from '../../server/protocol/jobs.ts';
import { jobScript } from './format.ts';

export function endNotice(job: Job, tail: string): { text: string; ok: boolean } {
  const state = job.state === 'failed' && job.exitCode !== null ? `failed (exit ${job.exitCode})` : job.state.replace('_', ' ');
  const reason = job.state === 'succeeded' || !job.reason ? '' : `: ${job.reason}`;
  // Escape codes (progress bars, colours) do not belong in a notification; one line of it.
  const last = tail.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').split(/\r?\n|\r/).map((l) => l.trim()).filter(Boolean).join(' ⏎ ');
  const lastText = last ? ` — last output: ${last.length > 300 ? `…${last.slice(-300)}` : last}` : '';
  return { text: `GPU Run: job ${job.id} ${jobScript(job)} ${state}${reason}${lastText}`, ok: job.state === 'succeeded' };
}

/** The text of the one notification shown when a running job's GPUs have sat at 0 % for the idle window. */
export function idleNotice(job: Job, idleMs: number): string {
  const min = Math.max(1, Math.round(idleMs / 60_000));
  return `GPU Run: job ${job.id} ${jobScript(job)} has had its GPU${job.gpuIndices.length === 1 ? '' : 's'} at 0 % for ${idleMs < 60_000 ? `${Math.round(idleMs / 1000)} s` : `${min} min`}: a data-loading bottleneck, or a hung job? (setting gpurun.idleGpuWarning)`;
}
