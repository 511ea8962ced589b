/**
 * Exec sessions that outlive their connection. The process in the job is held by the broker's side (the SSH channel
 * to the host, or the local child), not by the client's connection: when a client's connection drops without a
 * `hangup` frame, the process keeps running, its output is kept (the last REPLAY_BYTES), and a client that attaches
 * again with the session's id and the number of bytes it has gets the rest and goes on (wire in
 * protocol/interactive.ts). A session nobody attaches to within the grace period is hung up, as a closed terminal
 * would be; an ended session's last output and exit wait the same time for a client that lost them.
 *
 * What this does not survive: the broker itself restarting, or the broker's connection to the host dropping (the
 * process's SSH channel closes with it) — the process gets a hang-up then.
 */
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { dataFrames, encodeFrame, FRAME, FrameReader, REPLAY_BYTES, type SessionInfo } from '../protocol/interactive.ts';
import { size } from '../core/interactive.ts';
import type { ExecSession } from './targets.ts';

/** How long a detached session waits for its client (ms). */
export const REATTACH_GRACE_MS = 5 * 60_000;

interface Kept {
  type: typeof FRAME.stdout | typeof FRAME.stderr;
  data: Buffer;
  /** Offset of data's first byte in the session's output (stdout and stderr together). */
  start: number;
}

export class LiveSession {
  readonly id = randomBytes(16).toString('hex');
  readonly owner: string;
  readonly jobId: string;
  private readonly graceMs: number;
  private readonly forget: () => void;
  private process: ExecSession | undefined;
  private kept: Kept[] = [];
  private keptBytes = 0;
  private total = 0;
  private socket: Duplex | undefined;
  /** The exit or error frame, once the process has ended. */
  private final: Buffer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly closedFns: Array<() => void> = [];
  /** Input taken from clients: stdin bytes, and whether stdin has ended (a client resends what came after). */
  private taken = 0;
  private eof = false;
  private gone = false;

  constructor(owner: string, jobId: string, graceMs: number, forget: () => void) {
    this.owner = owner;
    this.jobId = jobId;
    this.graceMs = graceMs;
    this.forget = forget;
  }

  /** The process, once started; input that came before it is not possible (no socket is attached before). */
  started(p: ExecSession): void {
    this.process = p;
  }

  /** Output of the process: kept for a reattach, and sent to the attached client. */
  output(type: Kept['type'], data: Buffer): void {
    this.kept.push({ type, data, start: this.total });
    this.total += data.length;
    this.keptBytes += data.length;
    while (this.keptBytes - this.kept[0].data.length >= REPLAY_BYTES) this.keptBytes -= this.kept.shift()!.data.length;
    if (this.socket) for (const f of dataFrames(type, data)) this.socket.write(f);
  }

  /** The process ended (`frame`: its exit or error frame). The session stays a while for a client that lost it. */
  finish(frame: Buffer): void {
    this.final = frame;
    if (this.socket) {
      const s = this.socket;
      this.socket = undefined;
      s.end(frame);
      this.end();
    } else this.waitThen(() => this.end());
  }

  /**
   * Attaches `socket` (after the 101): the session frame, the output from `offset` on, then the stream. A socket
   * still attached (a connection the broker has not seen drop) is let go first.
   */
  attach(socket: Duplex, offset: number): void {
    if (this.gone) {
      socket.end(encodeFrame(FRAME.error, JSON.stringify({ code: 'E_GONE', message: 'the exec session has ended', hint: 'Look at the job: gpurun show JOB' })));
      return;
    }
    clearTimeout(this.timer);
    const old = this.socket;
    this.socket = undefined;
    old?.destroy();
    const info: SessionInfo = { id: this.id, graceMs: this.graceMs, input: this.taken, eof: this.eof };
    socket.write(encodeFrame(FRAME.session, JSON.stringify(info)));
    const from = Math.min(offset, this.total);
    const first = this.kept[0]?.start ?? this.total;
    if (from < first) socket.write(encodeFrame(FRAME.stderr, `\r\n[gpurun: ${first - from} bytes of output were lost while disconnected]\r\n`));
    for (const k of this.kept) {
      if (k.start + k.data.length <= from) continue;
      for (const f of dataFrames(k.type, k.data.subarray(Math.max(0, from - k.start)))) socket.write(f);
    }
    if (this.final) {
      socket.end(this.final);
      this.end();
      return;
    }
    this.socket = socket;
    const reader = new FrameReader();
    socket.on('data', (chunk: Buffer) => {
      if (this.socket !== socket) return;
      try {
        for (const f of reader.push(chunk)) this.input(socket, f.type, f.data);
      } catch (err) {
        socket.write(encodeFrame(FRAME.error, JSON.stringify({ code: 'E_BAD_REQUEST', message: `the exec stream broke the protocol: ${(err as Error).message}`, hint: 'Use the gpurun CLI of the same version as the broker.' })));
        this.hangup();
      }
    });
    socket.once('close', () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      // Dropped, not hung up: the process runs on until a client attaches again or the grace period ends.
      this.waitThen(() => this.hangup());
    });
  }

  private input(socket: Duplex, type: number, data: Buffer): void {
    const p = this.process;
    if (type === FRAME.ping) socket.write(encodeFrame(FRAME.pong, JSON.stringify({ input: this.taken, eof: this.eof })));
    else if (type === FRAME.hangup) this.hangup();
    else if (!p) return;
    else if (type === FRAME.stdin) {
      this.taken += data.length;
      p.write(data);
    } else if (type === FRAME.stdinEnd) {
      if (!this.eof) p.end();
      this.eof = true;
    }
    else if (type === FRAME.resize) {
      const s = JSON.parse(data.toString('utf8')) as { rows?: unknown; cols?: unknown };
      p.resize(size(s.rows, 'rows', 24), size(s.cols, 'cols', 80));
    }
  }

  /** Hangs the process up now (the client left on purpose, the token was revoked, nobody came back). */
  hangup(): void {
    this.process?.close();
    if (!this.final) this.end();
  }

  /** For the token watch (app.ts TokenStreams): a revoked token hangs the session up. */
  destroy(): void {
    this.hangup();
    this.socket?.destroy();
  }

  once(_event: 'close', fn: () => void): void {
    if (this.gone) fn();
    else this.closedFns.push(fn);
  }

  private waitThen(fn: () => void): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(fn, this.graceMs);
    this.timer.unref();
  }

  private end(): void {
    if (this.gone) return;
    this.gone = true;
    clearTimeout(this.timer);
    this.forget();
    for (const fn of this.closedFns.splice(0)) fn();
  }
}

/** The broker's exec sessions by id. */
export class ExecSessions {
  private readonly live = new Map<string, LiveSession>();
  private readonly graceMs: number;

  constructor(graceMs = REATTACH_GRACE_MS) {
    this.graceMs = graceMs;
  }

  create(owner: string, jobId: string): LiveSession {
    const s = new LiveSession(owner, jobId, this.graceMs, () => this.live.delete(s.id));
    this.live.set(s.id, s);
    return s;
  }

  /** The session `id` of `owner` in job `jobId`, if it is still there. */
  get(id: string, owner: string, jobId: string): LiveSession | undefined {
    const s = this.live.get(id);
    return s && s.owner === owner && s.jobId === jobId ? s : undefined;
  }
}
