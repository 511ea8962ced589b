/** `gpurun ls` filters over a job list: state, age and name. Pure. */
import { JOB_STATES, type Job, type JobState } from '../protocol/jobs.ts';
import { parseDuration } from '../core/units.ts';
import { usage } from './args.ts';
export { lastLines } from '../protocol/text.ts';

export interface JobFilter {
  states?: Set<JobState>;
  /** Jobs created at or after this time (ms since the epoch). */
  sinceMs?: number;
  /** Case-insensitive part of the job's name. */
  name?: string;
}

/** Builds the filter from `--state a,b`, `--since 7d`, `--name text`; throws a usage error for bad input. */
export function jobFilter(opts: { state?: string; since?: string; name?: string }, now = Date.now()): JobFilter {
  const f: JobFilter = {};
  if (opts.state !== undefined) {
    const words = opts.state.split(',').map((w) => w.trim().toLowerCase().replace('-', '_')).filter(Boolean);
    const states = new Set<JobState>();
    for (const w of words) {
      if (w === 'active') ['queued', 'starting', 'running'].forEach((s) => states.add(s as JobState));
      else if (w === 'ended' || w === 'finished') ['succeeded', 'failed', 'cancelled', 'timed_out', 'lost'].forEach((s) => states.add(s as JobState));
      else if ((JOB_STATES as readonly string[]).includes(w)) states.add(w as JobState);
      else throw usage('ls', `--state: "${w}" is not a job state; use ${JOB_STATES.join(', ')}, active or ended (comma-separated)`);
    }
    if (!states.size) throw usage('ls', '--state needs at least one state');
    f.states = states;
  }
  if (opts.since !== undefined) {
    const sec = parseDuration(opts.since);
    if (typeof sec === 'string' || sec <= 0) throw usage('ls', `--since: ${typeof sec === 'string' ? sec : 'must be more than 0'}`);
    f.sinceMs = now - sec * 1000;
  }
  if (opts.name !== undefined) f.name = opts.name.toLowerCase();
  return f;
}

export function filterJobs(jobs: Job[], f: JobFilter): Job[] {
  return jobs.filter((j) => (!f.states || f.states.has(j.state)) && (f.sinceMs === undefined || Date.parse(j.createdAt) >= f.sinceMs) && (!f.name || j.name.toLowerCase().includes(f.name)));
}
