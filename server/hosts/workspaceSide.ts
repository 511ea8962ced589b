/**
 * Where a snapshot mount (hosts/snapshot.ts) reads the developer's files for the host's cache and watches them for
 * edits. Two places:
 * - LocalSide: the broker runs next to the files (relay transport, workspace served by the broker);
 * - DevSide: the files are on the developer's machine, which the host reaches over SSH (direct transport); the host
 *   runs `gpurun sftp-serve --snapshot MODE` there (server/cli/snapshotServe.ts), confined to the workspace like the
 *   SFTP side. The tar stream goes from the developer's machine straight into the host's cache; the broker only
 *   reads listings and names of changed entries, never the files' data.
 * A client that serves the workspace (`--serve-workspace`) is a third (hosts/clientSide.ts).
 */
import { spawn } from 'node:child_process';
import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { onExit, type RemoteExec } from './ssh.ts';
import { TreeWatch } from './treeWatch.ts';
import { jailedArgs, parseTreeRecords, safeRelative, type Tree, type TreeEntry } from './snapshotPlan.ts';
import { quoteShell, shellCommand } from '../core/shellQuote.ts';
import type { MountConfig } from './sshConfig.ts';
import { GpurunError } from '../protocol/errors.ts';

export interface WorkspaceSide {
  /** Every entry of the workspace (lstat: symlinks are entries of their own). */
  walk(): Promise<Tree>;
  /** The entries of `names` now; a name that is gone is missing from the answer. */
  entries(names: string[]): Promise<Tree>;
  /** Sends workspace paths as one tar stream into `dir` on `ssh`'s host (POSIX format: ns mtimes). */
  sendTar(ssh: RemoteExec, paths: string[], dir: string): Promise<void>;
  /**
   * Watches the workspace (`folders`: its folders as walked). `onName` gets each changed entry's relative path;
   * `onGap` is called where edits may have been missed (a watch that started late, or was lost and opened again).
   * `ready`, where the watch starts elsewhere: settles once it is first in place (after that first onGap).
   */
  watch(folders: string[], onName: (rel: string) => void, onError: (e: Error) => void, onGap: () => void): { close(): void; ready?: Promise<void> };
}

/** The workspace as a tree (lstat: symlinks are entries of their own, never followed). */
export function walkTree(root: string): Tree {
  const tree: Tree = new Map();
  const walk = (rel: string) => {
    for (const d of readdirSync(join(root, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${d.name}` : d.name;
      const e = entryOf(root, p);
      if (!e) continue;
      tree.set(p, e);
      if (e.type === 'd') walk(p);
    }
  };
  walk('');
  return tree;
}

/** One entry of the tree under `root`, or undefined when it is gone. */
export function entryOf(root: string, p: string): TreeEntry | undefined {
  try {
    const s = lstatSync(join(root, p));
    const type = s.isDirectory() ? 'd' : s.isSymbolicLink() ? 'l' : s.isFile() ? 'f' : 'o';
    return { type, size: s.size, mtimeMs: s.mtimeMs, mode: s.mode & 0o7777 };
  } catch {
    return undefined;
  }
}

/** Why `rel` may not be read under `root`, or null: a plain relative path none of whose folders is a symlink. */
export function refusedPath(root: string, rel: string): string | null {
  if (!safeRelative(rel)) return `not a relative path inside the workspace: ${JSON.stringify(rel)}`;
  const parts = rel.split('/');
  for (let i = 1; i < parts.length; i++) {
    const dir = parts.slice(0, i).join('/');
    try {
      if (!lstatSync(join(root, dir)).isDirectory()) return `${JSON.stringify(rel)} leads through ${JSON.stringify(dir)}, which is not a folder`;
    } catch {
      return `${JSON.stringify(rel)}: ${JSON.stringify(dir)} is gone`;
    }
  }
  return null;
}

/** argv, on the host, of GNU tar extracting a stream from stdin into `dir` (the host's cache or the job's view), in the jail. */
export function extractArgs(dir: string): string[] {
  return jailedArgs([dir], ['tar', '-x', '-f', '-', '--no-same-owner', '-C', dir]);
}

/** argv of GNU tar writing `paths` (read NUL-separated on its stdin) under `root` as one POSIX-format stream. */
export function tarCreateArgs(root: string): string[] {
  return ['-c', '-f', '-', '-C', root, '--format=posix', '--no-recursion', '--null', '-T', '-'];
}

/** The files are next to the broker. */
export class LocalSide implements WorkspaceSide {
  private readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  async walk(): Promise<Tree> {
    return walkTree(this.root);
  }

  async entries(names: string[]): Promise<Tree> {
    const out: Tree = new Map();
    for (const n of names) {
      const e = entryOf(this.root, n);
      if (e) out.set(n, e);
    }
    return out;
  }

  async sendTar(ssh: RemoteExec, paths: string[], dir: string): Promise<void> {
    if (!paths.length) return;
    const ch = await ssh.spawn(extractArgs(dir));
    let code: number | null = null;
    let stderr = '';
    onExit(ch, (e) => (code = e.code));
    ch.on('error', () => {});
    // The channel closes after the host's tar exits, or when the connection drops (then no exit code). Its readable
    // side must be consumed, or it never ends and never closes.
    const closed = new Promise((resolve) => ch.once('close', resolve));
    ch.resume();
    ch.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-2000)));
    const tar = spawn('tar', tarCreateArgs(this.root), { stdio: ['pipe', 'pipe', 'pipe'] });
    const tarDone = new Promise((resolve) => tar.once('close', resolve));
    let localErr = '';
    tar.stderr.on('data', (d: Buffer) => (localErr = (localErr + d.toString('utf8')).slice(-2000)));
    tar.on('error', (e) => (localErr = e.message));
    tar.stdin.end(nulList(paths));
    tar.stdout.pipe(ch);
    await closed;
    await tarDone;
    if (code !== 0) throw new Error(`sending the workspace's small files failed (tar exit ${code}): ${stderr.trim() || localErr.trim()}`);
  }

  watch(folders: string[], onName: (rel: string) => void, onError: (e: Error) => void): { close(): void } {
    const w = new TreeWatch(this.root, onName, onError);
    w.start(folders);
    return w;
  }
}

function nulList(paths: string[]): Buffer {
  return Buffer.from(paths.map((p) => `${p}\0`).join(''), 'utf8');
}

/**
 * argv, run on the GPU host, of `ssh` to the developer's machine (mount.target, with the direct mount's key and
 * known_hosts, checked strictly) running `mount.sftpServer --root WORKSPACE --snapshot MODE` there.
 */
export function devSnapshotArgs(m: MountConfig, workspace: string, mode: 'list' | 'stat' | 'tar' | 'watch'): string[] {
  const t = /^([\w.-]+)@([\w.-]+)(?::(\d+))?$/.exec(m.target ?? '');
  if (!t) throw new GpurunError('E_CONFIG', `mount.target "${m.target}" is not user@host[:port]`);
  return [
    'ssh',
    ...(t[3] ? ['-p', t[3]] : []),
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', 'ServerAliveInterval=5',
    '-o', 'ServerAliveCountMax=3',
    ...(m.identityFile ? ['-o', `IdentityFile=${m.identityFile}`] : []),
    ...(m.knownHosts ? ['-o', `UserKnownHostsFile=${m.knownHosts}`] : []),
    `${t[1]}@${t[2]}`,
    '--',
    `${m.sftpServer} --root ${quoteShell(workspace)} --snapshot ${mode}`,
  ];
}

/** How long a watch that ended waits before it opens again. */
const REWATCH_MS = 1000;

/** The files are on the developer's machine; the host reaches them over SSH (direct transport). */
export class DevSide implements WorkspaceSide {
  private readonly ssh: RemoteExec;
  private readonly m: MountConfig;
  private readonly workspace: string;

  constructor(ssh: RemoteExec, m: MountConfig, workspace: string) {
    this.ssh = ssh;
    this.m = m;
    this.workspace = workspace;
  }

  private args(mode: 'list' | 'stat' | 'tar' | 'watch'): string[] {
    return devSnapshotArgs(this.m, this.workspace, mode);
  }

  async walk(): Promise<Tree> {
    const r = await this.ssh.exec(this.args('list'), { timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`listing the workspace on ${this.m.target} failed (exit ${r.code}): ${r.stderr.trim()}`);
    return parseTreeRecords(r.stdout);
  }

  async entries(names: string[]): Promise<Tree> {
    if (!names.length) return new Map();
    const r = await this.ssh.exec(this.args('stat'), { stdin: nulList(names), timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`looking at edited files on ${this.m.target} failed (exit ${r.code}): ${r.stderr.trim()}`);
    return parseTreeRecords(r.stdout);
  }

  async sendTar(ssh: RemoteExec, paths: string[], dir: string): Promise<void> {
    if (!paths.length) return;
    // The host's tar reads the stream that the developer's machine writes: the broker sends only the list of paths.
    // What comes from that machine is extracted in the jail: it could name anything.
    const r = await ssh.exec(['sh', '-c', `"$@" | ${shellCommand(extractArgs(dir))}`, 'gpurun-fill', ...this.args('tar')], { stdin: nulList(paths), timeoutMs: 600_000 });
    if (r.code !== 0) throw new Error(`copying the workspace's small files from ${this.m.target} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }

  watch(_folders: string[], onName: (rel: string) => void, onError: (e: Error) => void, onGap: () => void): { close(): void; ready: Promise<void> } {
    let closed = false;
    let ch: { close(): void } | undefined;
    let timer: NodeJS.Timeout | undefined;
    let inPlace!: () => void;
    const ready = new Promise<void>((r) => (inPlace = r));
    const open = async () => {
      const c = await this.ssh.spawn(this.args('watch'));
      if (closed) return c.close();
      ch = c;
      let buf = '';
      let stderr = '';
      c.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-2000)));
      c.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        const parts = buf.split('\0');
        buf = parts.pop()!;
        // An empty record: the watch is in place (at its start, or again after it was lost): what changed before it
        // is found by a listing.
        for (const p of parts) {
          if (p) onName(p);
          else {
            onGap();
            inPlace();
          }
        }
      });
      c.on('error', () => {});
      c.on('close', () => {
        if (closed) return;
        if (stderr.trim()) onError(new Error(`the watch on ${this.m.target} ended: ${stderr.trim()}`));
        again();
      });
    };
    const again = () => {
      timer = setTimeout(() => open().catch(again), REWATCH_MS);
    };
    open().catch((e) => {
      onError(e as Error);
      again();
    });
    return {
      ready,
      close: () => {
        closed = true;
        clearTimeout(timer);
        ch?.close();
        inPlace();
      },
    };
  }
}
