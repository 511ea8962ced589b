/**
 * The client's side of an exec stream (wire in protocol/interactive.ts), shared by the CLI (`gpurun exec`, `run -it`,
 * `shell`) and the VS Code terminals: sends input, window sizes and pings, hands output to its owner, and when the
 * connection to the broker drops, attaches again to the same session (the process kept running) and goes on from the
 * byte it had. Input is kept until the broker says it has taken it (its `session` and `pong` frames count stdin
 * bytes): what was sent into a connection that then dropped, or typed while disconnected, is sent again once attached.
 */
import type { Duplex } from 'node:stream';
import type { BrokerClient } from './client.ts';
import { GpurunError, type ErrorCode } from './errors.ts';
import { ATTACH_HEADER, dataFrames, encodeExecRequest, encodeFrame, EXEC_HEADER, EXEC_UPGRADE, FRAME, FrameReader, type ExecExit, type ExecRequest, type InputAck, type SessionInfo } from './interactive.ts';

/** How often the client asks whether the broker is there, and after how long without a word it takes the link for dead. */
export const PING_MS = 5_000;
export const DEAD_MS = 15_000;
/** The most input kept until the broker has taken it (bytes); more is dropped, with a notice. */
const MAX_UNACKED = 1 << 20;

export interface ExecIo {
  /** Output; false when the receiver is full (then `drained` says when it can take more). */
  stdout(data: Buffer): boolean | void;
  stderr(data: Buffer): boolean | void;
  drained?(): Promise<void>;
  /** A line for the user about the connection (lost, attached again). No newline at the end. */
  notice(text: string): void;
}

export class ExecStream {
  private readonly client: BrokerClient;
  private readonly jobId: string;
  private readonly req: ExecRequest;
  private readonly io: ExecIo;
  /** The connection, once its session frame came (input goes straight to it then). */
  private socket: Duplex | undefined;
  private info: SessionInfo | undefined;
  /** Output bytes received (stdout and stderr), where a reattach starts. */
  private offset = 0;
  /** Input the broker may not have yet: chunks from stdin byte `start` on, and whether stdin has ended here. */
  private unacked: Array<{ start: number; data: Buffer }> = [];
  private unackedBytes = 0;
  private inputTotal = 0;
  private eof = false;
  private dropped = false;
  private size: { rows: number; cols: number } | undefined;
  private hungUp = false;

  constructor(client: BrokerClient, jobId: string, req: ExecRequest, io: ExecIo) {
    this.client = client;
    this.jobId = jobId;
    this.req = req;
    this.io = io;
  }

  /**
   * Runs the stream to its end: resolves with how the process ended (null when this side hung up), rejects with the
   * broker's error (refused, could not start, session gone) or E_UNREACHABLE when the broker stayed away past the
   * session's grace period.
   */
  async run(): Promise<ExecExit | null> {
    const path = `/v1/jobs/${encodeURIComponent(this.jobId)}/exec`;
    let sock = await this.client.upgrade(path, EXEC_UPGRADE, `the exec in job ${this.jobId}`, { [EXEC_HEADER]: encodeExecRequest(this.req) });
    for (;;) {
      const end = await this.pump(sock);
      if (end !== 'dropped') return end;
      if (this.hungUp) return null;
      if (!this.info) throw new GpurunError('E_UNREACHABLE', 'the connection to the broker closed before the process ended', { hint: `The process may still run in the job; gpurun exec ${this.jobId} again to look.` });
      this.io.notice('the connection to the broker dropped; the process runs on in the job, attaching again…');
      sock = await this.reattach(path, this.info);
      if (this.hungUp) {
        sock.end(encodeFrame(FRAME.hangup));
        return null;
      }
      this.io.notice('attached again');
    }
  }

  write(data: Buffer): void {
    if (this.unackedBytes + data.length > MAX_UNACKED) {
      if (!this.dropped) this.io.notice(`input past ${MAX_UNACKED} bytes not yet taken by the broker was dropped`);
      this.dropped = true;
      return;
    }
    this.unacked.push({ start: this.inputTotal, data });
    this.unackedBytes += data.length;
    this.inputTotal += data.length;
    if (this.socket) for (const f of dataFrames(FRAME.stdin, data)) this.socket.write(f);
  }

  end(): void {
    this.eof = true;
    this.socket?.write(encodeFrame(FRAME.stdinEnd));
  }

  /** The broker has taken input up to `a.input`: forget it. */
  private ack(a: InputAck): void {
    while (this.unacked.length && this.unacked[0].start + this.unacked[0].data.length <= a.input) this.unackedBytes -= this.unacked.shift()!.data.length;
  }

  /** A (new) connection's session frame: send what the broker has not taken, then go on with it. */
  private attached(sock: Duplex, info: SessionInfo): void {
    this.info = info;
    this.ack(info);
    for (const c of this.unacked) {
      const from = Math.max(0, info.input - c.start);
      for (const f of dataFrames(FRAME.stdin, c.data.subarray(from))) sock.write(f);
    }
    if (this.eof && !info.eof) sock.write(encodeFrame(FRAME.stdinEnd));
    if (this.size) sock.write(encodeFrame(FRAME.resize, JSON.stringify(this.size)));
    this.socket = sock;
  }

  resize(rows: number, cols: number): void {
    this.size = { rows, cols };
    if (this.socket) this.socket.write(encodeFrame(FRAME.resize, JSON.stringify(this.size)));
  }

  /** Leaves on purpose: the process gets a hang-up now (a closed terminal), and run() resolves with null. */
  hangup(): void {
    this.hungUp = true;
    this.current?.end(encodeFrame(FRAME.hangup));
  }

  /** The connection being read, session frame or not. */
  private current: Duplex | undefined;

  private async reattach(path: string, info: SessionInfo): Promise<Duplex> {
    const deadline = Date.now() + info.graceMs;
    let wait = 250;
    for (;;) {
      if (this.hungUp) throw new GpurunError('E_UNREACHABLE', 'hung up while disconnected');
      try {
        return await this.client.upgrade(path, EXEC_UPGRADE, `the exec in job ${this.jobId}`, { [ATTACH_HEADER]: encodeExecRequest({ session: info.id, offset: this.offset }) });
      } catch (e) {
        const code = (e as GpurunError).code;
        if (code !== 'E_UNREACHABLE' && code !== 'E_TIMEOUT') throw new GpurunError(code ?? 'E_INTERNAL', `the connection to the broker dropped and the session could not be attached again: ${(e as Error).message}`, (e as GpurunError).hint ? { hint: (e as GpurunError).hint! } : {});
        if (Date.now() > deadline) throw new GpurunError('E_UNREACHABLE', `the broker stayed unreachable for ${Math.round(info.graceMs / 1000)} s: the process in the job was hung up`, { hint: (e as Error).message });
      }
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 2_000);
    }
  }

  /** Reads frames from `sock` until the last one (the end) or until the connection drops ('dropped'). */
  private pump(sock: Duplex): Promise<ExecExit | null | 'dropped'> {
    this.socket = undefined;
    this.current = sock;
    return new Promise((resolve, reject) => {
      const reader = new FrameReader();
      let heard = Date.now();
      let end: ExecExit | { error: { code: string; message: string; hint?: string } } | undefined;
      const ping = setInterval(() => {
        if (Date.now() - heard > DEAD_MS) sock.destroy();
        else sock.write(encodeFrame(FRAME.ping));
      }, PING_MS);
      const out = (w: ExecIo['stdout'], data: Buffer) => {
        this.offset += data.length;
        if (w.call(this.io, data) === false && this.io.drained) {
          sock.pause();
          void this.io.drained().then(() => sock.resume());
        }
      };
      sock.on('data', (chunk: Buffer) => {
        heard = Date.now();
        try {
          for (const f of reader.push(chunk)) {
            if (f.type === FRAME.stdout) out(this.io.stdout, f.data);
            else if (f.type === FRAME.stderr) out(this.io.stderr, f.data);
            else if (f.type === FRAME.session) this.attached(sock, JSON.parse(f.data.toString('utf8')) as SessionInfo);
            else if (f.type === FRAME.pong && f.data.length) this.ack(JSON.parse(f.data.toString('utf8')) as InputAck);
            else if (f.type === FRAME.exit) end = JSON.parse(f.data.toString('utf8')) as ExecExit;
            else if (f.type === FRAME.error) end = { error: JSON.parse(f.data.toString('utf8')) as { code: string; message: string; hint?: string } };
          }
        } catch (err) {
          end = { error: { code: 'E_PROTOCOL', message: `the broker's exec stream is not understood: ${(err as Error).message}` } };
          sock.destroy();
        }
      });
      sock.on('error', () => {});
      sock.once('close', () => {
        clearInterval(ping);
        if (this.socket === sock) this.socket = undefined;
        if (this.current === sock) this.current = undefined;
        if (!end) resolve(this.hungUp ? null : 'dropped');
        else if ('error' in end) reject(new GpurunError(end.error.code as ErrorCode, end.error.message, end.error.hint ? { hint: end.error.hint } : {}));
        else resolve(end);
      });
    });
  }
}
