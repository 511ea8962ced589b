/**
 * A Store that survives a full disk. Job updates that the database cannot take (E_STORAGE: SQLITE_FULL, I/O errors)
 * are kept in memory, in order, laid over every read, and written as soon as a write works again (retried every
 * RETRY_MS). So a job that ends while the disk is full still shows its true state and reason, and the broker never
 * fails because the end of a job could not be stored. A new job (insert) or token that cannot be stored is refused
 * with the E_STORAGE error: nothing is promised that is not written.
 *
 * Every other method of the wrapped store is passed through unchanged.
 */
import { isGpurunError } from '../protocol/errors.ts';
import type { Transition } from '../protocol/jobs.ts';
import type { JobPatch, JobQuery, Store, StoredAttempt, StoredJob } from '../core/store.ts';
import type { Logger } from '../logger.ts';

const RETRY_MS = 2000;

export interface StorageHealth {
  /** What is wrong with the store now (e.g. "the broker's disk is full: …"), or undefined when writes work. */
  storageProblem(): string | undefined;
  /** Updates held in memory, not yet written. */
  pendingWrites(): number;
}

interface Pending {
  id: string;
  patch: JobPatch;
  at: string;
  /** Whether it changed the state (then one of pendingTransitions is its). */
  transition: boolean;
}

export function resilientStore<S extends Store>(inner: S, log: Logger): S & StorageHealth {
  const pending: Pending[] = [];
  const pendingTransitions = new Map<string, Transition[]>();
  /** Attempts (by job, then number) that could not be written; written again with the next flush. */
  const pendingAttempts = new Map<string, Map<number, StoredAttempt>>();
  let problem: string | undefined;
  let timer: NodeJS.Timeout | undefined;

  const isStorage = (e: unknown) => isGpurunError(e) && e.code === 'E_STORAGE';
  const overlay = (job: StoredJob | undefined): StoredJob | undefined => {
    if (!job) return job;
    let out = job;
    for (const p of pending) if (p.id === job.id) out = { ...out, ...definedOnly(p.patch) };
    return out;
  };
  const failed = (e: unknown) => {
    const msg = (e as Error).message;
    if (problem !== msg) log.error('the store cannot write; holding job updates in memory', { err: e, pending: pending.length });
    problem = msg;
    timer ??= setInterval(flush, RETRY_MS);
    timer.unref();
  };
  function flush(): void {
    for (const [jobId, byN] of pendingAttempts) {
      for (const [n, a] of byN) {
        try {
          inner.putAttempt(jobId, a);
        } catch (e) {
          if (isStorage(e)) return failed(e);
          log.error('dropping an attempt the store refused', { job: jobId, err: e });
        }
        byN.delete(n);
      }
      pendingAttempts.delete(jobId);
    }
    while (pending.length) {
      const p = pending[0];
      try {
        inner.updateJob(p.id, p.patch, p.at);
      } catch (e) {
        if (isStorage(e)) return failed(e);
        log.error('dropping a job update the store refused', { job: p.id, err: e });
      }
      pending.shift();
      const t = pendingTransitions.get(p.id);
      if (t && p.transition) t.shift();
      if (t && t.length === 0) pendingTransitions.delete(p.id);
    }
    if (problem) log.info('the store writes again; held job updates are written');
    problem = undefined;
    clearInterval(timer);
    timer = undefined;
  }

  const wrapped: Partial<Store> & StorageHealth = {
    storageProblem: () => problem,
    pendingWrites: () => pending.length,
    insertJob(job, at) {
      // Held updates go first (there may be room again): the store never has a new job before an older job's end.
      if (pending.length || pendingAttempts.size) flush();
      try {
        const r = inner.insertJob(job, at);
        if (problem && !pending.length) problem = undefined;
        return r;
      } catch (e) {
        if (isStorage(e)) failed(e);
        throw e;
      }
    },
    getJob: (id) => overlay(inner.getJob(id)),
    listJobs: (q?: JobQuery) => inner.listJobs(q).map((j) => overlay(j)!),
    activeJobs: () => inner.activeJobs().map((j) => overlay(j)!).filter((j) => j.state === 'queued' || j.state === 'starting' || j.state === 'running'),
    updateJob(id, patch, at) {
      // The job is read here only when the update must be held: a write that works reads it once, in the inner store.
      const queue = () => {
        const before = overlay(inner.getJob(id));
        if (!before) return undefined;
        const transition = !!patch.state && patch.state !== before.state;
        pending.push({ id, patch, at, transition });
        if (transition) {
          const after = { ...before, ...definedOnly(patch) };
          const list = pendingTransitions.get(id) ?? [];
          list.push({ at, from: before.state, to: patch.state!, reason: after.reason });
          pendingTransitions.set(id, list);
        }
        return { ...before, ...definedOnly(patch) } as StoredJob;
      };
      if (pending.length || pendingAttempts.size) {
        flush();
        if (pending.length) return queue();
      }
      try {
        return inner.updateJob(id, patch, at);
      } catch (e) {
        if (!isStorage(e)) throw e;
        failed(e);
        return queue();
      }
    },
    transitions: (id) => [...inner.transitions(id), ...(pendingTransitions.get(id) ?? [])],
    putAttempt(jobId, a) {
      const held = pendingAttempts.get(jobId);
      if (!held) {
        try {
          return inner.putAttempt(jobId, a);
        } catch (e) {
          if (!isStorage(e)) throw e;
          failed(e);
        }
      }
      const byN = held ?? new Map<number, StoredAttempt>();
      byN.set(a.n, a);
      pendingAttempts.set(jobId, byN);
    },
    attempts(jobId) {
      const held = pendingAttempts.get(jobId);
      const stored = inner.attempts(jobId);
      if (!held) return stored;
      const byN = new Map(stored.map((a) => [a.n, a]));
      for (const [n, a] of held) byN.set(n, a);
      return [...byN.values()].sort((x, y) => x.n - y.n);
    },
    close() {
      if (pending.length || pendingAttempts.size) flush();
      clearInterval(timer);
      if (pending.length) log.error('the broker stops with job updates it could not write; a restarted broker finds those jobs again', { pending: pending.length });
      inner.close();
    },
  };
  return new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop in wrapped) return (wrapped as unknown as Record<PropertyKey, unknown>)[prop];
      const v = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  }) as S & StorageHealth;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
