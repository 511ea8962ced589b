/**
 * A fair order between users within a queue. Pure.
 *
 * Round-robin by user: each user's first queued job comes before anyone's second, each second before anyone's
 * third, and so on. Within a round, users who hold fewer running jobs come first, then the user served least
 * recently (whose last job started longest ago, or never), then the user whose oldest queued job is older. Within one
 * user, submission order. So 5,000 queued jobs of alice put bob's single job next or one place back, not behind all
 * of them, and it is not passed over again each time one of alice's jobs ends (she was served last).
 *
 * The key of a job is (queue, round, running jobs of its user, when its user was last served, the user's oldest
 * queued seq, seq); the scheduler
 * walks jobs in this order and queue positions are counted in it, so what users are shown is what happens.
 */
import type { Queue } from '../protocol/jobs.ts';

export interface FairJob {
  id: string;
  owner: string;
  queue: Queue;
  /** Submission order. */
  seq: number;
}

/**
 * What the order needs to know of users besides their queued jobs: running (or starting) jobs per user, and when each
 * user was last served (a number that grows with every job start, e.g. a counter; absent = never).
 */
export interface UserShares {
  running: ReadonlyMap<string, number>;
  served?: ReadonlyMap<string, number>;
}

interface UserState {
  running: number;
  served: number;
  first: number;
}

function users(queued: FairJob[], s: UserShares): Map<string, UserState> {
  const u = new Map<string, UserState>();
  for (const j of queued) {
    const key = `${j.queue}\0${j.owner}`;
    const st = u.get(key);
    if (!st) u.set(key, { running: s.running.get(j.owner) ?? 0, served: s.served?.get(j.owner) ?? 0, first: j.seq });
    else if (j.seq < st.first) st.first = j.seq;
  }
  return u;
}

/** Whether user a goes before user b within a round. */
function before(a: UserState, b: UserState): boolean {
  if (a.running !== b.running) return a.running < b.running;
  if (a.served !== b.served) return a.served < b.served;
  return a.first < b.first;
}

const QUEUE_RANK: Record<Queue, number> = { online: 0, offline: 1 };

/** `queued` in the fair order (any input order). */
export function fairOrder<J extends FairJob>(queued: J[], shares: UserShares): J[] {
  const u = users(queued, shares);
  const bySeq = [...queued].sort((a, b) => a.seq - b.seq);
  const round = new Map<string, number>();
  const counts = new Map<string, number>();
  for (const j of bySeq) {
    const key = `${j.queue}\0${j.owner}`;
    const r = counts.get(key) ?? 0;
    counts.set(key, r + 1);
    round.set(j.id, r);
  }
  const k = (j: J) => {
    const s = u.get(`${j.queue}\0${j.owner}`)!;
    return [QUEUE_RANK[j.queue], round.get(j.id)!, s.running, s.served, s.first, j.seq];
  };
  return bySeq
    .map((j) => ({ j, key: k(j) }))
    .sort((a, b) => {
      for (let i = 0; i < a.key.length; i++) if (a.key[i] !== b.key[i]) return a.key[i] - b.key[i];
      return 0;
    })
    .map((x) => x.j);
}

/** 1-based position of every job within its queue, in the fair order. */
export function fairPositions(queued: FairJob[], shares: UserShares): Map<string, number> {
  const pos = new Map<string, number>();
  const n: Record<Queue, number> = { online: 0, offline: 0 };
  for (const j of fairOrder(queued, shares)) pos.set(j.id, ++n[j.queue]);
  return pos;
}

/**
 * The position of one job in O(n) without sorting (a submit answers with it): the jobs of earlier rounds, plus the
 * users ahead of its user within its round.
 */
export function fairPosition(job: FairJob, queued: FairJob[], shares: UserShares): number {
  const same = queued.filter((j) => j.queue === job.queue);
  const u = users(same, shares);
  const count = new Map<string, number>();
  let round = 0;
  for (const j of same) {
    count.set(j.owner, (count.get(j.owner) ?? 0) + 1);
    if (j.owner === job.owner && j.seq < job.seq) round++;
  }
  const me = u.get(`${job.queue}\0${job.owner}`) ?? { running: shares.running.get(job.owner) ?? 0, served: shares.served?.get(job.owner) ?? 0, first: job.seq };
  let ahead = round; // my own earlier jobs
  for (const [owner, n] of count) {
    if (owner === job.owner) continue;
    ahead += Math.min(n, round);
    const s = u.get(`${job.queue}\0${owner}`)!;
    if (n > round && before(s, me)) ahead++;
  }
  return ahead + 1;
}
