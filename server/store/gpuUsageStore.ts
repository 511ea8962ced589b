/**
 * GPU usage history kept across broker restarts: each GPU's last samples and since when it reads 0 %
 * (core/gpuUsage.ts), one row per host and GPU, written at each probe. Its own SQLite file next to the job store
 * (gpu-usage.db), not a table of gpurun.db: samples are rewritten every 30 s and may be lost without harm, and the
 * job store's schema versions stay about jobs and tokens.
 */
import { chmodSync, closeSync, openSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import type { GpuUsageHistory, UsageRow } from '../core/gpuUsage.ts';

export class GpuUsageStore {
  private readonly db: DatabaseSync;
  private readonly put: ReturnType<DatabaseSync['prepare']>;

  constructor(path: string) {
    closeSync(openSync(path, 'a', 0o600));
    chmodSync(path, 0o600);
    this.db = new DatabaseSync(path);
    this.db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA busy_timeout = 2000;
      CREATE TABLE IF NOT EXISTS gpu_usage (host TEXT NOT NULL, gpu INTEGER NOT NULL, samples TEXT NOT NULL, zero_since INTEGER, at INTEGER NOT NULL, PRIMARY KEY (host, gpu));`);
    this.put = this.db.prepare('INSERT OR REPLACE INTO gpu_usage (host, gpu, samples, zero_since, at) VALUES (?, ?, ?, ?, ?)');
  }

  rows(): UsageRow[] {
    return (this.db.prepare('SELECT * FROM gpu_usage').all() as Array<{ host: string; gpu: number; samples: string; zero_since: number | null; at: number }>).map((r) => ({
      host: r.host, gpu: r.gpu, pct: JSON.parse(r.samples) as number[], ...(r.zero_since === null ? {} : { zeroSince: r.zero_since }), at: r.at,
    }));
  }

  save(rows: readonly UsageRow[]): void {
    this.db.exec('BEGIN');
    try {
      for (const r of rows) this.put.run(r.host, r.gpu, JSON.stringify(r.pct), r.zeroSince ?? null, r.at);
      this.db.exec('COMMIT');
    } catch (e) {
      this.db.exec('ROLLBACK');
      throw e;
    }
  }

  close(): void {
    this.db.close();
  }
}

/**
 * Restores `history` from the file at `path` and keeps writing it there. A file that cannot be opened or written
 * only costs the history (logged by `warn`), never a probe or the broker's start.
 */
export function keepUsage(history: GpuUsageHistory, path: string, warn: (msg: string, fields: Record<string, unknown>) => void): GpuUsageStore | undefined {
  let store: GpuUsageStore;
  try {
    store = new GpuUsageStore(path);
    history.restore(store.rows(), Date.now());
  } catch (e) {
    warn('GPU usage history is not kept across restarts: its file cannot be opened', { path, err: (e as Error).message });
    return undefined;
  }
  let failed = false;
  history.onRecord = (rows) => {
    try {
      store.save(rows);
    } catch (e) {
      if (!failed) warn('GPU usage history could not be written', { path, err: (e as Error).message });
      failed = true;
    }
  };
  return store;
}
