/**
 * The sidebar's model: the jobs the broker told us about (a list, then one event per change), grouped into Running,
 * Queued and Recent, and how each job is shown. Pure: the TreeDataProvider in views/ only maps these to TreeItems.
 */
import { attemptWords, isFinal, type Job, type JobState } from '../../server/protocol/jobs.ts';
import { displayCommand, jobGpus, jobScript, jobTime, resourcesText, whenText } from './format.ts';

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

/** How long rows stay where they are after an inline action (Cancel, Rerun), so a second click hits the same job. */
export const HOLD_ROWS_MS = 3000;

/** Jobs by id, kept current from list answers and events. */
export class JobList {
  private readonly jobs = new Map<string, Job>();
  /** While held: each group's ids as they were shown, and until when (ms). */
  private held: { until: number; rows: Record<GroupId, string[]> } | undefined;
  /** The sidebar's filter: a part of the name, id or command (any case); empty shows every job. */
  filter = '';

  /**
   * Keeps every row where it is for `ms`: a job whose state changes stays in its row (showing its new state), and
   * new jobs appear when the hold ends. Called before an inline action, whose button sits under the pointer.
   */
  holdRows(now: number, ms = HOLD_ROWS_MS): void {
    const rows = { running: [], queued: [], recent: [] } as Record<GroupId, string[]>;
    for (const g of GROUPS) rows[g.id] = this.group(g.id, now).map((j) => j.id);
    this.held = { until: now + ms, rows };
  }

  /** When the current hold ends (ms), if one is on. */
  heldUntil(now: number): number | undefined {
    return this.held && now < this.held.until ? this.held.until : undefined;
  }

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

  /** Jobs that ended at or before this ISO time are not shown (Clear Finished); the broker keeps them. */
  clearedBefore = '';

  /**
   * A group's jobs: Running by start time, Queued by queue position, Recent newest end first (at most RECENT_LIMIT);
   * only those matching the filter; while rows are held, the rows as they were.
   */
  group(g: GroupId, now = Date.now()): Job[] {
    if (this.held && now < this.held.until) return this.held.rows[g].map((id) => this.jobs.get(id)).filter((j): j is Job => !!j);
    this.held = undefined;
    const f = this.filter.trim().toLowerCase();
    const jobs = this.all().filter((j) => groupOf(j.state) === g && (!f || matchesFilter(j, f)) && !(isFinal(j.state) && (j.endedAt ?? j.createdAt) <= this.clearedBefore));
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

function matchesFilter(j: Job, f: string): boolean {
  return j.name.toLowerCase().includes(f) || j.id.toLowerCase().includes(f) || j.command.join(' ').toLowerCase().includes(f) || j.state.includes(f);
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

/** The tooltip's attempt line: "2 of at most 4", or with moves "3: moved 1×, restart 1 of at most 2". */
function attemptLine(a: NonNullable<Job['attempt']>): string {
  const moves = a.moves ?? 0;
  if (!moves) return `${a.n} of at most ${a.of}`;
  const restarts = a.n - 1 - moves;
  return `${a.n}: moved ${moves}×, ${restarts ? `restart ${restarts}` : 'no restart'} of at most ${a.of - 1 - moves}`;
}

/** What a job's row in the tree shows. */
export function jobItem(job: Job, now: number): JobItemView {
  const parts: string[] = [];
  if (job.state === 'queued') parts.push(job.queuePosition ? `#${job.queuePosition} in ${job.queue}` : `queued in ${job.queue}`);
  else if (isFinal(job.state)) parts.push(job.state === 'failed' && job.exitCode !== null ? `failed (exit ${job.exitCode})` : job.state.replace('_', ' '));
  else if (job.state === 'starting') parts.push('starting');
  // A job on a later attempt says which, and what ended the one before (the broker's reason carries it).
  const again = attemptWords(job.attempt);
  if (again) parts.push(again);
  if (job.host) parts.push(job.host);
  // A move in progress (migrate, drain, load) says where to; the host it leaves is the one just before.
  if (job.move?.state === 'moving') parts.push(`moving to ${job.move.to}`);
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
    `- submitted: ${whenText(job.createdAt, now)}`,
    ...(job.startedAt ? [`- started: ${whenText(job.startedAt, now)}`] : []),
    ...(job.endedAt ? [`- ended: ${whenText(job.endedAt, now)}`] : []),
    ...(job.exitCode !== null ? [`- exit code: ${job.exitCode}`] : []),
    ...(job.reason ? [`- reason: ${job.reason}`] : []),
    ...(job.attempt ? [`- attempt: ${attemptLine(job.attempt)}`] : []),
    ...(job.move ? [`- move: ${job.move.state === 'moving' ? 'moving' : 'given up'} from ${job.move.from} to ${job.move.to} (${job.move.cause}): ${job.move.detail}`] : []),
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
