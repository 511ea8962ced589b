/**
 * The sidebar's model: the jobs the broker told us about (a list, then one event per change), grouped into Running,
 * Queued and Recent, and how each job is shown. Pure: the TreeDataProvider in views/ only maps these to TreeItems.
 */
import { isFinal, type Job, type JobState } from '../../server/protocol/jobs.ts';
import { displayCommand, jobGpus, jobScript, jobTime, resourcesText } from './format.ts';

export type GroupId = 'running' | 'queued' | 'recent';
export const GROUPS: ReadonlyArray<{ id: GroupId; label: string }> = [
  { id: 'running', label: 'Running' },
  { id: 'queued', label: 'Queued' },
  { id: 'recent', label: 'Recent' },
];

/** How many ended jobs Recent keeps. */
export const RECENT_LIMIT = 25;

export function groupOf(state: JobState): GroupId {
  if (state === 'queued') return 'queued';
  if (state === 'starting' || state === 'running') return 'running';
  return 'recent';
}

/** Jobs by id, kept current from list answers and events. */
export class JobList {
  private readonly jobs = new Map<string, Job>();

  /** Replaces everything (after a (re)connect, the list is the truth). */
  reset(jobs: Job[]): void {
    this.jobs.clear();
    for (const j of jobs) this.jobs.set(j.id, j);
  }

  /**
   * One job changed. Returns false for a stale snapshot: an event that arrives after a newer one (a final state never
   * goes back to an active one).
   */
  apply(job: Job): boolean {
    const old = this.jobs.get(job.id);
    if (old && isFinal(old.state) && !isFinal(job.state)) return false;
    this.jobs.set(job.id, job);
    return true;
  }

  get(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  all(): Job[] {
    return [...this.jobs.values()];
  }

  /** A group's jobs: Running by start time, Queued by queue position, Recent newest end first (at most RECENT_LIMIT). */
  group(g: GroupId): Job[] {
    const jobs = this.all().filter((j) => groupOf(j.state) === g);
    if (g === 'queued') return jobs.sort((a, b) => (a.queuePosition ?? Infinity) - (b.queuePosition ?? Infinity) || a.createdAt.localeCompare(b.createdAt));
    if (g === 'running') return jobs.sort((a, b) => (a.startedAt ?? a.createdAt).localeCompare(b.startedAt ?? b.createdAt));
    return jobs.sort((a, b) => (b.endedAt ?? b.createdAt).localeCompare(a.endedAt ?? a.createdAt)).slice(0, RECENT_LIMIT);
  }

  counts(): { running: number; queued: number } {
    let running = 0, queued = 0;
    for (const j of this.jobs.values()) {
      const g = groupOf(j.state);
      if (g === 'running') running++;
      else if (g === 'queued') queued++;
    }
    return { running, queued };
  }
}

/** A ThemeIcon id and an optional ThemeColor id. */
export interface IconSpec {
  id: string;
  color?: string;
}

export const STATE_ICONS: Record<JobState, IconSpec> = {
  queued: { id: 'clock' },
  starting: { id: 'loading~spin' },
  running: { id: 'sync~spin', color: 'charts.blue' },
  succeeded: { id: 'pass', color: 'testing.iconPassed' },
  failed: { id: 'error', color: 'testing.iconFailed' },
  cancelled: { id: 'circle-slash' },
  timed_out: { id: 'watch', color: 'testing.iconFailed' },
  lost: { id: 'question', color: 'testing.iconFailed' },
};

export interface JobItemView {
  label: string;
  description: string;
  /** Markdown. */
  tooltip: string;
  icon: IconSpec;
  /** `job-queued`, `job-running` or `job-ended`: the menus in package.json pick inline actions by it. */
  contextValue: string;
}

/** What a job's row in the tree shows. */
export function jobItem(job: Job, now: number): JobItemView {
  const parts: string[] = [];
  if (job.state === 'queued') parts.push(job.queuePosition ? `#${job.queuePosition} in ${job.queue}` : `queued in ${job.queue}`);
  else if (isFinal(job.state)) parts.push(job.state === 'failed' && job.exitCode !== null ? `failed (exit ${job.exitCode})` : job.state.replace('_', ' '));
  else if (job.state === 'starting') parts.push('starting');
  // A job on a later attempt says which, and what ended the one before (the broker's reason carries it).
  if (job.attempt && job.attempt.n > 1) parts.push(`attempt ${job.attempt.n}/${job.attempt.of}`);
  if (job.host) parts.push(job.host);
  const gpus = jobGpus(job);
  if (gpus) parts.push(gpus);
  parts.push(jobTime(job, now));
  const md = [
    `**${job.id}** ${job.name} — **${job.state.replace('_', ' ')}**`,
    '',
    '```',
    displayCommand(job.command),
    '```',
    '',
    `- resources: ${resourcesText(job.resources)}`,
    `- queue: ${job.queue}${job.queuePosition ? ` (position ${job.queuePosition})` : ''}`,
    ...(job.host ? [`- host: ${job.host}${job.gpuIndices.length ? `, GPUs ${job.gpuIndices.join(',')}` : ''}`] : []),
    `- workspace: ${job.workspace}`,
    `- submitted: ${job.createdAt}`,
    ...(job.startedAt ? [`- started: ${job.startedAt}`] : []),
    ...(job.endedAt ? [`- ended: ${job.endedAt}`] : []),
    ...(job.exitCode !== null ? [`- exit code: ${job.exitCode}`] : []),
    ...(job.reason ? [`- reason: ${job.reason}`] : []),
    ...(job.attempt ? [`- attempt: ${job.attempt.n} of at most ${job.attempt.of}`] : []),
  ];
  return {
    label: `${job.id} ${jobScript(job)}`,
    description: parts.join(' · '),
    tooltip: md.join('\n'),
    icon: STATE_ICONS[job.state],
    contextValue: job.state === 'queued' ? 'job-queued' : isFinal(job.state) ? 'job-ended' : 'job-running',
  };
}

/** The status bar text, e.g. "$(server-process) 1 running, 2 queued". */
export function statusText(c: { running: number; queued: number }): string {
  return `$(server-process) ${c.running} running, ${c.queued} queued`;
}
