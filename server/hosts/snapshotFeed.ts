/**
 * The serving side of a snapshot mount whose workspace a client serves (`gpurun run --serve-workspace`, the VS Code
 * window): three SFTP extensions that the client's confined SFTP session (hosts/sftpGuard.ts serveSftp) answers
 * itself, for the broker (hosts/clientSide.ts), next to the host's own SFTP requests:
 * - `gpurun-list@gpurun.dev`: every entry of the workspace (snapshotPlan.ts treeRecords), in pages of LIST_PAGE
 *   bytes: its data is the offset into the listing (decimal), made at offset 0; an answer is "1" (more follows) or
 *   "0", then the page;
 * - `gpurun-stat@gpurun.dev`: the entries of the relative paths in its data (NUL-separated); a path that is gone,
 *   or that leads through a symlink or out of the workspace, is left out;
 * - `gpurun-watch@gpurun.dev`: the paths of entries changed since the last call, NUL-terminated, with an empty
 *   record where edits may have been missed (the first call, and after the watch failed); answered as soon as there
 *   is something, or empty after WATCH_POLL_MS (a long poll: one in flight at a time).
 * The session's VERSION advertises SNAPSHOT_EXTENSION, so a broker knows this client has them before it mounts.
 * Nothing here writes under the workspace, and the file contents still travel only through the guarded SFTP reads.
 */
import { TreeWatch } from './treeWatch.ts';
import { treeRecords } from './snapshotPlan.ts';
import { entryOf, refusedPath, walkTree } from './workspaceSide.ts';
import type { Tree } from './snapshotPlan.ts';

export const SNAPSHOT_EXTENSION = 'gpurun-snapshot@gpurun.dev';
export const EXT_LIST = 'gpurun-list@gpurun.dev';
export const EXT_STAT = 'gpurun-stat@gpurun.dev';
export const EXT_WATCH = 'gpurun-watch@gpurun.dev';
export const FEED_EXTENSIONS = new Set([EXT_LIST, EXT_STAT, EXT_WATCH]);

/** The largest page of a listing (a workspace of a million files lists as about 100 MB). */
export const LIST_PAGE = 4 << 20;

/** How long a watch call waits for a change before it is answered empty. */
export const WATCH_POLL_MS = 15_000;
/** Changed names held for a broker that does not ask; past this they are dropped for one "may have missed" record. */
const MAX_PENDING = 20_000;

/** The answers of one SFTP session's extension calls, for the workspace `root`. */
export class SnapshotFeed {
  private readonly root: string;
  private watch?: TreeWatch;
  private names = new Set<string>();
  private gap = true;
  private waiting?: { reply: (data: Buffer) => void; timer: NodeJS.Timeout };
  private closed = false;
  /** The listing being paged through (made again at each offset 0). */
  private listing = Buffer.alloc(0);

  private readonly page: number;

  constructor(root: string, opts: { page?: number } = {}) {
    this.root = root;
    this.page = opts.page ?? LIST_PAGE;
  }

  /** The data of the answer to extension `name` with request data `data`; rejects for an unknown extension. */
  async answer(name: string, data: Buffer): Promise<Buffer> {
    if (name === EXT_LIST) {
      const offset = Number(data.toString('latin1'));
      if (!Number.isSafeInteger(offset) || offset < 0) throw new Error(`bad listing offset ${JSON.stringify(data.toString('latin1'))}`);
      if (offset === 0) this.listing = Buffer.from(treeRecords(walkTree(this.root)), 'utf8');
      const page = this.listing.subarray(offset, offset + this.page);
      const more = offset + page.length < this.listing.length;
      if (!more) {
        const last = Buffer.concat([Buffer.from('0'), page]);
        this.listing = Buffer.alloc(0);
        return last;
      }
      return Buffer.concat([Buffer.from('1'), page]);
    }
    if (name === EXT_STAT) {
      const out: Tree = new Map();
      for (const n of data.toString('utf8').split('\0')) {
        if (!n || refusedPath(this.root, n) !== null) continue;
        const e = entryOf(this.root, n);
        if (e) out.set(n, e);
      }
      return Buffer.from(treeRecords(out), 'utf8');
    }
    if (name === EXT_WATCH) return this.nextChanges();
    throw new Error(`unknown extension ${name}`);
  }

  private nextChanges(): Promise<Buffer> {
    if (!this.watch && !this.closed) {
      this.watch = new TreeWatch(this.root, (rel) => this.changed(rel), () => this.missed());
      const folders = [...walkTree(this.root)].filter(([, e]) => e.type === 'd').map(([p]) => p);
      this.watch.start(folders);
    }
    // A call made while another waits answers the earlier one (empty) first: one long poll at a time.
    this.flush(true);
    if (this.gap || this.names.size || this.closed) return Promise.resolve(this.take());
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.flush(true), WATCH_POLL_MS);
      this.waiting = { reply: resolve, timer };
    });
  }

  private changed(rel: string): void {
    if (this.names.size >= MAX_PENDING) this.missed();
    else this.names.add(rel);
    // Answered on the next turn: a burst of changes (a checkout) goes out as one answer.
    if (this.waiting) setImmediate(() => this.flush(false));
  }

  private missed(): void {
    this.names.clear();
    this.gap = true;
    if (this.waiting) setImmediate(() => this.flush(false));
  }

  /** Answers the waiting call, if any: with what there is, or (`evenEmpty`) with nothing. */
  private flush(evenEmpty: boolean): void {
    const w = this.waiting;
    if (!w || (!evenEmpty && !this.gap && !this.names.size)) return;
    this.waiting = undefined;
    clearTimeout(w.timer);
    w.reply(this.take());
  }

  private take(): Buffer {
    let out = this.gap ? '\0' : '';
    for (const n of this.names) out += `${n}\0`;
    this.gap = false;
    this.names.clear();
    return Buffer.from(out, 'utf8');
  }

  close(): void {
    this.closed = true;
    this.watch?.close();
    this.flush(true);
  }
}
