/**
 * Confines an SFTP session to one folder. OpenSSH's sftp-server has no chroot of its own (that needs root and
 * sshd), so every request that names a path is checked here before it reaches sftp-server: a path outside the
 * folder, through `..` or through a symlink that leads out, is answered PERMISSION_DENIED and never forwarded.
 * Handle-based requests (read, write, readdir, close) pass: their handles come only from checked opens.
 * A path is checked only while no request that changes names (rename, symlink, remove, mkdir, …) is in flight in
 * any session of the same folder in this process: sshfs pipelines requests, and a check made before an earlier
 * rename or symlink has run would pass a path that the server then resolves through the new symlink.
 * Read-only sessions also run sftp-server with -R, which refuses every write itself.
 *
 * Pure parts (packet framing, the path check, the decision per request) are unit-tested; `serveSftp` wires them
 * between a byte stream (an SSH channel running `sshfs -o passive`, or stdin/stdout) and a local sftp-server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, posix, sep } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { FEED_EXTENSIONS, SNAPSHOT_EXTENSION, SnapshotFeed } from './snapshotFeed.ts';

export const SSH_FXP = {
  INIT: 1, OPEN: 3, CLOSE: 4, READ: 5, WRITE: 6, LSTAT: 7, FSTAT: 8, SETSTAT: 9, FSETSTAT: 10, OPENDIR: 11, READDIR: 12,
  REMOVE: 13, MKDIR: 14, RMDIR: 15, REALPATH: 16, STAT: 17, RENAME: 18, READLINK: 19, SYMLINK: 20, STATUS: 101, EXTENDED: 200,
} as const;
const SSH_FX_PERMISSION_DENIED = 3;
const SSH_FX_OP_UNSUPPORTED = 8;
/** Larger than any packet sshfs sends (64 KiB writes) with room to spare. */
const MAX_PACKET = 1 << 20;

/** Which path arguments a request has, and whether the last component is followed if it is a symlink. */
const PATH_ARGS: Record<number, Array<{ follow: boolean }>> = {
  [SSH_FXP.OPEN]: [{ follow: true }],
  [SSH_FXP.LSTAT]: [{ follow: false }],
  [SSH_FXP.SETSTAT]: [{ follow: true }],
  [SSH_FXP.OPENDIR]: [{ follow: true }],
  [SSH_FXP.REMOVE]: [{ follow: false }],
  [SSH_FXP.MKDIR]: [{ follow: false }],
  [SSH_FXP.RMDIR]: [{ follow: false }],
  [SSH_FXP.REALPATH]: [{ follow: true }],
  [SSH_FXP.STAT]: [{ follow: true }],
  [SSH_FXP.RENAME]: [{ follow: false }, { follow: false }],
  [SSH_FXP.READLINK]: [{ follow: false }],
  // OpenSSH sends (target, linkpath); both must name places inside (the target taken from the root, not from the
  // link's folder: stricter than needed). Following the link later is checked again then.
  [SSH_FXP.SYMLINK]: [{ follow: false }, { follow: false }],
};
const EXTENDED_PATH_ARGS: Record<string, Array<{ follow: boolean }>> = {
  'posix-rename@openssh.com': [{ follow: false }, { follow: false }],
  'hardlink@openssh.com': [{ follow: false }, { follow: false }],
  'statvfs@openssh.com': [{ follow: true }],
  'lsetstat@openssh.com': [{ follow: false }],
};
/** Requests that change names in the tree: later path checks wait until they have been answered. */
const CHANGES_NAMES = new Set<number>([SSH_FXP.REMOVE, SSH_FXP.MKDIR, SSH_FXP.RMDIR, SSH_FXP.RENAME, SSH_FXP.SYMLINK]);
const EXTENDED_CHANGES_NAMES = new Set(['posix-rename@openssh.com', 'hardlink@openssh.com']);
/** Extensions that take only handles or nothing. Any other extension is refused. */
const EXTENDED_HANDLE_ONLY = new Set(['fstatvfs@openssh.com', 'fsync@openssh.com', 'limits@openssh.com', 'copy-data']);

/** Splits a byte stream into whole SFTP packets (each with its 4-byte length). */
export class PacketFramer {
  private buf: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Buffer[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len < 1 || len > MAX_PACKET) throw new Error(`bad SFTP packet length ${len}`);
      if (this.buf.length < 4 + len) break;
      out.push(this.buf.subarray(0, 4 + len));
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }
}

function readString(p: Buffer, off: number): [Buffer, number] {
  if (off + 4 > p.length) throw new Error('truncated SFTP packet');
  const n = p.readUInt32BE(off);
  if (off + 4 + n > p.length) throw new Error('truncated SFTP packet');
  return [p.subarray(off + 4, off + 4 + n), off + 4 + n];
}

/** The name of an EXTENDED request, or undefined for any other packet. */
export function extendedName(p: Buffer): string | undefined {
  if (p.length < 13 || p.readUInt8(4) !== SSH_FXP.EXTENDED) return undefined;
  return readString(p, 9)[0].toString('latin1');
}

/** An SSH_FXP_EXTENDED_REPLY: the id, then the extension's data as it is. */
export function extendedReplyPacket(id: number, data: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUInt32BE(5 + data.length, 0);
  head.writeUInt8(201, 4);
  head.writeUInt32BE(id, 5);
  return Buffer.concat([head, data]);
}

/** sftp-server's VERSION with the snapshot feed's extension (hosts/snapshotFeed.ts) added to those it names. */
export function withFeedExtension(version: Buffer): Buffer {
  const pair = (k: string, v: string) => {
    const kb = Buffer.from(k, 'latin1');
    const vb = Buffer.from(v, 'latin1');
    const b = Buffer.alloc(8 + kb.length + vb.length);
    b.writeUInt32BE(kb.length, 0);
    kb.copy(b, 4);
    b.writeUInt32BE(vb.length, 4 + kb.length);
    vb.copy(b, 8 + kb.length);
    return b;
  };
  const out = Buffer.concat([version, pair(SNAPSHOT_EXTENSION, '1')]);
  out.writeUInt32BE(out.length - 4, 0);
  return out;
}

export function statusPacket(id: number, code: number, message: string): Buffer {
  const msg = Buffer.from(message, 'utf8');
  const body = Buffer.alloc(1 + 4 + 4 + 4 + msg.length + 4);
  let o = 0;
  o = body.writeUInt8(SSH_FXP.STATUS, o);
  o = body.writeUInt32BE(id, o);
  o = body.writeUInt32BE(code, o);
  o = body.writeUInt32BE(msg.length, o);
  o += msg.copy(body, o);
  body.writeUInt32BE(0, o);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

/** Real path of `p`, resolving symlinks in the part that exists; the part that does not is appended as is. */
function realpathExisting(p: string): string {
  let head = p;
  const tail: string[] = [];
  for (;;) {
    try {
      return posix.join(realpathSync(head), ...tail.reverse());
    } catch {
      const parent = dirname(head);
      if (parent === head) return p;
      tail.push(head.slice(parent.length + (parent.endsWith(sep) ? 0 : 1)));
      head = parent;
    }
  }
}

function within(p: string, root: string): boolean {
  return p === root || p.startsWith(root.endsWith('/') ? root : `${root}/`);
}

/**
 * Whether `path` (as the client sent it: absolute, or relative to the root) stays inside `root`, symlinks included.
 * With `follow`, a symlink as the last component is followed; without, only its folder must be inside.
 */
export function confined(root: string, realRoot: string, path: string, follow: boolean): boolean {
  if (path.includes('\0')) return false;
  const abs = posix.resolve(root, path);
  if (!within(abs, root)) return false;
  if (abs === root) return true;
  const real = follow ? realpathExisting(abs) : posix.join(realpathExisting(dirname(abs)), posix.basename(abs));
  return within(real, realRoot);
}

/** The decision for one client packet: forward it, or answer it with this packet instead. */
export function checkRequest(packet: Buffer, root: string, realRoot: string): { forward: true } | { forward: false; reply: Buffer; why: string } {
  const type = packet.readUInt8(4);
  if (type === SSH_FXP.INIT) return { forward: true };
  const id = packet.readUInt32BE(5);
  let specs = PATH_ARGS[type];
  let off = 9;
  if (type === SSH_FXP.EXTENDED) {
    const [name, next] = readString(packet, off);
    const ext = name.toString('latin1');
    off = next;
    if (EXTENDED_HANDLE_ONLY.has(ext)) return { forward: true };
    specs = EXTENDED_PATH_ARGS[ext];
    if (!specs) return { forward: false, reply: statusPacket(id, SSH_FX_OP_UNSUPPORTED, `${ext} is not allowed by gpurun`), why: `extension ${ext}` };
  }
  if (!specs) return { forward: true };
  for (const spec of specs) {
    const [raw, next] = readString(packet, off);
    off = next;
    const path = raw.toString('utf8');
    if (!confined(root, realRoot, path, spec.follow)) {
      return { forward: false, reply: statusPacket(id, SSH_FX_PERMISSION_DENIED, `outside the workspace: ${path}`), why: path };
    }
  }
  return { forward: true };
}

/** What a client packet asks for: whether a path in it is checked, and whether it changes names in the tree. */
export function requestKind(packet: Buffer): { id: number; checksPath: boolean; changesNames: boolean } {
  const type = packet.readUInt8(4);
  if (type === SSH_FXP.INIT) return { id: -1, checksPath: false, changesNames: false };
  const id = packet.readUInt32BE(5);
  if (type !== SSH_FXP.EXTENDED) return { id, checksPath: !!PATH_ARGS[type], changesNames: CHANGES_NAMES.has(type) };
  const ext = readString(packet, 9)[0].toString('latin1');
  return { id, checksPath: !EXTENDED_HANDLE_ONLY.has(ext), changesNames: EXTENDED_CHANGES_NAMES.has(ext) };
}

/** Name-changing requests in flight per real root, across the sessions of this process. */
interface NameGate {
  inFlight: number;
  waiters: Set<() => void>;
}
const gates = new Map<string, NameGate>();

function gateFor(realRoot: string): NameGate {
  let g = gates.get(realRoot);
  if (!g) gates.set(realRoot, (g = { inFlight: 0, waiters: new Set() }));
  return g;
}

function gateDone(g: NameGate, n: number): void {
  g.inFlight -= n;
  if (g.inFlight > 0) return;
  const ws = [...g.waiters];
  g.waiters.clear();
  for (const w of ws) w();
}

export function findSftpServer(): string {
  const candidates = [process.env.GPURUN_SFTP_SERVER, '/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server', '/usr/libexec/sftp-server', '/usr/lib/ssh/sftp-server'];
  for (const c of candidates) if (c && existsSync(c)) return c;
  throw new Error('no OpenSSH sftp-server found (install openssh-server or openssh-sftp-server, or set GPURUN_SFTP_SERVER)');
}

export interface SftpSession {
  server: ChildProcess;
  /** Resolves when the session ends (either side closed). */
  done: Promise<void>;
  close(): void;
}

/**
 * Serves SFTP for `root` between `input` (the client's requests) and `output` (the answers), confined as above.
 * `onDenied` hears each refused request (for the log).
 */
export function serveSftp(root: string, input: Readable, output: Writable, opts: { readOnly: boolean; onDenied?: (why: string) => void; feed?: boolean }): SftpSession {
  if (!isAbsolute(root)) throw new Error(`the workspace must be an absolute path: ${root}`);
  const realRoot = realpathSync(root);
  const server = spawn(findSftpServer(), ['-e', '-l', 'ERROR', ...(opts.readOnly ? ['-R'] : [])], { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] });
  const fromClient = new PacketFramer();
  const fromServer = new PacketFramer();
  const gate = gateFor(realRoot);
  /** Ids of this session's name-changing requests that sftp-server has not answered yet. */
  const mine = new Set<number>();
  const queue: Buffer[] = [];
  // The snapshot feed's extensions, for a client's session only (the broker asks; a host's sshfs never needs them).
  const feed = opts.feed ? new SnapshotFeed(root) : undefined;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    feed?.close();
    input.removeAllListeners('data');
    queue.length = 0;
    gate.waiters.delete(pump);
    if (mine.size) gateDone(gate, mine.size);
    mine.clear();
    server.stdin!.end();
    server.kill('SIGTERM');
    output.end();
  };
  // Forwards queued requests in order; stops at a path check while a name change is in flight (pump runs again
  // when the last one is answered).
  function pump(): void {
    try {
      forwardQueued();
    } catch (e) {
      opts.onDenied?.(`protocol error: ${(e as Error).message}`);
      close();
    }
  }
  function forwardQueued(): void {
    while (queue.length && !closed) {
      const p = queue[0];
      const k = requestKind(p);
      if (k.checksPath && gate.inFlight > 0) {
        gate.waiters.add(pump);
        return;
      }
      queue.shift();
      const ext = extendedName(p);
      if (feed && ext && FEED_EXTENSIONS.has(ext)) {
        answerFeed(p, ext);
        continue;
      }
      const d = checkRequest(p, root, realRoot);
      if (!d.forward) {
        opts.onDenied?.(d.why);
        output.write(d.reply);
        continue;
      }
      if (k.changesNames) {
        mine.add(k.id);
        gate.inFlight++;
      }
      server.stdin!.write(p);
    }
  }
  // Answered here, not by sftp-server; the answer may come after later requests' (SFTP matches them by id).
  function answerFeed(p: Buffer, ext: string): void {
    const id = p.readUInt32BE(5);
    const [, off] = readString(p, 9);
    const data = off + 4 <= p.length ? readString(p, off)[0] : Buffer.alloc(0);
    feed!.answer(ext, data).then(
      (reply) => !closed && output.write(extendedReplyPacket(id, reply)),
      (e) => !closed && output.write(statusPacket(id, 4 /* FAILURE */, (e as Error).message)),
    );
  }
  input.on('data', (chunk: Buffer) => {
    try {
      queue.push(...fromClient.push(chunk));
    } catch (e) {
      opts.onDenied?.(`protocol error: ${(e as Error).message}`);
      close();
      return;
    }
    pump();
  });
  server.stdout!.on('data', (chunk: Buffer) => {
    try {
      for (const p of fromServer.push(chunk)) {
        output.write(feed && p.readUInt8(4) === 2 /* VERSION */ ? withFeedExtension(p) : p);
        const id = p.length >= 9 && p.readUInt8(4) !== 2 /* VERSION */ ? p.readUInt32BE(5) : -1;
        if (mine.delete(id)) gateDone(gate, 1);
      }
    } catch {
      close();
    }
  });
  const done = new Promise<void>((resolve) => {
    server.on('close', () => {
      close();
      resolve();
    });
    server.on('error', () => {
      close();
      resolve();
    });
    input.on('end', close);
    input.on('close', close);
  });
  return { server, done, close };
}
