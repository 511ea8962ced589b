/**
 * The snapshot mount (`mount.snapshot: true`, relay transport, workspace served by the broker): the job's
 * `/workspace` is an overlay on the GPU host whose lower layers are
 *   1. a cache on the host's disk of the workspace's small files, folders and symlinks (`WORKDIR/cache/KEY`, one per
 *      user and workspace, kept between runs and brought up to date at each start by one tar stream of what changed),
 *   2. the live sshfs mount of the workspace (`WORKDIR/snap/JOB/lazy`, the relay as today), where large files are
 *      read lazily, by range;
 * and whose upper layer (`WORKDIR/snap/JOB/upper`) takes the job's writes. Reads of small files never cross the
 * network. Consistency:
 * - the job's writes are carried to the developer's disk through the sshfs mount (so through the confined SFTP
 *   side) by a loop that lists the upper layer every WRITE_BACK_MS; a file the job closed is on the developer's disk
 *   within about that, plus the copy;
 * - an edit on the developer's disk during the run is put into the job's view (through the overlay, so the job sees
 *   it at its next open) within EDIT_DEBOUNCE_MS of the file system's notice; edits that the write-back made, and
 *   the job's own writes that the serving side put back, are told apart by size and mtime, so neither echoes.
 * A file changed on both sides at once ends as the later write.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import type { RemoteExec } from './ssh.ts';
import type { WorkspaceSide } from './workspaceSide.ts';
import { cached, cachePlan, jailedArgs, LISTING_SH, listingArgs, noLongerOpaque, opaqueDirs, opaqueTar, parseListing, sameEntry, safeRelative, stubTar, withoutSubtrees, writeBackArgs, writeBacks, type Layout, type Tree, type TreeEntry } from './snapshotPlan.ts';

/** How often the upper layer is listed for the job's writes. */
export const WRITE_BACK_MS = 250;
/** How long edits on the developer's disk are gathered before they are sent. */
export const EDIT_DEBOUNCE_MS = 100;
/** How long a job's start waits for the watch on the developer's machine (direct transport) to be in place. */
export const WATCH_READY_MS = 10_000;

export interface SnapshotPaths {
  /** The per-user, per-workspace cache of small files (lower layer 1). */
  cache: string;
  /** A file whose mtime says when a job last used the cache (outside it: the cache is what the job sees). */
  stamp: string;
  /** The job's own folder: `lazy` (the sshfs mount), `upper`, `work` (the overlay's). */
  job: string;
  lazy: string;
  upper: string;
  work: string;
}

/**
 * Where a job's snapshot mount keeps its parts, from its mount point (`WORKDIR/mnt/JOB`). The two layouts keep
 * separate caches: a stub of the `names` layout would read as zeros under the `opaque` one.
 */
export function snapshotPaths(mnt: string, owner: string, workspace: string, layout: Layout = 'opaque'): SnapshotPaths {
  const workDir = workDirOf(mnt);
  const job = posix.join(workDir, 'snap', posix.basename(mnt));
  const key = createHash('sha256').update(`${owner}\0${workspace}`).digest('hex').slice(0, 24) + (layout === 'names' ? '.names' : '');
  return { cache: posix.join(workDir, 'cache', key), stamp: posix.join(workDir, 'cache-used', key), job, lazy: posix.join(job, 'lazy'), upper: posix.join(job, 'upper'), work: posix.join(job, 'work') };
}

/**
 * Removes the host's snapshot caches (WORKDIR/cache/KEY) that no job has used for DAYS days (the mtime of
 * WORKDIR/cache-used/KEY, set at each mount and unmount) and that no mounted overlay has as its lower layer; prints
 * each removed one. A cache without a stamp gets one (its age counts from then). A path /proc/mounts would show
 * escaped (a space, a tab, a backslash) is never removed: its use could not be seen. argv: WORKDIR DAYS
 */
const EXPIRE_CACHES = `work=$1 days=$2
for d in "$work"/cache/*/; do
  [ -d "$d" ] || continue
  d=\${d%/}
  s="$work/cache-used/\${d##*/}"
  case $d in *' '* | *'\t'* | *'\\'*) continue ;; esac
  [ -e "$s" ] || { mkdir -p "$work/cache-used" && touch "$s"; continue; }
  [ -n "$(find "$s" -mtime +"$days" 2>/dev/null)" ] || continue
  grep -qF "lowerdir=$d:" /proc/mounts && continue
  rm -rf -- "$d" && rm -f -- "$s" && printf '%s\\n' "$d"
done
`;

export function expireCachesArgs(workDir: string, days: number): string[] {
  return ['sh', '-c', EXPIRE_CACHES, 'gpurun-expire-caches', workDir, String(days)];
}

/** The job's folder of snapshot parts for a mount point, whatever the cache (for unmounting). */
export function snapshotJobDir(mnt: string): string {
  return posix.join(workDirOf(mnt), 'snap', posix.basename(mnt));
}

/** The host's workDir of a mount point (`WORKDIR/mnt/…/JOB`, hosts/mount.ts mountPoint). */
function workDirOf(mnt: string): string {
  const i = mnt.lastIndexOf('/mnt/');
  return i >= 0 ? mnt.slice(0, i) || '/' : posix.dirname(posix.dirname(mnt));
}

/**
 * argv of the overlay mount (lower: the cache over the sshfs mount, which is a data-only layer with `names`; upper:
 * the job's writes). metacopy stays off: a copy-up (the job's first write, or chmod) copies the data, so the upper
 * layer always holds whole files and the write-back can copy them as they are.
 */
export function overlayMountArgs(p: SnapshotPaths, mnt: string, layout: Layout = 'opaque'): string[] {
  for (const d of [p.cache, p.lazy, p.upper, p.work]) if (/[,:\\]/.test(d)) throw new Error(`the host's workDir must not contain ",", ":" or "\\": ${d}`);
  return ['mount', '-t', 'overlay', 'overlay', '-o', `lowerdir=${p.cache}${layout === 'names' ? '::' : ':'}${p.lazy},upperdir=${p.upper},workdir=${p.work}`, mnt];
}

/**
 * Checks on the host (under `dir`, which must exist) whether its overlayfs reads a stub's data from a data-only
 * lower layer: a one-byte file behind a stub, mounted and read back. Prints `names` if so, else `opaque` and why.
 */
const PROBE_SH = [
  't=$(mktemp -d "$1/probe.XXXXXX") || exit 1',
  'mkdir "$t/l" "$t/d" "$t/u" "$t/w" "$t/m" && printf x > "$t/d/f" && tar -x -f - --xattrs --xattrs-include="trusted.overlay.*" -C "$t/l" || { rm -rf "$t"; exit 1; }',
  'if err=$(mount -t overlay overlay -o "lowerdir=$t/l::$t/d,upperdir=$t/u,workdir=$t/w" "$t/m" 2>&1); then',
  '  r=$(cat "$t/m/f" 2>&1); umount "$t/m"',
  '  if [ "$r" = x ]; then echo names; else echo "opaque: the kernel mounts data-only layers but did not follow the stub"; fi',
  'elif err2=$(mount -t overlay overlay -o "lowerdir=$t/l:$t/d,upperdir=$t/u,workdir=$t/w" "$t/m" 2>&1); then',
  '  umount "$t/m"; echo "opaque: the kernel has no data-only overlay layers ($err)"',
  'else echo "none: mounting an overlay failed (it needs root login and overlayfs): $err2"; fi',
  'rm -rf "$t"',
].join('\n');

/**
 * Which layout the host supports, and why not `names` where it does not; `none` where it cannot mount an overlay at
 * all (no root login, no overlayfs): such a host gets the plain sshfs mount.
 */
export async function probeLayout(ssh: RemoteExec, dir: string): Promise<{ layout: Layout | 'none'; why?: string }> {
  const r = await ssh.exec(['sh', '-c', PROBE_SH, 'gpurun-probe', dir], { stdin: stubTar([{ path: 'f', size: 1, mode: 0o644, mtimeMs: Date.now() }]), timeoutMs: 30_000 });
  const out = r.stdout.trim();
  if (r.code === 0 && out === 'names') return { layout: 'names' };
  if (r.code === 0 && out.startsWith('opaque: ')) return { layout: 'opaque', why: out.slice(8) };
  return { layout: 'none', why: out.replace(/^none: /, '') || `the check on the host failed (exit ${r.code}): ${r.stderr.trim()}` };
}

export interface SnapshotStats {
  files: number;
  bytes: number;
  removed: number;
  /** `names` layout: stubs of large files written (no content sent). */
  stubs: number;
}

/**
 * Brings the host's cache up to the workspace's small files now (before the overlay is mounted), and marks opaque
 * the folders that hold no large file (`CACHE.opaque` lists them, for the next run). Returns what was sent and the
 * opaque folders.
 */
export async function syncCache(ssh: RemoteExec, side: WorkspaceSide, cache: string, local: Tree, layout: Layout = 'opaque'): Promise<SnapshotStats & { opaque: string[] }> {
  if (layout === 'names') return syncNames(ssh, side, cache, local);
  const opaqueList = `${cache}.opaque`;
  const [listing, before] = await Promise.all([
    ssh.exec(listingArgs(cache), { timeoutMs: 60_000 }),
    ssh.exec(['sh', '-c', 'cat "$1" 2>/dev/null || true', 'gpurun-cache', opaqueList], { timeoutMs: 60_000 }),
  ]);
  const now = opaqueDirs(local);
  const was = before.stdout.split('\0').filter(Boolean);
  const gone = noLongerOpaque(was, now);
  const plan = cachePlan(local, withoutSubtrees(parseListing(listing.stdout), gone));
  const remove = [...new Set([...gone, ...plan.remove])];
  await pruneCache(ssh, cache, remove);
  await side.sendTar(ssh, plan.send, cache);
  if (plan.send.length || remove.length || was.join('\0') !== now.join('\0')) {
    const dirs = now.map((p) => ({ path: p, mode: local.get(p)!.mode ?? 0o755, mtimeMs: local.get(p)!.mtimeMs }));
    const r = await ssh.exec(jailedArgs([cache], ['tar', '-x', '-f', '-', '--xattrs', '--xattrs-include=trusted.overlay.*', '-C', cache]), { stdin: opaqueTar(dirs), timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`marking the cache's folders failed: ${r.stderr.trim()}`);
    await ssh.run(['rm', '-f', opaqueList], "clearing the cache's list of folders");
    const w = await ssh.exec(['sh', '-c', 'cat > "$1"', 'gpurun-cache', opaqueList], { stdin: Buffer.from(now.map((p) => `${p}\0`).join(''), 'utf8'), timeoutMs: 60_000 });
    if (w.code !== 0) throw new Error(`writing the cache's list of folders failed: ${w.stderr.trim()}`);
  }
  return { files: plan.send.filter((p) => local.get(p)?.type === 'f').length, bytes: plan.bytes, removed: remove.length, stubs: 0, opaque: now };
}

/** The cache of the `names` layout: small files sent with their content, stubs of large ones (SnapshotStats.stubs). */
async function syncNames(ssh: RemoteExec, side: WorkspaceSide, cache: string, local: Tree): Promise<SnapshotStats & { opaque: string[] }> {
  const listing = await ssh.exec(listingArgs(cache), { timeoutMs: 60_000 });
  const plan = cachePlan(local, parseListing(listing.stdout), 'names');
  await pruneCache(ssh, cache, plan.remove);
  await side.sendTar(ssh, plan.send, cache);
  if (plan.stubs.length) {
    const files = plan.stubs.map((p) => ({ path: p, size: local.get(p)!.size, mode: local.get(p)!.mode ?? 0o644, mtimeMs: local.get(p)!.mtimeMs }));
    const r = await ssh.exec(jailedArgs([cache], ['tar', '-x', '-f', '-', '--no-same-owner', '--xattrs', '--xattrs-include=trusted.overlay.*', '-C', cache]), { stdin: stubTar(files), timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`writing the stubs of large files into the host's cache failed: ${r.stderr.trim()}`);
  }
  return { files: plan.send.filter((p) => local.get(p)?.type === 'f').length, bytes: plan.bytes, removed: plan.remove.length, stubs: plan.stubs.length, opaque: [] };
}

/** Removes cache entries (relative paths) on the host. */
async function pruneCache(ssh: RemoteExec, cache: string, remove: string[]): Promise<void> {
  if (!remove.length) return;
  const r = await ssh.exec(jailedArgs([cache], ['sh', '-c', 'cd "$1" && xargs -0 rm -rf --', 'gpurun-cache', cache]), { stdin: Buffer.from(remove.map((p) => `${p}\0`).join(''), 'utf8'), timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`pruning the host's cache failed: ${r.stderr.trim()}`);
}

/**
 * The live part of a job's snapshot mount: the write-back loop and the watch on the developer's disk. `close()`
 * carries the last writes back, then stops both.
 */
export class SnapshotSync {
  /** What the job's view holds, as the developer's disk will show it once written back (for telling echoes apart). */
  private readonly view: Tree;
  /** What the serving side itself put into the view since start (not the job's writes). */
  private readonly pushed = new Map<string, TreeEntry | 'removed'>();
  private upperBefore: Tree = new Map();
  private lister?: { close(): void };
  private watcher?: { close(): void };
  private pending = new Set<string>();
  private timer?: NodeJS.Timeout;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  /** Set as close() begins: the listing is not opened again. */
  private stopping = false;
  private relistTimer?: NodeJS.Timeout;

  private readonly ssh: RemoteExec;
  private readonly side: WorkspaceSide;
  private readonly mnt: string;
  private readonly p: SnapshotPaths;
  private readonly log: (msg: string) => void;

  /**
   * Folders of the cache that hide the sshfs layer: a large file new in one of them must be sent. `all` with the
   * `names` layout, where the sshfs layer shows no names at all.
   */
  private readonly opaque: Set<string> | 'all';

  /**
   * `initial`: the job's view (the workspace as sent). `adopted`, for a mount taken over from an earlier broker
   * process: the upper layer and the developer's disk as they are now; what the upper layer holds that the disk
   * already has is not carried back again.
   */
  constructor(ssh: RemoteExec, side: WorkspaceSide, mnt: string, p: SnapshotPaths, initial: Tree, opaque: string[] | 'all', log: (msg: string) => void, adopted?: { upper: Tree; dev: Tree }) {
    this.opaque = opaque === 'all' ? 'all' : new Set(opaque);
    if (adopted) {
      for (const [path, e] of adopted.upper) {
        const d = adopted.dev.get(path);
        // SFTP carries whole seconds: a copy written back has the job's mtime cut to the second.
        const there = e.type === 'c' ? !d : d?.type === e.type && (e.type === 'd' || (d.size === e.size && Math.floor(d.mtimeMs / 1000) === Math.floor(e.mtimeMs / 1000)));
        if (there) this.pushed.set(path, e.type === 'c' ? 'removed' : e);
      }
    }
    this.ssh = ssh;
    this.side = side;
    this.mnt = mnt;
    this.p = p;
    this.log = log;
    this.view = new Map(initial);
  }

  async start(): Promise<void> {
    const folders = [...this.view].filter(([, e]) => e.type === 'd').map(([p]) => p);
    const w = this.side.watch(
      folders,
      (name) => this.noticed(name),
      (e) => this.log(`watching the workspace for edits: ${e.message}`),
      () => this.serial(() => this.resync()),
    );
    this.watcher = w;
    await this.listen();
    // A watch that starts on the developer's machine (a process there, then a listing of what changed before it)
    // is in place before the job starts: edits made since the snapshot are in the job's view, and the job's first
    // seconds (its imports) do not share the host's CPUs with that start. One that is slow to start does not hold
    // the job up for long; it catches up with a listing once in place.
    if (w.ready) {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((r) => (timer = setTimeout(() => {
        this.log(`workspace: the watch on the developer's machine is not in place after ${WATCH_READY_MS / 1000} s; the job starts, and edits made meanwhile are found once it is`);
        r();
      }, WATCH_READY_MS)));
      await Promise.race([w.ready.then(() => this.chain), late]);
      clearTimeout(timer);
    }
  }

  private noticed(name: string): void {
    if (this.closed) return;
    this.pending.add(name);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.serial(() => this.pushEdits());
    }, EDIT_DEBOUNCE_MS);
  }

  /** Where the watch may have missed edits: every entry that differs from the job's view is handled as an edit. */
  private async resync(): Promise<void> {
    if (this.closed) return;
    const now = await this.side.walk();
    for (const [p, e] of now) if (!sameEntry(e, this.view.get(p)) && !(e.type === 'd' && this.view.get(p)?.type === 'd')) this.noticed(p);
    for (const p of this.view.keys()) if (!now.has(p)) this.noticed(p);
  }

  /**
   * Lists the upper layer on the host every WRITE_BACK_MS and carries what changed back. A listing channel that
   * ends while the job runs (its shell killed, its channel lost) is opened again a second later: the job's writes
   * are state in the upper layer, so the next listing carries whatever changed meanwhile.
   */
  private async listen(): Promise<void> {
    const script = `while :; do ${LISTING_SH}; printf 'E\\0\\0\\0\\0'; sleep ${WRITE_BACK_MS / 1000}; done`;
    const ch = await this.ssh.spawn(['sh', '-c', script, 'gpurun-upper', this.p.upper]);
    this.lister = ch;
    let buf = Buffer.alloc(0);
    let busy = false;
    let latest: Tree | undefined;
    const next = () => {
      if (busy || !latest || this.closed) return;
      const cur = latest;
      latest = undefined;
      busy = true;
      this.serial(() => this.writeBack(cur)).finally(() => {
        busy = false;
        next();
      });
    };
    ch.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (let end = buf.indexOf('E\0\0\0\0'); end >= 0; end = buf.indexOf('E\0\0\0\0')) {
        // A round ends with the marker as a record of its own: it starts the buffer or follows a record's \0.
        if (end > 0 && buf[end - 1] !== 0) break;
        latest = parseListing(buf.subarray(0, end));
        buf = buf.subarray(end + 5);
      }
      next();
    });
    ch.on('error', () => {});
    ch.on('close', () => {
      if (this.stopping) return;
      this.log("the listing of the job's writes ended; listing again");
      this.relisten();
    });
  }

  private relisten(): void {
    this.relistTimer = setTimeout(() => {
      if (!this.stopping) this.listen().catch(() => this.relisten());
    }, 1000);
  }

  /** Runs steps one at a time (write-backs and pushes of edits never overlap). */
  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.chain.then(fn).catch((e) => this.log(`workspace sync: ${(e as Error).message}`));
    this.chain = run;
    return run;
  }

  /** Carries the job's changes in `cur` (a listing of the upper layer) to the developer's disk. */
  private async writeBack(cur: Tree): Promise<void> {
    const steps = writeBacks(this.upperBefore, cur, this.pushed);
    this.upperBefore = cur;
    if (!steps.length) return;
    // Recorded before the copy: the watch on the developer's disk fires while it is made.
    for (const s of steps) {
      const e = cur.get(s.path);
      if (s.op === 'r') this.view.delete(s.path);
      // SFTP carries whole seconds: the copy on the developer's disk has the mtime cut to the second.
      else if (e) this.view.set(s.path, { ...e, mtimeMs: Math.floor(e.mtimeMs / 1000) * 1000 });
    }
    for (let i = 0; i < steps.length; i += 500) {
      const r = await this.ssh.exec(writeBackArgs(this.p.upper, this.p.lazy, steps.slice(i, i + 500)), { timeoutMs: 600_000 });
      if (r.code !== 0) this.log(`carrying the job's writes back: ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`);
    }
  }

  /** Puts the edits noticed on the developer's disk into the job's view (through the overlay). */
  private async pushEdits(): Promise<void> {
    const names = [...this.pending].filter(safeRelative);
    this.pending.clear();
    const send: string[] = [];
    const remove: string[] = [];
    const now = await this.side.entries(names);
    // A file the job writes changes on the developer's disk also when its own write-back lands, and the copy may
    // carry a later version than the listing it was made from: not an edit. The job's file as it is now decides:
    // the developer's copy counts as an edit only if it is newer (the later write wins).
    let upper: Tree = this.upperBefore;
    if (names.some((n) => this.upperBefore.get(n)?.type === 'f')) {
      const r = await this.ssh.exec(listingArgs(this.p.upper), { timeoutMs: 60_000 }).catch(() => undefined);
      if (r && r.code === 0) upper = parseListing(r.stdout);
    }
    for (const name of names) {
      const e = now.get(name);
      const known = this.view.get(name);
      if (!e) {
        if (known) remove.push(name);
        continue;
      }
      if (sameEntry(e, known) || (e.type === 'd' && known?.type === 'd')) continue;
      const job = upper.get(name);
      if (e.type === 'f' && job?.type === 'f' && e.mtimeMs <= job.mtimeMs) continue;
      // A large file is read through the sshfs layer: nothing to send, unless the cache still holds it small (it
      // grew), which would hide the sshfs layer's copy.
      if (!cached(e) && !(known && cached(known)) && !this.underOpaque(name)) continue;
      send.push(name);
    }
    if (remove.length) {
      for (const n of remove) {
        // A removed folder takes what was in it out of the view too.
        for (const p of this.view.keys()) if (p === n || p.startsWith(`${n}/`)) this.view.delete(p);
        this.pushed.set(n, 'removed');
      }
      const r = await this.ssh.exec(jailedArgs([this.mnt], ['sh', '-c', 'cd "$1" && shift && rm -rf -- "$@"', 'gpurun-edit', this.mnt, ...remove]), { timeoutMs: 60_000 });
      if (r.code !== 0) this.log(`removing files from the job's view: ${r.stderr.trim()}`);
    }
    if (send.length) {
      send.sort();
      for (const n of send) {
        const e = now.get(n)!;
        this.view.set(n, e);
        this.pushed.set(n, e);
      }
      await this.side.sendTar(this.ssh, send, this.mnt);
    }
  }

  private underOpaque(p: string): boolean {
    if (this.opaque === 'all') return true;
    for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) if (this.opaque.has(p.slice(0, i))) return true;
    return false;
  }

  /** Carries the last writes back (one more listing of the upper layer), then stops. */
  async close(): Promise<void> {
    if (this.closed || this.stopping) return;
    this.stopping = true;
    this.watcher?.close();
    clearTimeout(this.timer);
    clearTimeout(this.relistTimer);
    this.lister?.close();
    await this.chain;
    this.closed = true;
    const r = await this.ssh.exec(listingArgs(this.p.upper), { timeoutMs: 60_000 }).catch(() => undefined);
    if (r && r.code === 0) await this.writeBack(parseListing(r.stdout)).catch((e) => this.log(`carrying the last writes back: ${(e as Error).message}`));
  }
}
