/**
 * The pure part of the snapshot mount (hosts/snapshot.ts): listings of a tree (the workspace on the serving side,
 * the host's cache and the overlay's upper layer on the GPU host), and the decisions made from them: which small
 * files to send into the host's cache, which cached entries to remove, and which of the job's writes to carry back
 * to the developer's disk. Paths are relative to the tree's root, `/`-separated, never empty, never `..`.
 */

/** One entry of a tree: `f` file, `d` folder, `l` symlink, `c` a whiteout (a character device in an overlay's upper). */
export interface TreeEntry {
  type: 'f' | 'd' | 'l' | 'c' | 'o';
  size: number;
  /** Modification time in ms (fractional). */
  mtimeMs: number;
  /** Permission bits, where the listing has them (the workspace's). */
  mode?: number;
}

export type Tree = Map<string, TreeEntry>;

/** Files up to this size are copied into the host's cache; larger ones are read lazily through the sshfs mount. */
export const SMALL_FILE_MAX = 1 << 20;

/** argv that lists `dir` on the host in the format parseListing reads (GNU find). */
export function listingArgs(dir: string): string[] {
  return ['find', dir, '-mindepth', '1', '-printf', '%y\\0%s\\0%T@\\0%P\\0'];
}

/** The script behind listingArgs, for a shell loop on the host: `find "$1" …` with the same format. */
export const LISTING_SH = 'find "$1" -mindepth 1 -printf \'%y\\0%s\\0%T@\\0%P\\0\'';

/** Parses `find -printf '%y\0%s\0%T@\0%P\0'` output (types other than f/d/l/c are kept as `o`). */
export function parseListing(out: Buffer | string): Tree {
  const parts = (typeof out === 'string' ? out : out.toString('utf8')).split('\0');
  const tree: Tree = new Map();
  for (let i = 0; i + 3 < parts.length; i += 4) {
    const [y, size, t, path] = [parts[i], parts[i + 1], parts[i + 2], parts[i + 3]];
    if (!path || !safeRelative(path)) continue;
    const type = y === 'f' || y === 'd' || y === 'l' || y === 'c' ? y : 'o';
    tree.set(path, { type, size: Number(size), mtimeMs: Number(t) * 1000 });
  }
  return tree;
}

/** A relative path with no `..`, `.` or empty component (what may be named under a root). */
export function safeRelative(p: string): boolean {
  return !p.startsWith('/') && p.split('/').every((c) => c !== '' && c !== '.' && c !== '..') && !p.includes('\0');
}

/** Whether two listings of one path agree on what was sent (type, size, mtime to the millisecond). */
export function sameEntry(a: TreeEntry | undefined, b: TreeEntry | undefined): boolean {
  if (!a || !b || a.type !== b.type) return false;
  if (a.type === 'd') return true;
  return a.size === b.size && Math.abs(a.mtimeMs - b.mtimeMs) < 1;
}

/**
 * How the host's cache sits over the sshfs layer (hosts/snapshot.ts):
 * - `names`: the cache holds every name of the workspace; a large file is a stub there (a sparse file of its size
 *   and mtime, marked `trusted.overlay.metacopy` with `trusted.overlay.redirect` naming it in the sshfs layer), and
 *   the sshfs mount is a data-only lower layer (`lowerdir=CACHE::SSHFS`, Linux ≥ 6.5): it is never searched for a
 *   name, only read for the data of those stubs. No lookup, found or not, leaves the host.
 * - `opaque`: where the kernel has no data-only layers. The cache holds the small files only; the sshfs layer is a
 *   normal lower layer that shows the large ones, and folders with no large file at any depth are marked opaque so
 *   lookups under them stay on the host. Lookups in the other folders that miss the cache reach sshfs.
 */
export type Layout = 'names' | 'opaque';

/** Whether a file's content stays out of the cache (read lazily through sshfs). */
export function large(e: TreeEntry): boolean {
  return e.type === 'f' && e.size > SMALL_FILE_MAX;
}

/** Whether a workspace entry belongs in the host's cache (small files, folders, symlinks; with `names`, stubs of large files too). */
export function cached(e: TreeEntry, layout: Layout = 'opaque'): boolean {
  return e.type === 'd' || e.type === 'l' || (e.type === 'f' && (layout === 'names' || e.size <= SMALL_FILE_MAX));
}

export interface CachePlan {
  /** Workspace paths to send (in the order given: folders before what is in them). */
  send: string[];
  /** Cache paths to remove first (gone from the workspace, or changed type, or grown large). */
  remove: string[];
  /** Bytes of file content in `send`. */
  bytes: number;
}

/**
 * What makes the host's cache equal to the cacheable part of the workspace. With `names`, `send` holds the small
 * files and `stubs` the large ones (sent as stubs, no content); a file that crossed SMALL_FILE_MAX either way is
 * removed first (a stub's marks must not stay on a file with content, nor the reverse).
 */
export function cachePlan(local: Tree, host: Tree, layout: Layout = 'opaque'): CachePlan & { stubs: string[] } {
  const send: string[] = [];
  const stubs: string[] = [];
  const remove: string[] = [];
  let bytes = 0;
  for (const [p, h] of host) {
    const l = local.get(p);
    if (!l || !cached(l, layout) || l.type !== h.type || (layout === 'names' && large(l) !== large(h) && !sameEntry(l, h))) remove.push(p);
  }
  for (const [p, l] of [...local].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (!cached(l, layout)) continue;
    const h = host.get(p);
    if (h && sameEntry(l, h)) continue;
    if (l.type === 'd' && h?.type === 'd') continue;
    if (large(l)) stubs.push(p);
    else {
      send.push(p);
      if (l.type === 'f') bytes += l.size;
    }
  }
  return { send, stubs, remove: dropNested(remove), bytes };
}

/** Paths without those under another path of the list (removing a folder removes what is in it). */
function dropNested(paths: string[]): string[] {
  const set = new Set(paths);
  return paths.filter((p) => {
    for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) if (set.has(p.slice(0, i))) return false;
    return true;
  });
}

/** One step that carries a job's change back to the developer's disk: m = mkdir, c = copy a file, l = copy a symlink, r = remove. */
export type WriteBack = { op: 'm' | 'c' | 'l' | 'r'; path: string };

/**
 * The job's changes between two listings of the overlay's upper layer. Entries that match `pushed` (what the
 * serving side itself put into the view: an edit on the developer's disk) are not carried back. A path that was in
 * `prev` and is gone now (a file the job made and removed) is removed; a whiteout is a removal.
 */
export function writeBacks(prev: Tree, cur: Tree, pushed: Map<string, TreeEntry | 'removed'>): WriteBack[] {
  const mk: WriteBack[] = [];
  const put: WriteBack[] = [];
  const rm: WriteBack[] = [];
  for (const [p, e] of cur) {
    const before = prev.get(p);
    if (before && before.type === e.type && (e.type === 'd' || sameEntry(before, e))) continue;
    const mine = pushed.get(p);
    if (mine === 'removed' ? e.type === 'c' : mine && sameEntry(mine, e)) continue;
    if (e.type === 'd') mk.push({ op: 'm', path: p });
    else if (e.type === 'f') put.push({ op: 'c', path: p });
    else if (e.type === 'l') put.push({ op: 'l', path: p });
    else if (e.type === 'c') rm.push({ op: 'r', path: p });
  }
  for (const [p] of prev) if (!cur.has(p) && pushed.get(p) !== 'removed') rm.push({ op: 'r', path: p });
  mk.sort((a, b) => a.path.length - b.path.length);
  rm.sort((a, b) => b.path.length - a.path.length);
  return [...mk, ...put, ...rm];
}

/**
 * The host-side script that carries write-backs from the upper layer ($1) to the sshfs mount of the workspace ($2):
 * then `op path` pairs. Every write goes through the SFTP side, so it stays confined and read-only holds.
 */
export const WRITE_BACK_SH = [
  'up=$1; lz=$2; shift 2; rc=0',
  'while [ $# -gt 1 ]; do op=$1; p=$2; shift 2',
  '  case $op in',
  '    m) mkdir -p "$lz/$p" ;;',
  '    c) cp --preserve=mode,timestamps "$up/$p" "$lz/$p" ;;',
  '    l) rm -f "$lz/$p" && cp -P "$up/$p" "$lz/$p" ;;',
  '    r) rm -rf "$lz/$p" ;;',
  '  esac || { rc=1; echo "gpurun: could not write back $p" >&2; }',
  'done; exit $rc',
].join('\n');

/** argv of one batch of write-backs. */
export function writeBackArgs(upper: string, lazy: string, steps: WriteBack[]): string[] {
  return jailedArgs([upper, lazy], ['sh', '-c', WRITE_BACK_SH, 'gpurun-write-back', upper, lazy, ...steps.flatMap((s) => [s.op, s.path])]);
}

/**
 * Folders of the cache that may be made opaque to the sshfs layer below (overlay's `trusted.overlay.opaque`): those
 * with nothing under them that the cache lacks (no large file at any depth). A lookup under such a folder, found or
 * not, then never leaves the host's disk. The root is never one: a layer's root cannot be opaque.
 */
export function opaqueDirs(local: Tree): string[] {
  const impure = new Set<string>();
  for (const [p, e] of local) {
    if (cached(e)) continue;
    for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) impure.add(p.slice(0, i));
  }
  return [...local].filter(([p, e]) => e.type === 'd' && !impure.has(p)).map(([p]) => p).sort();
}

/** Folders opaque before and not now: their cached copy must go (an extracted folder keeps its old xattrs). */
export function noLongerOpaque(before: string[], now: string[]): string[] {
  const keep = new Set(now);
  return before.filter((d) => !keep.has(d) && safeRelative(d));
}

/** `tree` without `dirs` and what is under them. */
export function withoutSubtrees(tree: Tree, dirs: string[]): Tree {
  if (!dirs.length) return tree;
  const out: Tree = new Map();
  const set = new Set(dirs);
  for (const [p, e] of tree) {
    let under = set.has(p);
    for (let i = p.lastIndexOf('/'); !under && i > 0; i = p.lastIndexOf('/', i - 1)) under = set.has(p.slice(0, i));
    if (!under) out.set(p, e);
  }
  return out;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let n = Buffer.byteLength(body) + 1;
  while (String(n).length + Buffer.byteLength(body) !== n) n = String(n).length + Buffer.byteLength(body);
  return `${n}${body}`;
}

function tarHeader(name: string, type: string, size: number, mode: number, mtimeSec: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number, len: number) => h.write(s, off, Math.min(len, Buffer.byteLength(s)), 'utf8');
  const oct = (n: number, len: number) => n.toString(8).padStart(len - 1, '0');
  put(name.slice(0, 99), 0, 100);
  put(oct(mode & 0o7777, 8), 100, 8);
  put(oct(0, 8), 108, 8);
  put(oct(0, 8), 116, 8);
  put(oct(size, 12), 124, 12);
  put(oct(Math.floor(mtimeSec), 12), 136, 12);
  h.fill(0x20, 148, 156);
  put(type, 156, 1);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  let sum = 0;
  for (const b of h) sum += b;
  put(`${oct(sum, 7)}\0`, 148, 8);
  return h;
}

/** The end of a tar stream: two blocks of zeros. */
export const TAR_END = Buffer.alloc(1024);

/**
 * One entry of a POSIX tar stream: a PAX header with its path, link text and mtime (exact, for the host's listing
 * to match), then the entry with its data padded to the block.
 */
export function tarEntry(e: { path: string; type: 'f' | 'd' | 'l'; mode: number; mtimeMs: number; data?: Buffer; link?: string }): Buffer[] {
  const pax = Buffer.from(paxRecord('path', e.path) + paxRecord('mtime', (e.mtimeMs / 1000).toFixed(6)) + (e.link !== undefined ? paxRecord('linkpath', e.link) : ''), 'utf8');
  const size = e.type === 'f' ? (e.data?.length ?? 0) : 0;
  const parts = [tarHeader('PaxHeader', 'x', pax.length, 0o644, e.mtimeMs / 1000), pax, Buffer.alloc((512 - (pax.length % 512)) % 512)];
  parts.push(tarHeader(e.path, e.type === 'f' ? '0' : e.type === 'd' ? '5' : '2', size, e.mode, e.mtimeMs / 1000));
  if (size) parts.push(e.data!, Buffer.alloc((512 - (size % 512)) % 512));
  return parts;
}

/**
 * A POSIX tar of stubs of large files for the `names` layout: each a sparse file of the file's size with no data
 * (PAX sparse format 1.0), its mode and mtime, and `trusted.overlay.metacopy` (empty: no digest) with
 * `trusted.overlay.redirect=/PATH`, which sends reads of its data to PATH in the data-only sshfs layer. GNU tar
 * extracts it with `--xattrs --xattrs-include='trusted.overlay.*'`; nothing but the header travels.
 */
export function stubTar(files: Array<{ path: string; size: number; mode: number; mtimeMs: number }>): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    const pax = Buffer.from(
      paxRecord('GNU.sparse.major', '1') + paxRecord('GNU.sparse.minor', '0') + paxRecord('GNU.sparse.name', f.path) +
        paxRecord('GNU.sparse.realsize', String(f.size)) + paxRecord('mtime', (f.mtimeMs / 1000).toFixed(6)) +
        paxRecord('SCHILY.xattr.trusted.overlay.metacopy', '') + paxRecord('SCHILY.xattr.trusted.overlay.redirect', `/${f.path}`),
      'utf8',
    );
    // The sparse map: one region of no bytes at the file's end (all of it a hole).
    const map = Buffer.alloc(512);
    map.write(`1\n${f.size}\n0\n`, 'utf8');
    parts.push(tarHeader('PaxHeader', 'x', pax.length, 0o644, f.mtimeMs / 1000), pax, Buffer.alloc((512 - (pax.length % 512)) % 512));
    parts.push(tarHeader('GNUSparseFile.0/stub', '0', map.length, f.mode, f.mtimeMs / 1000), map);
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** A POSIX tar of folder entries that carry `trusted.overlay.opaque=y` (GNU tar extracts it with --xattrs). */
export function opaqueTar(dirs: Array<{ path: string; mode: number; mtimeMs: number }>): Buffer {
  const parts: Buffer[] = [];
  for (const d of dirs) {
    const pax = Buffer.from(paxRecord('path', d.path) + paxRecord('SCHILY.xattr.trusted.overlay.opaque', 'y'), 'utf8');
    parts.push(tarHeader('PaxHeader', 'x', pax.length, 0o644, d.mtimeMs / 1000), pax, Buffer.alloc((512 - (pax.length % 512)) % 512));
    parts.push(tarHeader(d.path, '5', 0, d.mode, d.mtimeMs / 1000));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/**
 * A tree as the developer's side sends it (`gpurun sftp-serve --snapshot list|stat`): per entry `TYPE\0SIZE\0MTIME_MS\0
 * MODE\0PATH\0`, MODE in octal. Unlike the host's `find` listing it carries the permission bits (the cache's folders
 * and stubs get them).
 */
export function treeRecords(tree: Tree): string {
  let out = '';
  for (const [p, e] of tree) out += `${e.type}\0${e.size}\0${e.mtimeMs}\0${(e.mode ?? 0).toString(8)}\0${p}\0`;
  return out;
}

/** Parses treeRecords' text; entries with an unsafe path are dropped. */
export function parseTreeRecords(out: string): Tree {
  const parts = out.split('\0');
  const tree: Tree = new Map();
  for (let i = 0; i + 4 < parts.length; i += 5) {
    const [y, size, t, mode, path] = [parts[i], parts[i + 1], parts[i + 2], parts[i + 3], parts[i + 4]];
    if (!path || !safeRelative(path)) continue;
    const type = y === 'f' || y === 'd' || y === 'l' || y === 'c' ? y : 'o';
    tree.set(path, { type, size: Number(size), mtimeMs: Number(t), mode: parseInt(mode, 8) || 0 });
  }
  return tree;
}

/**
 * Runs argv (on the host, as root) in a file system of its own, for every step that writes into or reads from a
 * tree the job or the serving side can shape: the host's cache, the job's overlay, its upper layer. Such a tree may
 * hold a symlink that leads anywhere (`a -> /etc`, made by the job in its workspace, or listed by a hostile client),
 * and GNU tar, cp and rm follow a symlink in a path's folders: run on the host itself, an edit of `a/passwd`
 * pushed into the job's view would write the host's /etc/passwd, and a write-back of `a/shadow` copy the host's
 * /etc/shadow to the developer's disk. In the jail, the root is an empty tmpfs (1 MiB) with the system's programs
 * bound read-only, /dev/null, and only `dirs` bound as they are (at their own paths): a symlink that leads out of
 * them leads nowhere. A mount namespace of its own (util-linux unshare) holds it; it ends with the command. Fails
 * (and runs nothing) if any part of it cannot be set up. `dirs` must not be nested in one another.
 */
export function jailedArgs(dirs: string[], argv: string[]): string[] {
  return ['sh', '-c', JAIL_OUTER_SH, JAIL_SH, String(dirs.length), ...dirs, ...argv];
}

/** Makes the jail's mount point (removed after), then the namespace; $0 is JAIL_SH, then the count of dirs, the dirs, the command. */
const JAIL_OUTER_SH = [
  'r=$(mktemp -d "${TMPDIR:-/tmp}/gpurun-jail.XXXXXX") || exit 125',
  'unshare --mount --propagation private -- sh -c "$0" gpurun-jail "$r" "$@"; rc=$?',
  'rmdir "$r" 2>/dev/null; exit $rc',
].join('\n');

const JAIL_SH = [
  'set -e',
  'r=$1; n=$2; shift 2',
  'mount -t tmpfs -o mode=755,size=1m gpurun-jail "$r"',
  'for d in /usr /bin /sbin /lib /lib32 /lib64 /libx32; do',
  '  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "$r$d"',
  '  elif [ -d "$d" ]; then mkdir -p "$r$d"; mount --bind "$d" "$r$d"; mount -o remount,bind,ro "$r$d"; fi',
  'done',
  'mkdir "$r/dev"; : > "$r/dev/null"; mount --bind /dev/null "$r/dev/null"',
  'while [ "$n" -gt 0 ]; do mkdir -p "$r$1"; mount --bind "$1" "$r$1"; shift; n=$((n - 1)); done',
  'exec chroot "$r" "$@"',
].join('\n');

/**
 * The entries of `tree` whose every folder is a folder of the tree: what a real walk lists. A listing from the
 * serving side that names `a/x` under a symlink or a file `a` is not one, and such entries are not sent.
 */
export function rooted(tree: Tree): Tree {
  const out: Tree = new Map();
  for (const [p, e] of tree) {
    let ok = true;
    for (let i = p.indexOf('/'); ok && i > 0; i = p.indexOf('/', i + 1)) ok = tree.get(p.slice(0, i))?.type === 'd';
    if (ok) out.set(p, e);
  }
  return out;
}
