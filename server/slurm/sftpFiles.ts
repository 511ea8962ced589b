/**
 * ClusterFiles over SFTP: the cluster's shared storage as the SSH login node serves it, on the same ssh2 pool that
 * runs Slurm's commands (one SFTP session, many requests in flight). SFTP keeps times in whole seconds, which is
 * what staging's manifest compares on the cluster side. Paths are absolute paths on the cluster.
 */
import { mkdir, utimes } from 'node:fs/promises';
import { dirname, posix } from 'node:path';
import type { SFTPWrapper } from 'ssh2';
import { GpurunError } from '../protocol/errors.ts';
import type { ClusterFiles, RemoteEntry } from './files.ts';

/** SFTP status codes (RFC draft, ssh2's STATUS_CODE). */
const NO_SUCH_FILE = 2;

/** What SftpClusterFiles needs of the SSH pool (SshPool of server/hosts/ssh.ts). */
export interface SftpSource {
  sftp(): Promise<SFTPWrapper>;
}

type SftpError = Error & { code?: number };

/** An ssh2 SFTP callback call as a promise. */
function call<T>(fn: (cb: (err: SftpError | undefined | null, v?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    fn((err, v) => {
      if (err) reject(err);
      else resolve(v as T);
    });
  });
}

function fail(what: string, path: string, err: unknown): GpurunError {
  return new GpurunError('E_UNREACHABLE', `SFTP ${what} ${path} on the login node failed: ${(err as Error).message}`, {
    cause: err,
    hint: 'Check that the broker\'s login user may write to the cluster\'s stagingDir.',
  });
}

const missing = (e: unknown) => (e as SftpError).code === NO_SUCH_FILE;

export class SftpClusterFiles implements ClusterFiles {
  private readonly src: SftpSource;
  /** Folders known to exist (created or seen), so a 10,000-file stage asks once per folder. */
  private readonly dirs = new Map<string, Promise<void>>();

  constructor(src: SftpSource) {
    this.src = src;
  }

  mkdirp(dir: string): Promise<void> {
    const known = this.dirs.get(dir);
    if (known) return known;
    const made = (async () => {
      const sftp = await this.src.sftp();
      const st = await call<{ isDirectory(): boolean }>((cb) => sftp.stat(dir, cb)).catch((e) => (missing(e) ? undefined : Promise.reject(fail('stat', dir, e))));
      if (st?.isDirectory()) return;
      if (st) throw new GpurunError('E_UNREACHABLE', `SFTP: ${dir} on the login node is not a folder`, { hint: 'Move the file away or change the cluster\'s stagingDir.' });
      const parent = posix.dirname(dir);
      if (parent !== dir) await this.mkdirp(parent);
      await call<void>((cb) => sftp.mkdir(dir, cb)).catch(async (e) => {
        // Made meanwhile by another request: fine if it is a folder now.
        const again = await call<{ isDirectory(): boolean }>((cb) => sftp.stat(dir, cb)).catch(() => undefined);
        if (!again?.isDirectory()) throw fail('mkdir', dir, e);
      });
    })();
    this.dirs.set(dir, made);
    made.catch(() => this.dirs.delete(dir));
    return made;
  }

  async put(localPath: string, remotePath: string, mtimeMs: number): Promise<void> {
    await this.mkdirp(posix.dirname(remotePath));
    const sftp = await this.src.sftp();
    const secs = Math.floor(mtimeMs / 1000);
    try {
      await call<void>((cb) => sftp.fastPut(localPath, remotePath, cb));
      // The staged copy's mtime is the developer's (in seconds): bringBack tells the job's writes by it.
      await call<void>((cb) => sftp.utimes(remotePath, secs, secs, cb));
    } catch (e) {
      throw fail('upload to', remotePath, e);
    }
  }

  async get(remotePath: string, localPath: string, mtimeMs: number): Promise<void> {
    await mkdir(dirname(localPath), { recursive: true });
    const sftp = await this.src.sftp();
    try {
      await call<void>((cb) => sftp.fastGet(remotePath, localPath, cb));
    } catch (e) {
      throw fail('download of', remotePath, e);
    }
    await utimes(localPath, new Date(mtimeMs), new Date(mtimeMs));
  }

  async remove(remotePath: string): Promise<void> {
    const sftp = await this.src.sftp();
    await call<void>((cb) => sftp.unlink(remotePath, cb)).catch((e) => {
      if (!missing(e)) throw fail('removal of', remotePath, e);
    });
  }

  async list(dir: string, skipDirs: ReadonlySet<string>): Promise<RemoteEntry[]> {
    const sftp = await this.src.sftp();
    const out: RemoteEntry[] = [];
    type Ent = { filename: string; attrs: { size: number; mtime: number; isDirectory(): boolean; isFile(): boolean } };
    const walk = async (abs: string, rel: string): Promise<void> => {
      let ents: Ent[];
      try {
        ents = await call<Ent[]>((cb) => sftp.readdir(abs, cb as never));
      } catch (e) {
        if (missing(e)) return;
        throw fail('listing of', abs, e);
      }
      await Promise.all(
        ents.map(async (e) => {
          if (e.filename === '.' || e.filename === '..') return;
          const r = rel ? `${rel}/${e.filename}` : e.filename;
          if (e.attrs.isDirectory()) {
            if (!skipDirs.has(e.filename)) await walk(posix.join(abs, e.filename), r);
          } else if (e.attrs.isFile()) out.push({ rel: r, size: e.attrs.size, mtimeMs: e.attrs.mtime * 1000 });
        }),
      );
    };
    await walk(dir, '');
    return out;
  }

  async read(path: string, offset: number, max: number): Promise<Buffer> {
    const sftp = await this.src.sftp();
    let handle: Buffer;
    try {
      handle = await call<Buffer>((cb) => sftp.open(path, 'r', cb));
    } catch (e) {
      if (missing(e)) return Buffer.alloc(0);
      throw fail('open of', path, e);
    }
    try {
      const buf = Buffer.allocUnsafe(max);
      let got = 0;
      // A server may answer a read with fewer bytes than asked; read on to `max` or the end of the file.
      while (got < max) {
        const n = await call<number>((cb) => sftp.read(handle, buf, got, max - got, offset + got, (err, bytesRead) => cb(err, bytesRead)));
        if (!n) break;
        got += n;
      }
      return buf.subarray(0, got);
    } catch (e) {
      throw fail('read of', path, e);
    } finally {
      await call<void>((cb) => sftp.close(handle, cb)).catch(() => {});
    }
  }
}
