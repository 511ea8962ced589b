/**
 * Retention (`retention.logs`): the log and run folder of a job that ended longer ago than the retention time are
 * removed, at start and every hour. The job itself stays in the store (`gpurun ls --all` lists it); asking for its
 * output answers 410 E_GONE saying that retention removed it.
 */
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { GpurunError } from '../protocol/errors.ts';
import { formatDuration } from '../core/units.ts';
import { isFinal } from '../protocol/jobs.ts';
import type { Store } from '../core/store.ts';
import type { LogFiles } from './logFiles.ts';
import type { Logger } from '../logger.ts';

const SWEEP_MS = 3_600_000;

export class Retention {
  private readonly d: { store: Store; logs: LogFiles; runDir: string; retentionSec: number; log: Logger };
  private timer?: NodeJS.Timeout;

  constructor(d: { store: Store; logs: LogFiles; runDir: string; retentionSec: number; log: Logger }) {
    this.d = d;
  }

  start(): void {
    if (!this.d.retentionSec) return;
    this.sweep();
    // Short retention times (tests, small disks) are swept more often.
    this.timer = setInterval(() => this.sweep(), Math.min(SWEEP_MS, Math.max(1000, this.d.retentionSec * 500)));
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  private expired(endedAt: string | null, now: number): boolean {
    return !!endedAt && Date.parse(endedAt) <= now - this.d.retentionSec * 1000;
  }

  /** Removes what has expired; returns how many jobs' files were removed. */
  sweep(now = Date.now()): number {
    const ids = new Set<string>();
    for (const dir of [this.d.logs.dir, this.d.runDir]) {
      let names: string[] = [];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      for (const n of names) {
        const m = /^([a-z0-9]{1,32})(?:\.log)?$/.exec(n);
        if (m) ids.add(m[1]);
      }
    }
    let removed = 0;
    for (const id of ids) {
      const job = this.d.store.getJob(id);
      if (!job || !isFinal(job.state) || !this.expired(job.endedAt, now)) continue;
      try {
        this.d.logs.remove(id);
        rmSync(join(this.d.runDir, id), { recursive: true, force: true });
        removed++;
      } catch (err) {
        this.d.log.warn('retention could not remove the files of a job', { job: id, err });
      }
    }
    if (removed) this.d.log.info('retention removed the logs of ended jobs', { jobs: removed, retention: formatDuration(this.d.retentionSec) });
    return removed;
  }

  /** For the logs endpoint: E_GONE when this job's log was removed by retention. */
  assertLog(job: { id: string; state: Parameters<typeof isFinal>[0]; endedAt: string | null }, now = Date.now()): void {
    if (!this.d.retentionSec || !isFinal(job.state) || this.d.logs.exists(job.id) || !this.expired(job.endedAt, now)) return;
    throw new GpurunError('E_GONE', `the output of job ${job.id} was removed by retention: logs are kept ${formatDuration(this.d.retentionSec)} after a job ends (it ended ${job.endedAt})`, {
      hint: 'The job is still listed (gpurun ls --all). Ask the broker admin to raise retention.logs to keep logs longer.',
    });
  }
}
