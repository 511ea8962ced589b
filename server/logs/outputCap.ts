/**
 * The per-job output cap (`limits.maxLogBytes`). A running job whose log passes the cap is stopped (it ends
 * `failed`, with the reason saying so). When it has ended, a log still longer than the cap is compacted: it keeps
 * its first half-cap bytes (the head), a marker line, and its last bytes (the tail), in a file of the SAME length
 * whose middle is a hole (a sparse file: the hole takes no disk). The hole's range goes to `<id>.cut`; readers skip
 * it (LogFiles.read) and clients are told (header `x-gpurun-skip: FROM-TO`), so byte offsets never move: an offset
 * a follower holds stays valid, before, in (moved to its end) or after the hole.
 */
import { closeSync, openSync, readSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { formatBytes } from '../core/limits.ts';
import type { LogFiles } from './logFiles.ts';
import type { Logger } from '../logger.ts';
import type { Job } from '../protocol/jobs.ts';
import { isFinal } from '../protocol/jobs.ts';

const CHECK_MS = 1000;

/** What the cap needs of the broker. */
export interface CapBroker {
  activeJobs(): Array<{ id: string; state: string; stopIntent: string | null }>;
  stopForLimit(id: string, reason: string): void;
  on(event: 'job', fn: (job: Job) => void): unknown;
}

export class OutputCap {
  private readonly logs: LogFiles;
  private readonly max: number;
  private readonly log: Logger;
  private timer?: NodeJS.Timeout;

  constructor(logs: LogFiles, maxBytes: number, log: Logger) {
    this.logs = logs;
    this.max = maxBytes;
    this.log = log;
  }

  start(broker: CapBroker): void {
    if (!this.max) return;
    this.timer = setInterval(() => this.check(broker), CHECK_MS);
    this.timer.unref();
    broker.on('job', (job) => {
      if (isFinal(job.state) && this.logs.size(job.id) > this.max) this.compact(job.id);
    });
  }

  close(): void {
    clearInterval(this.timer);
  }

  private check(broker: CapBroker): void {
    for (const j of broker.activeJobs()) {
      if (j.state !== 'running' || j.stopIntent) continue;
      const size = this.logs.size(j.id);
      if (size <= this.max) continue;
      this.log.warn('job passed its output cap; stopping it', { job: j.id, bytes: size, maxLogBytes: this.max });
      broker.stopForLimit(j.id, `stopped: its output passed the limit of ${formatBytes(this.max)} (limits.maxLogBytes); the log keeps its head and tail`);
    }
  }

  /** Rewrites the log as head + marker + hole + tail, same length. Safe to call twice (a compacted log is skipped). */
  compact(jobId: string): void {
    if (this.logs.cut(jobId)) return;
    const path = this.logs.path(jobId);
    const size = this.logs.size(jobId);
    const head = Math.floor(this.max / 2);
    let tail = this.max - head;
    const marker = Buffer.from(`\n[gpurun: output cut here: the job wrote ${formatBytes(size)}, more than its limit of ${formatBytes(this.max)} (limits.maxLogBytes); ${formatBytes(size - this.max)} in the middle are left out]\n`);
    tail = Math.max(0, tail - marker.length);
    const from = head + marker.length;
    const to = size - tail;
    if (to <= from) return;
    const tmp = `${path}.compact`;
    const cutPath = `${this.logs.dir}/${jobId}.cut`;
    // Called from the broker's job events: nothing here may throw (a full disk fails the compaction, never the broker).
    let src: number | undefined;
    let dst: number | undefined;
    try {
      src = openSync(path, 'r');
      dst = openSync(tmp, 'w', 0o600);
      copy(src, dst, 0, head);
      writeSync(dst, marker, 0, marker.length, head);
      copy(src, dst, to, tail);
      if (tail === 0) writeSync(dst, Buffer.alloc(1), 0, 1, size - 1); // keep the length
      closeSync(dst);
      dst = undefined;
      writeFileSync(cutPath, JSON.stringify({ from, to }), { mode: 0o600 });
      renameSync(tmp, path);
      this.log.info('compacted the log of a job that passed its output cap', { job: jobId, bytes: size, kept: head + marker.length + tail });
    } catch (err) {
      // Not renamed: the log is whole, so it has no hole to skip either.
      rmSync(tmp, { force: true });
      rmSync(cutPath, { force: true });
      this.log.error('could not compact a log past its output cap', { job: jobId, err });
    } finally {
      if (dst !== undefined) closeSync(dst);
      if (src !== undefined) closeSync(src);
    }
  }
}

function copy(src: number, dst: number, at: number, len: number): void {
  const buf = Buffer.allocUnsafe(1 << 20);
  let done = 0;
  while (done < len) {
    const n = readSync(src, buf, 0, Math.min(buf.length, len - done), at + done);
    if (n === 0) break;
    writeSync(dst, buf, 0, n, at + done);
    done += n;
  }
}
