/**
 * A watch on a folder tree with one inotify watch per folder (never one per file). Node's `fs.watch(dir,
 * {recursive: true})` on Linux puts a watch on every file and, as it starts, reports every file of the tree as
 * changed: for a 20,000-file virtualenv that is 20,000 stat calls while the tree is set up and 20,000 more when the
 * reports are handled, in the broker, while the job that was just started imports its modules on the same CPUs.
 * A watch on a folder already reports changes to the files in it; a folder that appears is watched and what is in
 * it reported (it may have filled before its watch was in place).
 */
import { lstatSync, readdirSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';

export class TreeWatch {
  private readonly dirs = new Map<string, FSWatcher>();
  private closed = false;
  private failed = false;
  private readonly root: string;
  private readonly onName: (rel: string) => void;
  private readonly onError: (e: Error) => void;

  /** `onName` gets each changed entry's path relative to `root` (`/`-separated; the entry may be gone). */
  constructor(root: string, onName: (rel: string) => void, onError: (e: Error) => void) {
    this.root = root;
    this.onName = onName;
    this.onError = onError;
  }

  /** Watches the root and the folders given (relative paths, as listed at start: they are not reported). */
  start(folders: Iterable<string>): void {
    this.watchDir('');
    for (const d of folders) this.watchDir(d);
  }

  /** The number of folders watched. */
  get size(): number {
    return this.dirs.size;
  }

  close(): void {
    this.closed = true;
    for (const w of this.dirs.values()) w.close();
    this.dirs.clear();
  }

  private watchDir(rel: string): void {
    if (this.closed || this.dirs.has(rel)) return;
    let w: FSWatcher;
    try {
      w = watch(join(this.root, rel), (_ev, name) => name && this.changed(rel, String(name)));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // Said once (ENOSPC: the user's inotify watches are used up; edits in the folders left out are not seen).
      if (code !== 'ENOENT' && code !== 'ENOTDIR' && !this.failed) {
        this.failed = true;
        this.onError(new Error(`${(e as Error).message} (watching ${rel || '.'}; edits in folders that could not be watched reach the job at its next start)`));
      }
      return;
    }
    // A watched folder that is removed ends its watch; its parent's watch reports the removal.
    w.on('error', () => this.unwatch(rel));
    this.dirs.set(rel, w);
  }

  private changed(dir: string, name: string): void {
    if (this.closed) return;
    const rel = dir ? `${dir}/${name}` : name;
    this.onName(rel);
    let isDir = false;
    try {
      isDir = lstatSync(join(this.root, rel)).isDirectory();
    } catch {
      this.unwatch(rel);
      return;
    }
    if (isDir && !this.dirs.has(rel)) this.added(rel);
  }

  /** A folder that appeared (made, moved in): watched, and everything in it reported. */
  private added(rel: string): void {
    this.watchDir(rel);
    let entries;
    try {
      entries = readdirSync(join(this.root, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const d of entries) {
      const p = `${rel}/${d.name}`;
      this.onName(p);
      if (d.isDirectory()) this.added(p);
    }
  }

  /** Stops the watches of `rel` and of the folders under it. */
  private unwatch(rel: string): void {
    for (const [d, w] of this.dirs) {
      if (d !== '' && (d === rel || d.startsWith(`${rel}/`))) {
        w.close();
        this.dirs.delete(d);
      }
    }
  }
}
