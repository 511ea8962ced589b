/**
 * What one round of an incremental folder copy must move. Pure. Both sides list their files (path, size, mtime to
 * the nanosecond, as `find -printf '%P\t%s\t%T@\n'` prints them); a file is copied when the destination lacks it or
 * has another size or mtime (the copy keeps mtimes: tar's posix format), and removed there when the source no longer
 * has it. A round after the job has stopped therefore moves exactly what changed since the round before.
 */

export interface FileEntry {
  size: number;
  /** Seconds since the epoch with the fraction `find` prints ("1796180883.2269611150"), compared as text. */
  mtime: string;
}

export type Manifest = Map<string, FileEntry>;

/** Parses `find DIR -type f -printf '%P\t%s\t%T@\n'`; lines that do not fit (a name with a tab or newline) are skipped. */
export function parseManifest(text: string): Manifest {
  const m: Manifest = new Map();
  for (const line of text.split('\n')) {
    const parts = line.split('\t');
    if (parts.length !== 3 || !parts[0] || !/^\d+$/.test(parts[1])) continue;
    m.set(parts[0], { size: Number(parts[1]), mtime: parts[2] });
  }
  return m;
}

export interface CopyPlan {
  /** Paths (relative to the folder) to copy from the source. */
  copy: string[];
  /** Paths to remove at the destination. */
  remove: string[];
  /** Bytes the copy moves (file contents). */
  bytes: number;
  /** Bytes of the whole folder at the source (what a full copy would move). */
  totalBytes: number;
}

export function copyPlan(src: Manifest, dst: Manifest): CopyPlan {
  const copy: string[] = [];
  let bytes = 0;
  let totalBytes = 0;
  for (const [p, e] of src) {
    totalBytes += e.size;
    const d = dst.get(p);
    if (!d || d.size !== e.size || d.mtime !== e.mtime) {
      copy.push(p);
      bytes += e.size;
    }
  }
  const remove = [...dst.keys()].filter((p) => !src.has(p));
  return { copy: copy.sort(), remove: remove.sort(), bytes, totalBytes };
}
