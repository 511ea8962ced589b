/**
 * SQLite store on node:sqlite (built into Node ≥ 22.5: nothing native ships). WAL journal, so readers (the CLI's
 * `token create`) and the broker do not block each other. The schema carries a version; MIGRATIONS run in order on
 * open, each in a transaction.
 */
import { DatabaseSync } from 'node:sqlite';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import type { JobState, Transition } from '../protocol/jobs.ts';
import { GpurunError } from '../protocol/errors.ts';
import { tokenIdOf, type JobPatch, type JobQuery, type Store, type StoredAttempt, type StoredJob, type StoredQuarantine, type TokenRecord } from '../core/store.ts';

/** MIGRATIONS[i] takes the schema from version i to i + 1. Append only. */
const MIGRATIONS: string[] = [
  `CREATE TABLE jobs (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     id TEXT NOT NULL UNIQUE,
     owner TEXT NOT NULL,
     name TEXT NOT NULL,
     command TEXT NOT NULL,
     workspace TEXT NOT NULL,
     resources TEXT NOT NULL,
     queue TEXT NOT NULL,
     image TEXT,
     env TEXT NOT NULL,
     state TEXT NOT NULL,
     reason TEXT NOT NULL,
     exit_code INTEGER,
     host TEXT,
     gpu_indices TEXT NOT NULL,
     created_at TEXT NOT NULL,
     started_at TEXT,
     ended_at TEXT,
     runtime_ref TEXT,
     stop_intent TEXT
   );
   CREATE INDEX jobs_owner ON jobs(owner, seq);
   CREATE INDEX jobs_state ON jobs(state);
   CREATE TABLE transitions (
     job_id TEXT NOT NULL,
     at TEXT NOT NULL,
     from_state TEXT,
     to_state TEXT NOT NULL,
     reason TEXT NOT NULL
   );
   CREATE INDEX transitions_job ON transitions(job_id);
   CREATE TABLE tokens (
     hash TEXT PRIMARY KEY,
     user TEXT NOT NULL,
     admin INTEGER NOT NULL,
     created_at TEXT NOT NULL
   );`,
  // Where the job runs: "hosts" or a cluster's name.
  `ALTER TABLE jobs ADD COLUMN backend TEXT;`,
  // Client-served workspace: 'client', or NULL (the broker serves it).
  `ALTER TABLE jobs ADD COLUMN workspace_from TEXT;`,
  // Attempts: a job runs 1..N times; restarts allowed and exit codes that ask for one.
  `ALTER TABLE jobs ADD COLUMN restarts INTEGER;
   ALTER TABLE jobs ADD COLUMN restart_on_exit TEXT;
   CREATE TABLE attempts (
     job_id TEXT NOT NULL,
     n INTEGER NOT NULL,
     host TEXT,
     gpu_indices TEXT NOT NULL,
     runtime_ref TEXT,
     started_at TEXT,
     ended_at TEXT,
     state TEXT,
     fault TEXT,
     reason TEXT,
     exit_code INTEGER,
     log_offset INTEGER NOT NULL,
     evidence TEXT NOT NULL,
     PRIMARY KEY (job_id, n)
   );`,
  // Tokens get a public id (listing, revoking), an expiry and a revocation time; existing tokens keep working.
  `ALTER TABLE tokens ADD COLUMN id TEXT;
   ALTER TABLE tokens ADD COLUMN expires_at TEXT;
   ALTER TABLE tokens ADD COLUMN revoked_at TEXT;
   UPDATE tokens SET id = substr(hash, 1, 12);
   CREATE UNIQUE INDEX tokens_id ON tokens(id);`,
  // Job lists (newest first, by owner, active or recently ended) answered from an index alone: listJobIds never
  // reads a job's row, whose env may be megabytes.
  `CREATE INDEX IF NOT EXISTS jobs_list ON jobs(seq, state, ended_at, id);
   CREATE INDEX IF NOT EXISTS jobs_owner_list ON jobs(owner, seq, state, ended_at, id);
   DROP INDEX IF EXISTS jobs_owner;`,
  // GPUs held back after a fault, kept across broker restarts (hosts/health.ts).
  `CREATE TABLE IF NOT EXISTS gpu_quarantines (
     host TEXT NOT NULL,
     gpu INTEGER NOT NULL,
     xid INTEGER,
     detail TEXT NOT NULL,
     at TEXT NOT NULL,
     source TEXT NOT NULL,
     boot_id TEXT,
     PRIMARY KEY (host, gpu)
   );`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

type Row = Record<string, string | number | null>;

export class SqliteStore implements Store {
  private readonly db: DatabaseSync;
  private readonly stmt: Record<string, ReturnType<DatabaseSync['prepare']>>;

  readonly path: string;

  constructor(path: string) {
    this.path = path;
    if (path !== ':memory:') privateFile(path);
    this.db = new DatabaseSync(path);
    this.db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;');
    this.migrate();
    this.stmt = {
      insert: this.db.prepare(`INSERT INTO jobs (id, owner, name, command, workspace, resources, queue, image, env, state, reason,
        exit_code, host, gpu_indices, created_at, started_at, ended_at, runtime_ref, stop_intent, backend, workspace_from, restarts, restart_on_exit)
        VALUES (:id, :owner, :name, :command, :workspace, :resources, :queue, :image, :env, :state, :reason,
        :exit_code, :host, :gpu_indices, :created_at, :started_at, :ended_at, :runtime_ref, :stop_intent, :backend, :workspace_from, :restarts, :restart_on_exit)`),
      putAttempt: this.db.prepare(`INSERT OR REPLACE INTO attempts (job_id, n, host, gpu_indices, runtime_ref, started_at, ended_at, state, fault, reason, exit_code, log_offset, evidence)
        VALUES (:job_id, :n, :host, :gpu_indices, :runtime_ref, :started_at, :ended_at, :state, :fault, :reason, :exit_code, :log_offset, :evidence)`),
      attempts: this.db.prepare('SELECT * FROM attempts WHERE job_id = ? ORDER BY n'),
      get: this.db.prepare('SELECT * FROM jobs WHERE id = ?'),
      active: this.db.prepare("SELECT * FROM jobs WHERE state IN ('queued', 'starting', 'running') ORDER BY seq"),
      transition: this.db.prepare('INSERT INTO transitions (job_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)'),
      transitions: this.db.prepare('SELECT * FROM transitions WHERE job_id = ? ORDER BY rowid'),
      addToken: this.db.prepare('INSERT INTO tokens (hash, id, user, admin, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)'),
      findToken: this.db.prepare('SELECT * FROM tokens WHERE hash = ?'),
      listTokens: this.db.prepare('SELECT * FROM tokens ORDER BY created_at, rowid'),
      revokeToken: this.db.prepare('UPDATE tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?'),
      tokenById: this.db.prepare('SELECT * FROM tokens WHERE id = ?'),
      putQuarantine: this.db.prepare('INSERT OR REPLACE INTO gpu_quarantines (host, gpu, xid, detail, at, source, boot_id) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      deleteQuarantine: this.db.prepare('DELETE FROM gpu_quarantines WHERE host = ? AND gpu = ?'),
      quarantines: this.db.prepare('SELECT * FROM gpu_quarantines ORDER BY host, gpu'),
    };
  }

  private migrate(): void {
    const version = (this.db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
    if (version > MIGRATIONS.length) {
      throw new GpurunError('E_CONFIG', `the database ${this.path} has schema version ${version}, newer than this gpurun knows (${MIGRATIONS.length})`, {
        hint: 'Upgrade gpurun, or point the broker at another data directory.',
      });
    }
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.tx(() => {
        this.db.exec(MIGRATIONS[v]);
        this.db.exec(`PRAGMA user_version = ${v + 1}`);
      });
    }
  }

  /**
   * Runs `fn` in one transaction. A failed COMMIT (e.g. SQLITE_FULL) may already have rolled back, and a ROLLBACK
   * then throws "no transaction is active", which would hide the real error: roll back only what is still open.
   */
  private tx<T>(fn: () => T): T {
    try {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const r = fn();
        this.db.exec('COMMIT');
        return r;
      } catch (e) {
        if (this.db.isTransaction) this.db.exec('ROLLBACK');
        throw e;
      }
    } catch (e) {
      throw storageError(e, this.path);
    }
  }

  insertJob(job: Omit<StoredJob, 'seq'>, at: string): StoredJob {
    return this.tx(() => {
      const r = this.stmt.insert.run(toRow(job));
      this.stmt.transition.run(job.id, at, null, job.state, job.reason);
      return { ...job, seq: Number(r.lastInsertRowid) };
    });
  }

  getJob(id: string): StoredJob | undefined {
    const row = this.stmt.get.get(id) as Row | undefined;
    return row && fromRow(row);
  }

  listJobs(q: JobQuery = {}): StoredJob[] {
    const { sql, args } = listQuery('*', q);
    return (this.db.prepare(sql).all(...args) as Row[]).map(fromRow);
  }

  listJobIds(q: JobQuery = {}): string[] {
    const { sql, args } = listQuery('id', q);
    return (this.db.prepare(sql).all(...args) as Array<{ id: string }>).map((r) => r.id);
  }

  activeJobs(): StoredJob[] {
    return (this.stmt.active.all() as Row[]).map(fromRow);
  }

  updateJob(id: string, patch: JobPatch, at: string): StoredJob | undefined {
    return this.tx(() => {
      const before = this.getJob(id);
      if (!before) return undefined;
      const after: StoredJob = { ...before, ...definedOnly(patch) };
      const row = toRow(after);
      const cols = Object.keys(row).filter((c) => c !== 'id');
      this.db.prepare(`UPDATE jobs SET ${cols.map((c) => `${c} = :${c}`).join(', ')} WHERE id = :id`).run(row);
      if (patch.state && patch.state !== before.state) {
        this.stmt.transition.run(id, at, before.state, patch.state, after.reason);
      }
      return after;
    });
  }

  transitions(id: string): Transition[] {
    return (this.stmt.transitions.all(id) as Row[]).map((r) => ({
      at: r.at as string,
      from: (r.from_state as JobState | null) ?? null,
      to: r.to_state as JobState,
      reason: r.reason as string,
    }));
  }

  putAttempt(jobId: string, a: StoredAttempt): void {
    // Every write goes through tx(), so a full disk is E_STORAGE here too (the resilient store holds what it cannot write).
    this.tx(() => this.stmt.putAttempt.run({
      job_id: jobId,
      n: a.n,
      host: a.host,
      gpu_indices: JSON.stringify(a.gpuIndices),
      runtime_ref: a.runtimeRef ? JSON.stringify(a.runtimeRef) : null,
      started_at: a.startedAt,
      ended_at: a.endedAt,
      state: a.state,
      fault: a.fault,
      reason: a.reason,
      exit_code: a.exitCode,
      log_offset: a.logOffset,
      evidence: JSON.stringify(a.evidence),
    }));
  }

  attempts(jobId: string): StoredAttempt[] {
    return (this.stmt.attempts.all(jobId) as Row[]).map((r) => ({
      n: r.n as number,
      host: r.host as string | null,
      gpuIndices: JSON.parse(r.gpu_indices as string),
      runtimeRef: r.runtime_ref === null ? null : JSON.parse(r.runtime_ref as string),
      startedAt: r.started_at as string | null,
      endedAt: r.ended_at as string | null,
      state: r.state as StoredAttempt['state'],
      fault: r.fault as StoredAttempt['fault'],
      reason: r.reason as string | null,
      exitCode: r.exit_code as number | null,
      logOffset: r.log_offset as number,
      evidence: JSON.parse(r.evidence as string),
    }));
  }

  addToken(hash: string, user: string, admin: boolean, at: string, expiresAt: string | null = null): TokenRecord {
    this.tx(() => this.stmt.addToken.run(hash, tokenIdOf(hash), user, admin ? 1 : 0, at, expiresAt));
    return this.findToken(hash)!;
  }

  findToken(hash: string): TokenRecord | undefined {
    const r = this.stmt.findToken.get(hash) as Row | undefined;
    return r && tokenFromRow(r);
  }

  listTokens(): TokenRecord[] {
    return (this.stmt.listTokens.all() as Row[]).map(tokenFromRow);
  }

  revokeToken(id: string, at: string): TokenRecord | undefined {
    this.tx(() => this.stmt.revokeToken.run(at, id));
    const r = this.stmt.tokenById.get(id) as Row | undefined;
    return r && tokenFromRow(r);
  }

  putQuarantine(q: StoredQuarantine): void {
    this.tx(() => this.stmt.putQuarantine.run(q.host, q.gpu, q.xid, q.detail, q.at, q.source, q.bootId));
  }

  deleteQuarantine(host: string, gpu: number): void {
    this.tx(() => this.stmt.deleteQuarantine.run(host, gpu));
  }

  quarantines(): StoredQuarantine[] {
    return (this.stmt.quarantines.all() as Row[]).map((r) => ({
      host: String(r.host),
      gpu: Number(r.gpu),
      xid: r.xid === null ? null : Number(r.xid),
      detail: String(r.detail),
      at: String(r.at),
      source: r.source === 'health' ? 'health' : 'xid',
      bootId: r.boot_id === null ? null : String(r.boot_id),
    }));
  }

  close(): void {
    if (this.db.isOpen) this.db.close();
  }
}

/**
 * The database holds token hashes and every job's env: its folder is 0700 and the file 0600, whoever creates it
 * first (the broker, or `gpurun token create` before the first start). SQLite gives its -wal and -shm files the
 * database file's mode. Existing files made by older versions are tightened too.
 */
function privateFile(path: string): void {
  const dir = dirname(path);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  closeSync(openSync(path, 'a', 0o600));
  for (const f of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
}

function tokenFromRow(r: Row): TokenRecord {
  return { id: r.id as string, user: r.user as string, admin: r.admin === 1, createdAt: r.created_at as string, expiresAt: (r.expires_at as string | null) ?? null, revokedAt: (r.revoked_at as string | null) ?? null };
}

/**
 * A SQLite failure as the one error type: E_STORAGE (503) with what to do. Other errors (ours) pass through.
 */
export function storageError(e: unknown, path: string): unknown {
  if (e instanceof GpurunError) return e;
  const err = e as { message?: string; errcode?: number; code?: string };
  if (err?.code !== 'ERR_SQLITE_ERROR' && err?.errcode === undefined) return e;
  // SQLITE_FULL (13) and SQLITE_IOERR (10, with extended codes) are the disk; the rest is named as SQLite says.
  const full = err.errcode === 13 || /disk is full|no space/i.test(err.message ?? '');
  return new GpurunError('E_STORAGE', full ? `the broker's disk is full: it could not write its database ${path}` : `the broker could not use its database ${path}: ${err.message}`, {
    cause: e,
    hint: full ? "Free space on the broker's data disk (dataDir). The broker keeps running; what it could not write it keeps in memory and writes when there is room." : 'See the broker log; check the data directory and its disk.',
  });
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The SELECT of listJobs and listJobIds: newest first, filtered as `q` says. */
function listQuery(columns: string, q: JobQuery): { sql: string; args: Array<string | number> } {
  const where: string[] = [];
  const args: Array<string | number> = [];
  if (q.owner !== undefined) {
    where.push('owner = ?');
    args.push(q.owner);
  }
  if (q.states?.length) {
    where.push(`state IN (${q.states.map(() => '?').join(', ')})`);
    args.push(...q.states);
  }
  if (q.beforeSeq !== undefined) {
    where.push('seq < ?');
    args.push(q.beforeSeq);
  }
  if (q.activeOrEndedAfter !== undefined) {
    where.push("(state IN ('queued', 'starting', 'running') OR ended_at >= ?)");
    args.push(q.activeOrEndedAfter);
  }
  let sql = `SELECT ${columns} FROM jobs${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC`;
  if (q.limit !== undefined) {
    sql += ' LIMIT ?';
    args.push(q.limit);
  }
  return { sql, args };
}

function toRow(j: Omit<StoredJob, 'seq'>): Record<string, string | number | null> {
  return {
    id: j.id,
    owner: j.owner,
    name: j.name,
    command: JSON.stringify(j.command),
    workspace: j.workspace,
    resources: JSON.stringify(j.resources),
    queue: j.queue,
    image: j.image ?? null,
    env: JSON.stringify(j.env),
    state: j.state,
    reason: j.reason,
    exit_code: j.exitCode,
    host: j.host,
    gpu_indices: JSON.stringify(j.gpuIndices),
    created_at: j.createdAt,
    started_at: j.startedAt,
    ended_at: j.endedAt,
    runtime_ref: j.runtimeRef ? JSON.stringify(j.runtimeRef) : null,
    stop_intent: j.stopIntent,
    backend: j.backend ?? null,
    workspace_from: j.workspaceFrom ?? null,
    restarts: j.restarts ?? null,
    restart_on_exit: j.restartOnExit?.length ? JSON.stringify(j.restartOnExit) : null,
  };
}

function fromRow(r: Row): StoredJob {
  return {
    seq: r.seq as number,
    id: r.id as string,
    owner: r.owner as string,
    name: r.name as string,
    command: JSON.parse(r.command as string),
    workspace: r.workspace as string,
    resources: JSON.parse(r.resources as string),
    queue: r.queue as StoredJob['queue'],
    ...(r.image === null ? {} : { image: r.image as string }),
    env: JSON.parse(r.env as string),
    state: r.state as JobState,
    reason: r.reason as string,
    exitCode: r.exit_code as number | null,
    host: r.host as string | null,
    gpuIndices: JSON.parse(r.gpu_indices as string),
    createdAt: r.created_at as string,
    startedAt: r.started_at as string | null,
    endedAt: r.ended_at as string | null,
    runtimeRef: r.runtime_ref === null ? null : JSON.parse(r.runtime_ref as string),
    stopIntent: r.stop_intent as StoredJob['stopIntent'],
    ...(r.backend === null || r.backend === undefined ? {} : { backend: r.backend as string }),
    ...(r.workspace_from === 'client' ? { workspaceFrom: 'client' as const } : {}),
    ...(typeof r.restarts === 'number' ? { restarts: r.restarts } : {}),
    ...(typeof r.restart_on_exit === 'string' ? { restartOnExit: JSON.parse(r.restart_on_exit) } : {}),
  };
}
