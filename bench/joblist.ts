/**
 * Job-list figures on the SQLite store: paging through jobs that each carry 1 MB of env, the way `GET /v1/jobs`
 * reads them (ids from the index, then only the jobs a page sends), against the baseline of reading each page's
 * candidates as whole rows in batches of 50 (what a page did before). Pages stop at 8 MiB as the broker's do.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StoredJob } from '../server/core/store.ts';
import { SqliteStore } from '../server/store/sqlite.ts';
import { fmt, report, timeIt } from './_support.ts';

const JOBS = 200;
const PAGE_MAX_BYTES = 8 << 20;

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'gpurun-bench-joblist-'));
  const store = new SqliteStore(join(dir, 'gpurun.db'));
  try {
    const big = 'x'.repeat(1_000_000);
    for (let i = 0; i < JOBS; i++) store.insertJob(job(`j${i}`, { BIG: big }), '2026-12-01T00:00:00.000Z');
    let pagesNew = 0;
    let pagesOld = 0;
    const byIds = await timeIt(() => {
      pagesNew = pageThrough((before) => {
        const ids = store.listJobIds({ owner: 'bob', limit: 1001, ...(before === undefined ? {} : { beforeSeq: before }) });
        return (function* () {
          for (const id of ids) yield store.getJob(id)!;
        })();
      });
    });
    const byRows = await timeIt(() => {
      pagesOld = pageThrough((before) =>
        (function* () {
          for (let b = before; ; ) {
            const batch = store.listJobs({ owner: 'bob', limit: 50, ...(b === undefined ? {} : { beforeSeq: b }) });
            yield* batch;
            if (batch.length < 50) return;
            b = batch[batch.length - 1].seq;
          }
        })(),
      );
    });
    report(`page through ${JOBS} jobs of 1 MB env (${pagesNew} pages)`, fmt(byIds), 'at most half the baseline', byIds <= byRows / 2, `whole rows in batches of 50 (${pagesOld} pages): ${fmt(byRows)} (${(byRows / byIds).toFixed(1)}× slower)`);
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Pages as listPage makes them: stop before 8 MiB; returns the number of pages. */
function pageThrough(jobsFrom: (beforeSeq: number | undefined) => Iterable<StoredJob>): number {
  let pages = 0;
  let before: number | undefined;
  let lastSeq = 0;
  for (;;) {
    pages++;
    let bytes = 0;
    let n = 0;
    let next: number | undefined;
    for (const j of jobsFrom(before)) {
      const text = JSON.stringify(j);
      if (n > 0 && bytes + text.length > PAGE_MAX_BYTES) {
        next = before = lastSeq;
        break;
      }
      bytes += text.length + 1;
      n++;
      lastSeq = j.seq;
    }
    if (next === undefined) return pages;
  }
}
function job(id: string, env: Record<string, string>): Omit<StoredJob, 'seq'> {
  return { id, owner: 'bob', name: id, command: ['true'], workspace: '/w', resources: { gpus: 0, cpus: 1, memoryMiB: 512, timeLimitSec: 0 }, queue: 'online', env, state: 'queued', reason: 'submitted', exitCode: null, host: null, gpuIndices: [], createdAt: '2026-12-01T00:00:00.000Z', startedAt: null, endedAt: null, runtimeRef: null, stopIntent: null };
}
