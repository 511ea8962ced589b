/** In-memory Store for unit tests of code that needs one. Same contract as SqliteStore (test/unit/store.test.ts). */
import type { Transition } from '../protocol/jobs.ts';
import { tokenIdOf, type JobPatch, type JobQuery, type Store, type StoredAttempt, type StoredJob, type StoredQuarantine, type TokenRecord } from '../core/store.ts';

export class MemoryStore implements Store {
  private readonly jobs = new Map<string, StoredJob>();
  private readonly trans = new Map<string, Transition[]>();
  private readonly tokens = new Map<string, TokenRecord>();
  private readonly quars = new Map<string, StoredQuarantine>();
  private readonly atts = new Map<string, StoredAttempt[]>();
  private seq = 0;

  insertJob(job: Omit<StoredJob, 'seq'>, at: string): StoredJob {
    if (this.jobs.has(job.id)) throw new Error(`job ${job.id} exists`);
    const stored = structuredClone({ ...job, seq: ++this.seq });
    this.jobs.set(job.id, stored);
    this.trans.set(job.id, [{ at, from: null, to: job.state, reason: job.reason }]);
    return structuredClone(stored);
  }

  getJob(id: string): StoredJob | undefined {
    const j = this.jobs.get(id);
    return j && structuredClone(j);
  }

  listJobs(q: JobQuery = {}): StoredJob[] {
    return this.matching(q).map((j) => structuredClone(j));
  }

  listJobIds(q: JobQuery = {}): string[] {
    return this.matching(q).map((j) => j.id);
  }

  private matching(q: JobQuery): StoredJob[] {
    let all = [...this.jobs.values()].sort((a, b) => b.seq - a.seq);
    if (q.owner !== undefined) all = all.filter((j) => j.owner === q.owner);
    if (q.states?.length) all = all.filter((j) => q.states!.includes(j.state));
    if (q.beforeSeq !== undefined) all = all.filter((j) => j.seq < q.beforeSeq!);
    if (q.activeOrEndedAfter !== undefined) all = all.filter((j) => ['queued', 'starting', 'running'].includes(j.state) || (j.endedAt ?? '') >= q.activeOrEndedAfter!);
    if (q.limit !== undefined) all = all.slice(0, q.limit);
    return all;
  }

  activeJobs(): StoredJob[] {
    return this.listJobs({ states: ['queued', 'starting', 'running'] }).reverse();
  }

  updateJob(id: string, patch: JobPatch, at: string): StoredJob | undefined {
    const before = this.jobs.get(id);
    if (!before) return undefined;
    const defined = Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
    const after = structuredClone({ ...before, ...defined }) as StoredJob;
    this.jobs.set(id, after);
    if (patch.state && patch.state !== before.state) this.trans.get(id)!.push({ at, from: before.state, to: patch.state, reason: after.reason });
    return structuredClone(after);
  }

  transitions(id: string): Transition[] {
    return structuredClone(this.trans.get(id) ?? []);
  }

  putAttempt(jobId: string, a: StoredAttempt): void {
    const list = (this.atts.get(jobId) ?? []).filter((x) => x.n !== a.n);
    list.push(structuredClone(a));
    list.sort((x, y) => x.n - y.n);
    this.atts.set(jobId, list);
  }

  attempts(jobId: string): StoredAttempt[] {
    return structuredClone(this.atts.get(jobId) ?? []);
  }

  addToken(hash: string, user: string, admin: boolean, at: string, expiresAt: string | null = null): TokenRecord {
    if (this.tokens.has(hash)) throw new Error('token exists');
    const rec: TokenRecord = { id: tokenIdOf(hash), user, admin, createdAt: at, expiresAt, revokedAt: null };
    this.tokens.set(hash, rec);
    return { ...rec };
  }

  findToken(hash: string): TokenRecord | undefined {
    const r = this.tokens.get(hash);
    return r && { ...r };
  }

  listTokens(): TokenRecord[] {
    return [...this.tokens.values()].map((r) => ({ ...r }));
  }

  revokeToken(id: string, at: string): TokenRecord | undefined {
    const r = [...this.tokens.values()].find((t) => t.id === id);
    if (!r) return undefined;
    r.revokedAt ??= at;
    return { ...r };
  }

  putQuarantine(q: StoredQuarantine): void {
    this.quars.set(`${q.host}\0${q.gpu}`, { ...q });
  }

  deleteQuarantine(host: string, gpu: number): void {
    this.quars.delete(`${host}\0${gpu}`);
  }

  quarantines(): StoredQuarantine[] {
    return [...this.quars.values()].map((q) => ({ ...q })).sort((a, b) => (a.host === b.host ? a.gpu - b.gpu : a.host < b.host ? -1 : 1));
  }

  close(): void {}
}
