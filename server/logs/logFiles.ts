/**
 * Per-job output files, addressed by byte offset. A job's runtime appends to `<dir>/<id>.log`; readers ask for
 * "from offset N" and get every byte from N on, so a client that reconnects gets no gap and no repeat.
 * Files stay after the job and its host are gone.
 */
import { appendFileSync, closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync, watch, type FSWatcher } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';

const CHUNK = 1 << 20;
/** Fallback poll when fs.watch misses a change (network file systems, some container mounts). */
const POLL_MS = 100;

export class LogFiles {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  path(jobId: string): string {
    return join(this.dir, `${jobId}.log`);
  }

  /** Creates the (empty) file if it does not exist. */
  touch(jobId: string): void {
    closeSync(openSync(this.path(jobId), 'a', 0o600));
  }

  /**
   * The byte range left out of a log that passed its output cap (logs/outputCap.ts): bytes [from, to) are a hole
   * in the file and are never sent; offsets outside it keep their meaning (a log's offsets never move).
   */
  cut(jobId: string): { from: number; to: number } | undefined {
    try {
      const c = JSON.parse(readFileSync(join(this.dir, `${jobId}.cut`), 'utf8')) as { from: number; to: number };
      return Number.isSafeInteger(c.from) && Number.isSafeInteger(c.to) && c.from < c.to ? c : undefined;
    } catch {
      return undefined;
    }
  }

  exists(jobId: string): boolean {
    return existsSync(this.path(jobId));
  }

  /** Removes a job's log (retention). */
  remove(jobId: string): void {
    rmSync(join(this.dir, `${jobId}.cut`), { force: true });
    rmSync(this.path(jobId), { force: true });
  }

  /** Appends `line` (ending in a newline) so that it starts a line of its own: after a newline if the file lacks one. */
  appendLine(jobId: string, line: string): void {
    this.append(jobId, this.lineText(jobId, line));
  }

  /** What appendLine would write now: `line`, after a newline if the file does not end in one. */
  lineText(jobId: string, line: string): string {
    let fd: number | undefined;
    let atLineStart = true;
    try {
      fd = openSync(this.path(jobId), 'r');
      const size = fstatSync(fd).size;
      const b = Buffer.alloc(1);
      if (size > 0 && readSync(fd, b, 0, 1, size - 1) === 1) atLineStart = b[0] === 0x0a;
    } catch {
      // No file yet: it starts here.
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    return atLineStart ? line : `\n${line}`;
  }

  /** Appends text the broker writes itself (a marker); a full disk (ENOSPC) loses the text, never the broker. */
  append(jobId: string, text: string): void {
    try {
      appendFileSync(this.path(jobId), text, { mode: 0o600 });
    } catch {
      // Lost with the disk full.
    }
  }

  /** Current size in bytes; 0 when the job has written nothing yet. */
  size(jobId: string): number {
    try {
      return statSync(this.path(jobId)).size;
    } catch {
      return 0;
    }
  }

  /**
   * Yields the file's bytes from `offset` on. With `isDone` given, keeps following until isDone() is true and the
   * file has been read to its end after that; without it, stops at the current end.
   */
  async *read(jobId: string, offset: number, opts: { isDone?: () => boolean; signal?: AbortSignal } = {}): AsyncGenerator<Buffer> {
    const path = this.path(jobId);
    let pos = offset;
    let cut = this.cut(jobId);
    let watcher: FSWatcher | undefined;
    let wake: (() => void) | undefined;
    const poke = () => wake?.();
    opts.signal?.addEventListener('abort', poke);
    try {
      for (;;) {
        // Read the done flag before draining, so bytes written just before the job ended are not missed.
        const doneBefore = opts.isDone ? opts.isDone() : true;
        const fh = await open(path, 'r').catch(() => undefined);
        if (fh) {
          try {
            for (;;) {
              cut ??= this.cut(jobId);
              if (cut && pos >= cut.from && pos < cut.to) pos = cut.to;
              // Never read into the hole: stop the read at its start, so a chunk never straddles it.
              const want = cut && pos < cut.from ? Math.min(CHUNK, cut.from - pos) : CHUNK;
              const buf = Buffer.allocUnsafe(CHUNK);
              const { bytesRead } = await fh.read(buf, 0, want, pos);
              if (bytesRead === 0) break;
              pos += bytesRead;
              yield bytesRead === CHUNK ? buf : buf.subarray(0, bytesRead);
              if (cut && pos === cut.from) pos = cut.to;
              if (opts.signal?.aborted) return;
            }
          } finally {
            await fh.close();
          }
          if (!watcher) {
            try {
              watcher = watch(path, poke);
            } catch {
              // Polling below still works.
            }
          }
        }
        if (doneBefore || opts.signal?.aborted) return;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, POLL_MS);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        wake = undefined;
      }
    } finally {
      watcher?.close();
      opts.signal?.removeEventListener('abort', poke);
    }
  }
}
