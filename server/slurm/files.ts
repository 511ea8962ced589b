/**
 * Files on a cluster's shared storage, as the backend needs them: copy in and out, list, read from a byte offset.
 * `LocalClusterFiles` works on this machine's file system (a broker on the login node, or storage mounted here);
 * an SFTP implementation plugs in behind the same interface. Paths are absolute paths on the cluster.
 */
import { copyFile, mkdir, open, readdir, rm, stat, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface RemoteEntry {
  /** Path from the listed folder, `/`-separated. */
  rel: string;
  size: number;
  mtimeMs: number;
}

export interface ClusterFiles {
  /** Copies a local file to the cluster, creating folders, and gives the copy `mtimeMs`. */
  put(localPath: string, remotePath: string, mtimeMs: number): Promise<void>;
  /** Copies a cluster file here, creating folders, and gives the copy the remote file's mtime. */
  get(remotePath: string, localPath: string, mtimeMs: number): Promise<void>;
  remove(remotePath: string): Promise<void>;
  /** Every file below `dir` (recursively), except under folders named in `skipDirs`; [] when `dir` is missing. */
  list(dir: string, skipDirs: ReadonlySet<string>): Promise<RemoteEntry[]>;
  /** Up to `max` bytes from `offset`; empty when the file does not exist (yet) or has no more. */
  read(path: string, offset: number, max: number): Promise<Buffer>;
  mkdirp(dir: string): Promise<void>;
}

export class LocalClusterFiles implements ClusterFiles {
  private readonly dirs = new Set<string>();

  async mkdirp(dir: string): Promise<void> {
    if (this.dirs.has(dir)) return;
    await mkdir(dir, { recursive: true });
    this.dirs.add(dir);
  }

  async put(localPath: string, remotePath: string, mtimeMs: number): Promise<void> {
    await this.mkdirp(dirname(remotePath));
    await copyFile(localPath, remotePath);
    await utimes(remotePath, new Date(mtimeMs), new Date(mtimeMs));
  }

  async get(remotePath: string, localPath: string, mtimeMs: number): Promise<void> {
    await mkdir(dirname(localPath), { recursive: true });
    await copyFile(remotePath, localPath);
    await utimes(localPath, new Date(mtimeMs), new Date(mtimeMs));
  }

  async remove(remotePath: string): Promise<void> {
    await rm(remotePath, { force: true });
  }

  async list(dir: string, skipDirs: ReadonlySet<string>): Promise<RemoteEntry[]> {
    const out: RemoteEntry[] = [];
    const walk = async (abs: string, rel: string): Promise<void> => {
      let ents;
      try {
        ents = await readdir(abs, { withFileTypes: true });
      } catch {
        return;
      }
      await Promise.all(
        ents.map(async (e) => {
          const r = rel ? `${rel}/${e.name}` : e.name;
          if (e.isDirectory()) {
            if (!skipDirs.has(e.name)) await walk(join(abs, e.name), r);
          } else if (e.isFile()) {
            const s = await stat(join(abs, e.name)).catch(() => undefined);
            if (s) out.push({ rel: r, size: s.size, mtimeMs: s.mtimeMs });
          }
        }),
      );
    };
    await walk(dir, '');
    return out;
  }

  async read(path: string, offset: number, max: number): Promise<Buffer> {
    const fh = await open(path, 'r').catch(() => undefined);
    if (!fh) return Buffer.alloc(0);
    try {
      const buf = Buffer.allocUnsafe(max);
      const { bytesRead } = await fh.read(buf, 0, max, offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }
}
