import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { Store, StoredJob } from '../../server/core/store.ts';
import { MemoryStore } from '../../server/store/memory.ts';
import { SCHEMA_VERSION, SqliteStore } from '../../server/store/sqlite.ts';

const newJob = (id: string, owner = 'alice'): Omit<StoredJob, 'seq'> => ({
  id,
  owner,
  name: 'train.py',
  command: ['python3', 'train.py', '--lr', "3e-4; rm -rf / 'x'"],
  workspace: '/home/alice/proj',
  resources: { gpus: 2, gpuType: 'A100', cpus: 4, memoryMiB: 16384, timeLimitSec: 3600 },
  queue: 'online',
  env: { A: 'b' },
  state: 'queued',
  reason: 'submitted',
  exitCode: null,
  host: null,
  gpuIndices: [],
  createdAt: '2026-11-22T10:00:00.000Z',
  startedAt: null,
  endedAt: null,
  runtimeRef: null,
  stopIntent: null,
});

function contract(name: string, make: () => { store: Store; done(): void }): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let done: () => void;
    beforeEach(() => ({ store, done } = make()));
    afterEach(() => done());

    it('stores a job exactly and lists newest first', () => {
      const a = store.insertJob(newJob('a'), 't0');
      store.insertJob(newJob('b', 'bob'), 't1');
      assert.deepEqual(store.getJob('a'), a);
      assert.deepEqual(store.getJob('a')!.command, ['python3', 'train.py', '--lr', "3e-4; rm -rf / 'x'"]);
      assert.deepEqual(store.listJobs().map((j) => j.id), ['b', 'a']);
      assert.deepEqual(store.listJobs({ owner: 'bob' }).map((j) => j.id), ['b']);
      assert.deepEqual(store.listJobs({ limit: 1 }).map((j) => j.id), ['b']);
      assert.equal(store.getJob('zzz'), undefined);
    });

    it('keeps workspaceFrom "client", and leaves it absent otherwise', () => {
      store.insertJob({ ...newJob('a'), workspaceFrom: 'client' }, 't0');
      store.insertJob(newJob('b'), 't1');
      assert.equal(store.getJob('a')!.workspaceFrom, 'client');
      assert.equal('workspaceFrom' in store.getJob('b')!, false);
    });

    it('refuses a duplicate id', () => {
      store.insertJob(newJob('a'), 't0');
      assert.throws(() => store.insertJob(newJob('a'), 't1'));
    });

    it('records each state change with its time and reason', () => {
      store.insertJob(newJob('a'), 't0');
      store.updateJob('a', { state: 'starting', reason: 'placed on h1', host: 'h1', gpuIndices: [0, 1] }, 't1');
      store.updateJob('a', { runtimeRef: { pid: 42 } }, 't2');
      const j = store.updateJob('a', { state: 'failed', reason: 'exited with code 3', exitCode: 3, endedAt: 't3' }, 't3')!;
      assert.equal(j.state, 'failed');
      assert.equal(j.exitCode, 3);
      assert.deepEqual(j.gpuIndices, [0, 1]);
      assert.deepEqual(j.runtimeRef, { pid: 42 });
      assert.deepEqual(store.transitions('a'), [
        { at: 't0', from: null, to: 'queued', reason: 'submitted' },
        { at: 't1', from: 'queued', to: 'starting', reason: 'placed on h1' },
        { at: 't3', from: 'starting', to: 'failed', reason: 'exited with code 3' },
      ]);
      assert.equal(store.updateJob('nope', { state: 'failed' }, 't'), undefined);
    });

    it('lists active jobs oldest first, and filters by state', () => {
      store.insertJob(newJob('a'), 't0');
      store.insertJob(newJob('b'), 't0');
      store.insertJob(newJob('c'), 't0');
      store.updateJob('b', { state: 'succeeded' }, 't1');
      store.updateJob('c', { state: 'running' }, 't1');
      assert.deepEqual(store.activeJobs().map((j) => j.id), ['a', 'c']);
      assert.deepEqual(store.listJobs({ states: ['succeeded'] }).map((j) => j.id), ['b']);
    });

    it('pages: jobs before a seq, and active or ended after a time', () => {
      const a = store.insertJob(newJob('a'), 't0');
      const b = store.insertJob(newJob('b'), 't0');
      store.insertJob(newJob('c'), 't0');
      store.updateJob('a', { state: 'succeeded', endedAt: '2026-01-01T00:00:00.000Z' }, 't1');
      store.updateJob('b', { state: 'failed', endedAt: '2026-06-01T00:00:00.000Z' }, 't1');
      assert.deepEqual(store.listJobs({ beforeSeq: b.seq + 1, limit: 1 }).map((j) => j.id), ['b']);
      assert.deepEqual(store.listJobs({ beforeSeq: a.seq }).map((j) => j.id), []);
      assert.deepEqual(store.listJobs({ activeOrEndedAfter: '2026-03-01T00:00:00.000Z' }).map((j) => j.id), ['c', 'b']);
      // The ids alone, for every query, are those of listJobs in its order.
      for (const q of [{}, { beforeSeq: b.seq + 1, limit: 1 }, { beforeSeq: a.seq }, { activeOrEndedAfter: '2026-03-01T00:00:00.000Z' }, { owner: 'alice', limit: 2 }, { owner: 'bob' }]) {
        assert.deepEqual(store.listJobIds(q), store.listJobs(q).map((j) => j.id), JSON.stringify(q));
      }
    });

    it('stores attempts by number, replaces one by its number, and keeps restart settings', () => {
      store.insertJob({ ...newJob('a'), restarts: 3, restartOnExit: [75, 143] }, 't0');
      store.insertJob(newJob('b'), 't0');
      assert.deepEqual(store.getJob('a')!.restarts, 3);
      assert.deepEqual(store.getJob('a')!.restartOnExit, [75, 143]);
      assert.equal('restarts' in store.getJob('b')!, false);
      const first = { n: 1, host: 'gpu1', gpuIndices: [0], runtimeRef: { container: 'c1' }, startedAt: 't1', endedAt: null, state: null, fault: null, reason: null, exitCode: null, logOffset: 0, evidence: {} };
      store.putAttempt('a', first);
      const ended = { ...first, endedAt: 't2', state: 'lost' as const, fault: 'host_lost' as const, reason: 'lost its host', evidence: { hostUnreachableSec: 72, notes: ['container gone after reboot'] } };
      store.putAttempt('a', ended);
      store.putAttempt('a', { ...first, n: 2, host: 'gpu2', logOffset: 812, startedAt: 't3' });
      assert.deepEqual(store.attempts('a'), [ended, { ...first, n: 2, host: 'gpu2', logOffset: 812, startedAt: 't3' }]);
      assert.deepEqual(store.attempts('b'), []);
    });

    it('keeps GPU quarantines by host and GPU: replaced, listed in order, lifted', () => {
      const q = { host: 'gpu2', gpu: 1, xid: 79, detail: 'GPU has fallen off the bus', at: 't1', source: 'xid' as const, bootId: 'b1' };
      store.putQuarantine(q);
      store.putQuarantine({ ...q, host: 'gpu1', gpu: 3, xid: null, detail: '3 uncorrectable ECC errors', source: 'health', bootId: null });
      store.putQuarantine({ ...q, at: 't2' });
      assert.deepEqual(store.quarantines().map((x) => [x.host, x.gpu, x.xid, x.at, x.source, x.bootId]), [['gpu1', 3, null, 't1', 'health', null], ['gpu2', 1, 79, 't2', 'xid', 'b1']]);
      store.deleteQuarantine('gpu2', 1);
      store.deleteQuarantine('gpu2', 7);
      assert.deepEqual(store.quarantines().map((x) => x.host), ['gpu1']);
    });

    it('finds tokens by hash only', () => {
      store.addToken(H1, 'alice', false, 't0');
      store.addToken(H2, 'root', true, 't0', '2030-01-01T00:00:00.000Z');
      assert.deepEqual(store.findToken(H1), { id: H1.slice(0, 12), user: 'alice', admin: false, createdAt: 't0', expiresAt: null, revokedAt: null });
      assert.equal(store.findToken(H2)!.admin, true);
      assert.equal(store.findToken(H2)!.expiresAt, '2030-01-01T00:00:00.000Z');
      assert.equal(store.findToken('alice'), undefined);
    });

    it('lists tokens oldest first and revokes by id, keeping the first revocation time', () => {
      store.addToken(H1, 'alice', false, 't0');
      store.addToken(H2, 'root', true, 't1');
      assert.deepEqual(store.listTokens().map((t) => t.user), ['alice', 'root']);
      assert.equal(store.revokeToken(H1.slice(0, 12), 't2')!.revokedAt, 't2');
      assert.equal(store.revokeToken(H1.slice(0, 12), 't3')!.revokedAt, 't2');
      assert.equal(store.findToken(H1)!.revokedAt, 't2');
      assert.equal(store.findToken(H2)!.revokedAt, null);
      assert.equal(store.revokeToken('000000000000', 't2'), undefined);
    });
  });
}

const H1 = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';
const H2 = 'ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100';

contract('memory', () => ({ store: new MemoryStore(), done: () => {} }));
contract('sqlite', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gpurun-store-'));
  const store = new SqliteStore(join(dir, 'db.sqlite'));
  return { store, done: () => (store.close(), rmSync(dir, { recursive: true, force: true })) };
});

describe('SqliteStore', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'gpurun-store-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps state across reopening, in WAL mode, at the current schema version', () => {
    const path = join(dir, 'db.sqlite');
    const s1 = new SqliteStore(path);
    s1.insertJob(newJob('a'), 't0');
    s1.updateJob('a', { state: 'running' }, 't1');
    s1.close();
    const s2 = new SqliteStore(path);
    assert.equal(s2.getJob('a')!.state, 'running');
    assert.equal(s2.transitions('a').length, 2);
    s2.close();
    const db = new DatabaseSync(path);
    assert.equal((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode, 'wal');
    assert.equal((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version, SCHEMA_VERSION);
    db.close();
  });

  it('opens a database of the schema before token ids: its tokens keep working and get ids', () => {
    const path = join(dir, 'db.sqlite');
    const old = new DatabaseSync(path);
    old.exec(`CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, name TEXT NOT NULL, command TEXT NOT NULL, workspace TEXT NOT NULL, resources TEXT NOT NULL, queue TEXT NOT NULL, image TEXT, env TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL, exit_code INTEGER, host TEXT, gpu_indices TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, ended_at TEXT, runtime_ref TEXT, stop_intent TEXT, backend TEXT, workspace_from TEXT);
      CREATE TABLE transitions (job_id TEXT NOT NULL, at TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, reason TEXT NOT NULL);
      CREATE TABLE tokens (hash TEXT PRIMARY KEY, user TEXT NOT NULL, admin INTEGER NOT NULL, created_at TEXT NOT NULL);
      INSERT INTO tokens VALUES ('${H1}', 'alice', 0, 't0');
      PRAGMA user_version = 3;`);
    old.close();
    const s = new SqliteStore(path);
    assert.deepEqual(s.findToken(H1), { id: H1.slice(0, 12), user: 'alice', admin: false, createdAt: 't0', expiresAt: null, revokedAt: null });
    s.close();
  });

  it('keeps its folder 0700 and its files 0600, also when it creates the folder (gpurun token create before a broker)', () => {
    const path = join(dir, 'new', 'data', 'db.sqlite');
    const s = new SqliteStore(path);
    s.addToken(H1, 'alice', false, 't0');
    s.close();
    assert.equal(statSync(join(dir, 'new', 'data')).mode & 0o777, 0o700);
    for (const f of readdirSync(join(dir, 'new', 'data'))) assert.equal(statSync(join(dir, 'new', 'data', f)).mode & 0o777, 0o600, f);
  });

  it('a full database is E_STORAGE "disk is full", not the "no transaction is active" of a ROLLBACK after a failed COMMIT', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpurun-store-'));
    const store = new SqliteStore(join(dir, 'db.sqlite'));
    // SQLite's own page limit makes it answer SQLITE_FULL exactly as on a full disk.
    const db = (store as unknown as { db: DatabaseSync }).db;
    const pages = (db.prepare('PRAGMA page_count').get() as { page_count: number }).page_count;
    db.exec(`PRAGMA max_page_count = ${pages + 2}`);
    let err: unknown;
    try {
      for (let i = 0; i < 100; i++) store.insertJob({ ...newJob(`j${i}`), env: { BIG: 'x'.repeat(8000) } }, 't0');
    } catch (e) {
      err = e;
    }
    assert.equal((err as { code?: string }).code, 'E_STORAGE', String(err));
    assert.match((err as Error).message, /disk is full/);
    assert.match((err as { hint?: string }).hint!, /Free space/);
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('an attempt that a full database cannot take is E_STORAGE too (the resilient store holds it), never a raw SQLite error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpurun-store-'));
    const store = new SqliteStore(join(dir, 'db.sqlite'));
    store.insertJob(newJob('a'), 't0');
    const db = (store as unknown as { db: DatabaseSync }).db;
    const pages = (db.prepare('PRAGMA page_count').get() as { page_count: number }).page_count;
    db.exec(`PRAGMA max_page_count = ${pages}`);
    // Evidence larger than a page needs new pages, which the full database refuses.
    const attempt = { n: 1, host: 'h', gpuIndices: [], runtimeRef: null, startedAt: null, endedAt: 't1', state: 'failed' as const, fault: null, reason: 'exited with code 1', exitCode: 1, logOffset: 0, evidence: { startError: 'x'.repeat(20_000) } };
    assert.throws(() => store.putAttempt('a', attempt), (e: { code?: string; message?: string }) => e.code === 'E_STORAGE' && /disk is full/.test(e.message ?? ''));
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('opens a database of the schema before attempts: its jobs keep working and gain attempts', () => {
    const path = join(dir, 'db.sqlite');
    const s1 = new SqliteStore(path);
    s1.insertJob(newJob('old'), 't0');
    s1.close();
    // Take it back to version 3 (before attempts), as an older broker left it.
    const db = new DatabaseSync(path);
    db.exec('DROP TABLE attempts; ALTER TABLE jobs DROP COLUMN restarts; ALTER TABLE jobs DROP COLUMN restart_on_exit; DROP INDEX tokens_id; ALTER TABLE tokens DROP COLUMN id; ALTER TABLE tokens DROP COLUMN expires_at; ALTER TABLE tokens DROP COLUMN revoked_at; PRAGMA user_version = 3');
    db.close();
    const s2 = new SqliteStore(path);
    assert.equal(s2.getJob('old')!.state, 'queued');
    assert.deepEqual(s2.attempts('old'), []);
    s2.putAttempt('old', { n: 1, host: 'h', gpuIndices: [], runtimeRef: null, startedAt: null, endedAt: null, state: null, fault: null, reason: null, exitCode: null, logOffset: 0, evidence: {} });
    assert.equal(s2.attempts('old').length, 1);
    s2.close();
  });

  it('refuses a database from a newer gpurun with a clear error', () => {
    const path = join(dir, 'db.sqlite');
    const db = new DatabaseSync(path);
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 5}`);
    db.close();
    assert.throws(() => new SqliteStore(path), /newer than this gpurun knows/);
  });
});
