/**
 * A workspace that a client serves (`workspaceFrom: "client"`), as the broker uses it:
 * - ClientSftp: the broker holds the client's SFTP session itself. It opens it (INIT, VERSION: which says whether
 *   the client has the snapshot feed, hosts/snapshotFeed.ts), then carries the GPU host's sshfs on it, renumbering
 *   request ids so that the broker's own requests can share the session. The host's INIT is answered with the
 *   client's VERSION. Every request still goes through the client's guard (confined to its workspace).
 * - ClientSide: the snapshot mount's view of such a workspace (hosts/workspaceSide.ts): listings and the watch
 *   through the feed's extensions; small files read with SFTP (OPEN, READ, CLOSE, READLINK; many at once) and
 *   written as one POSIX tar stream into the host's cache. The broker only passes the bytes on; nothing is kept.
 */
import { posix } from 'node:path';
import type { Duplex } from 'node:stream';
import { onExit, type RemoteExec } from './ssh.ts';
import { PacketFramer, SSH_FXP } from './sftpGuard.ts';
import { EXT_LIST, EXT_STAT, EXT_WATCH, SNAPSHOT_EXTENSION } from './snapshotFeed.ts';
import { parseTreeRecords, tarEntry, TAR_END, type Tree } from './snapshotPlan.ts';
import { extractArgs, type WorkspaceSide } from './workspaceSide.ts';

const FXP_VERSION = 2;
const FXP_HANDLE = 102;
const FXP_DATA = 103;
const FXP_NAME = 104;
const FXP_EXTENDED_REPLY = 201;
const FX_EOF = 1;
/** Largest packet taken from the client (a listing comes in pages of snapshotFeed.ts LIST_PAGE). */
const MAX_CLIENT_PACKET = 16 << 20;
/** How long the client may take to answer INIT. */
const INIT_MS = 30_000;
/** Files read at once while the host's cache is filled. */
const READ_AHEAD = 32;
const READ_CHUNK = 256 << 10;

/**
 * Splits the client's stream into packets. Chunks are kept as they come until a packet is whole (one copy per
 * packet, however many chunks it spans); a packet over MAX_CLIENT_PACKET ends the stream.
 */
class ClientFramer {
  private chunks: Buffer[] = [];
  private have = 0;
  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.have += chunk.length;
    const out: Buffer[] = [];
    while (this.have >= 4) {
      const head = this.chunks[0].length >= 4 ? this.chunks[0] : Buffer.concat(this.chunks);
      const len = head.readUInt32BE(0);
      if (len < 1 || len > MAX_CLIENT_PACKET) throw new Error(`bad SFTP packet length ${len} from the client`);
      if (this.have < 4 + len) break;
      const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.have);
      out.push(all.subarray(0, 4 + len));
      const rest = all.subarray(4 + len);
      this.chunks = rest.length ? [rest] : [];
      this.have = rest.length;
    }
    return out;
  }
}

function sftpString(b: Buffer | string): Buffer {
  const data = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
  const out = Buffer.alloc(4 + data.length);
  out.writeUInt32BE(data.length, 0);
  data.copy(out, 4);
  return out;
}

function readSftpString(p: Buffer, off: number): [Buffer, number] {
  if (off + 4 > p.length) throw new Error('truncated SFTP packet from the client');
  const n = p.readUInt32BE(off);
  if (off + 4 + n > p.length) throw new Error('truncated SFTP packet from the client');
  return [p.subarray(off + 4, off + 4 + n), off + 4 + n];
}

/** An SFTP error answer, as an Error with the status code. */
class SftpStatus extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message || `SFTP status ${code}`);
    this.code = code;
  }
}

type Pending = { host: number } | { resolve: (p: Buffer) => void; reject: (e: Error) => void };

export class ClientSftp {
  private readonly client: Duplex;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private version?: Buffer;
  private extensions = new Set<string>();
  private host?: Duplex;
  private ended = false;
  private onVersion?: (v: Buffer) => void;
  private hostPaused = false;
  private clientPaused = false;

  constructor(client: Duplex) {
    this.client = client;
    const framer = new ClientFramer();
    client.on('data', (chunk: Buffer) => {
      let packets: Buffer[];
      try {
        packets = framer.push(chunk);
      } catch {
        client.destroy();
        return;
      }
      for (const p of packets) this.fromClient(p);
    });
    client.once('end', () => this.end());
    client.once('close', () => this.end());
  }

  /** Opens the session; resolves with whether the client has the snapshot feed. */
  async init(): Promise<boolean> {
    const init = Buffer.alloc(9);
    init.writeUInt32BE(5, 0);
    init.writeUInt8(SSH_FXP.INIT, 4);
    init.writeUInt32BE(3, 5);
    let timer: NodeJS.Timeout | undefined;
    const v = await new Promise<Buffer>((resolve, reject) => {
      this.onVersion = resolve;
      timer = setTimeout(() => reject(new Error(`the client did not start its SFTP session within ${INIT_MS / 1000} s`)), INIT_MS);
      this.client.once('close', () => reject(new Error('the client closed its workspace stream before serving it')));
      this.client.write(init);
    }).finally(() => clearTimeout(timer));
    this.version = v;
    for (let off = 9; off < v.length; ) {
      const [k, next] = readSftpString(v, off);
      const [, after] = readSftpString(v, next);
      this.extensions.add(k.toString('latin1'));
      off = after;
    }
    return this.extensions.has(SNAPSHOT_EXTENSION);
  }

  /** Carries `host` (the host's `sshfs -o passive` channel) on this session until either ends. */
  attachHost(host: Duplex): void {
    this.host = host;
    const framer = new PacketFramer();
    host.on('data', (chunk: Buffer) => {
      let packets: Buffer[];
      try {
        packets = framer.push(chunk);
      } catch {
        host.destroy();
        return;
      }
      for (const p of packets) {
        if (p.readUInt8(4) === SSH_FXP.INIT) {
          host.write(this.version!);
          continue;
        }
        if (p.length < 9) continue;
        const id = this.take();
        this.pending.set(id, { host: p.readUInt32BE(5) });
        p.writeUInt32BE(id, 5);
        if (!this.client.write(p) && !this.hostPaused) {
          this.hostPaused = true;
          host.pause();
          this.client.once('drain', () => {
            this.hostPaused = false;
            host.resume();
          });
        }
      }
    });
  }

  private take(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = (this.nextId + 1) >>> 0 || 1;
      if (!this.pending.has(id)) return id;
    }
  }

  private fromClient(p: Buffer): void {
    const type = p.readUInt8(4);
    if (type === FXP_VERSION) {
      this.onVersion?.(Buffer.from(p));
      this.onVersion = undefined;
      return;
    }
    if (p.length < 9) return;
    const id = p.readUInt32BE(5);
    const w = this.pending.get(id);
    if (!w) return;
    this.pending.delete(id);
    if ('host' in w) {
      p.writeUInt32BE(w.host, 5);
      if (this.host && !this.host.write(p) && !this.clientPaused) {
        this.clientPaused = true;
        this.client.pause();
        this.host.once('drain', () => {
          this.clientPaused = false;
          this.client.resume();
        });
      }
    } else w.resolve(p);
  }

  /** Sends a request of `type` whose body (after the id) is `body`; resolves with the answer packet. */
  request(type: number, body: Buffer): Promise<Buffer> {
    if (this.ended) return Promise.reject(new Error('the client that serves the workspace has gone'));
    return new Promise((resolve, reject) => {
      const id = this.take();
      this.pending.set(id, { resolve, reject });
      const head = Buffer.alloc(9);
      head.writeUInt32BE(5 + body.length, 0);
      head.writeUInt8(type, 4);
      head.writeUInt32BE(id, 5);
      this.client.write(Buffer.concat([head, body]));
    });
  }

  /** An extension call; resolves with its answer's data. */
  async extended(name: string, data: Buffer = Buffer.alloc(0)): Promise<Buffer> {
    return dataOf(await this.request(SSH_FXP.EXTENDED, Buffer.concat([sftpString(name), sftpString(data)])), FXP_EXTENDED_REPLY);
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const w of this.pending.values()) if (!('host' in w)) w.reject(new Error('the client that serves the workspace has gone'));
    this.pending.clear();
    this.host?.destroy();
  }
}

/** The payload after the id of an answer of type `want`; an SFTP status answer is thrown as SftpStatus. */
function dataOf(p: Buffer, want: number): Buffer {
  const type = p.readUInt8(4);
  if (type === want) return p.subarray(9);
  if (type === SSH_FXP.STATUS) {
    const code = p.readUInt32BE(9);
    const msg = p.length >= 17 ? readSftpString(p, 13)[0].toString('utf8') : '';
    throw new SftpStatus(code, msg);
  }
  throw new Error(`unexpected SFTP answer type ${type}`);
}

export class ClientSide implements WorkspaceSide {
  private readonly sftp: ClientSftp;
  /** The workspace's path as the client's SFTP session names it. */
  private readonly root: string;

  constructor(sftp: ClientSftp, root: string) {
    this.sftp = sftp;
    this.root = root;
  }

  async walk(): Promise<Tree> {
    // Pages: the first byte says whether more follow; a page may end inside a record.
    const pages: Buffer[] = [];
    for (let offset = 0; ; ) {
      const page = await this.sftp.extended(EXT_LIST, Buffer.from(String(offset), 'latin1'));
      if (!page.length) throw new Error('the client sent an empty page of its workspace listing');
      pages.push(page.subarray(1));
      offset += page.length - 1;
      if (page[0] !== 0x31 /* "1": more */) break;
    }
    return parseTreeRecords(Buffer.concat(pages).toString('utf8'));
  }

  async entries(names: string[]): Promise<Tree> {
    if (!names.length) return new Map();
    return parseTreeRecords((await this.sftp.extended(EXT_STAT, Buffer.from(names.map((n) => `${n}\0`).join(''), 'utf8'))).toString('utf8'));
  }

  async sendTar(ssh: RemoteExec, paths: string[], dir: string): Promise<void> {
    if (!paths.length) return;
    const ch = await ssh.spawn(extractArgs(dir));
    let code: number | null = null;
    let stderr = '';
    onExit(ch, (e) => (code = e.code));
    ch.on('error', () => {});
    const closed = new Promise((resolve) => ch.once('close', resolve));
    ch.resume();
    ch.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-2000)));
    let failed: Error | undefined;
    try {
      for await (const b of this.tar(paths)) if (!ch.write(b)) await new Promise((r) => ch.once('drain', r));
      ch.end();
    } catch (e) {
      failed = e as Error;
      ch.close();
    }
    await closed;
    if (failed) throw failed;
    if (code !== 0) throw new Error(`sending the workspace's small files failed (tar exit ${code}): ${stderr.trim()}`);
  }

  /**
   * `paths` as a POSIX tar stream, with the entries as they are now (one that is gone by now is left out): files
   * are read many at a time ahead of the one written, and written in order.
   */
  async *tar(paths: string[]): AsyncGenerator<Buffer> {
    const now = await this.entries(paths);
    const list = paths.filter((p) => now.has(p));
    const reads: Array<Promise<Buffer[] | undefined>> = [];
    const start = (i: number) => {
      if (i < list.length) reads[i] = this.entryTar(list[i], now).catch(() => undefined);
    };
    for (let i = 0; i < READ_AHEAD; i++) start(i);
    for (let i = 0; i < list.length; i++) {
      const parts = await reads[i];
      start(i + READ_AHEAD);
      delete reads[i];
      if (parts) yield* parts;
    }
    yield TAR_END;
  }

  /** One entry of the tar: a folder, a symlink (its text read), or a file (its bytes read through the guard). */
  private async entryTar(rel: string, now: Tree): Promise<Buffer[]> {
    const e = now.get(rel)!;
    const path = posix.join(this.root, rel);
    if (e.type === 'd') return tarEntry({ path: rel, type: 'd', mode: e.mode ?? 0o755, mtimeMs: e.mtimeMs });
    if (e.type === 'l') {
      const name = dataOf(await this.sftp.request(SSH_FXP.READLINK, sftpString(path)), FXP_NAME);
      // NAME: count, then filename, longname, attrs; the link's text is the first filename.
      const [target] = readSftpString(name, 4);
      return tarEntry({ path: rel, type: 'l', mode: 0o777, mtimeMs: e.mtimeMs, link: target.toString('utf8') });
    }
    if (e.type !== 'f') throw new Error(`not a file: ${rel}`);
    const open = Buffer.alloc(8);
    open.writeUInt32BE(1 /* READ */, 0);
    const handle = readSftpString(dataOf(await this.sftp.request(SSH_FXP.OPEN, Buffer.concat([sftpString(path), open])), FXP_HANDLE), 0)[0];
    const chunks: Buffer[] = [];
    let got = 0;
    try {
      // Read up to the size listed (a file that grew since is found changed by the watch's first listing, and sent
      // again), or to its end if it shrank; the header says what was read.
      while (got < e.size) {
        const at = Buffer.alloc(12);
        at.writeBigUInt64BE(BigInt(got), 0);
        at.writeUInt32BE(Math.min(READ_CHUNK, e.size - got), 8);
        let data: Buffer;
        try {
          data = readSftpString(dataOf(await this.sftp.request(SSH_FXP.READ, Buffer.concat([sftpString(handle), at])), FXP_DATA), 0)[0];
        } catch (err) {
          if (err instanceof SftpStatus && err.code === FX_EOF) break;
          throw err;
        }
        chunks.push(Buffer.from(data));
        got += data.length;
      }
    } finally {
      void this.sftp.request(SSH_FXP.CLOSE, sftpString(handle)).catch(() => undefined);
    }
    return tarEntry({ path: rel, type: 'f', mode: e.mode ?? 0o644, mtimeMs: e.mtimeMs, data: Buffer.concat(chunks, got) });
  }

  watch(_folders: string[], onName: (rel: string) => void, onError: (e: Error) => void, onGap: () => void): { close(): void; ready: Promise<void> } {
    let closed = false;
    let inPlace!: () => void;
    const ready = new Promise<void>((r) => (inPlace = r));
    const loop = async () => {
      while (!closed) {
        let data: Buffer;
        try {
          data = await this.sftp.extended(EXT_WATCH);
        } catch (e) {
          if (!closed) onError(new Error(`the watch on the client's workspace ended: ${(e as Error).message}`));
          inPlace();
          return;
        }
        if (closed) return;
        // An empty record: the watch is in place (at its start, or again after it failed): a listing finds what
        // changed before.
        for (const p of data.toString('utf8').split('\0').slice(0, -1)) {
          if (p) onName(p);
          else {
            onGap();
            inPlace();
          }
        }
      }
    };
    void loop();
    return {
      ready,
      close: () => {
        closed = true;
        inPlace();
      },
    };
  }
}
