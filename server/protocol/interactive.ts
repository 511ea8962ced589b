/**
 * The wire of `gpurun exec` and `gpurun forward`, shared by the broker and its clients. Pure.
 *
 * Exec: `GET /v1/jobs/ID/exec` with `Upgrade: gpurun-exec` and the request (ExecRequest) as base64url JSON in the
 * `x-gpurun-exec` header, so it is checked before the broker answers 101. After 101 both sides speak frames:
 * `[type: u8][length: u32 big-endian][payload]`. The client sends stdin, the end of stdin and window sizes; the
 * broker sends stdout, stderr (only without a TTY: a PTY joins them), then one `exit` frame, or an `error` frame.
 *
 * Reattach: the broker's first frame names the session (`session`: its id and how long it waits for a client). When
 * the connection drops without a `hangup` frame, the process keeps running and its output is kept (the last
 * REPLAY_BYTES); the client asks again with `x-gpurun-exec-attach` (the session and how many output bytes it has) and
 * gets the rest of the output, then the stream goes on. A client that wants the process hung up says `hangup`.
 * Clients send `ping` every few seconds and the broker answers `pong`: a client that hears nothing takes the
 * connection for dead and attaches again (a new attach takes the session over from a connection the broker still
 * holds).
 *
 * Forward: `GET /v1/jobs/ID/forward?port=N` with `Upgrade: gpurun-tcp`; after 101 the socket is one TCP connection
 * to port N of the job (a local listener opens one upgrade per connection it accepts, as kubectl port-forward does).
 */

export const EXEC_UPGRADE = 'gpurun-exec';
export const FORWARD_UPGRADE = 'gpurun-tcp';
/** The header that carries the ExecRequest (base64url of its JSON). */
export const EXEC_HEADER = 'x-gpurun-exec';
/** The header of a reattach (base64url of an AttachRequest's JSON), instead of EXEC_HEADER. */
export const ATTACH_HEADER = 'x-gpurun-exec-attach';
/** Output the broker keeps per session for a client that attaches again, in bytes (older output is lost then). */
export const REPLAY_BYTES = 1 << 20;

/** A reattach: the session (from its `session` frame) and the number of output bytes (stdout + stderr) received. */
export interface AttachRequest {
  session: string;
  offset: number;
}

/**
 * The `session` frame: the session's id, how long (ms) the process waits for a client after a drop, and how much of
 * the client's input the broker has taken (`input` bytes of stdin; `eof` once the end of stdin came). A client resends
 * what it sent past `input` (lost with the connection that dropped). `pong` frames carry the same two counts.
 */
export interface SessionInfo extends InputAck {
  id: string;
  graceMs: number;
}

/** How much input the broker has taken: `input` stdin bytes, and `eof` once the end of stdin came. */
export interface InputAck {
  input: number;
  eof: boolean;
}

/** What to run in the job. `command` is an argv array: it is never read by a shell on the way. */
export interface ExecRequest {
  command: string[];
  /** A pseudo-terminal end to end (stdin, window size, Ctrl+C, Ctrl+D as the terminal's own). */
  tty?: boolean;
  /** The terminal's size when `tty` (rows and columns, 1 to 10000). */
  rows?: number;
  cols?: number;
  /** The client's TERM, e.g. `xterm-256color` (letters, digits and `.+_-`). */
  term?: string;
  /** The output also goes into the job's log (the command of an interactive job, `gpurun run -it`). */
  log?: boolean;
}

/** How the process ended: its exit code, or the signal that killed it (code null then). */
export interface ExecExit {
  code: number | null;
  signal: string | null;
}

export const FRAME = {
  /** client → broker: bytes for the process's stdin. */
  stdin: 0,
  /** client → broker: stdin has ended (a pipe's end; in a PTY Ctrl+D is a byte like any other). */
  stdinEnd: 1,
  /** client → broker: JSON `{rows, cols}`, the terminal's new size. */
  resize: 2,
  /** broker → client: output (with a PTY: everything the terminal shows). */
  stdout: 3,
  stderr: 4,
  /** broker → client: JSON ExecExit; the last frame. */
  exit: 5,
  /** broker → client: JSON `{code, message, hint}` when the process could not be started or its channel broke. */
  error: 6,
  /** broker → client: JSON SessionInfo; the first frame of a new session. */
  session: 7,
  /** client → broker: are you there? (answered with pong: JSON InputAck). */
  ping: 8,
  pong: 9,
  /** client → broker: the client is leaving on purpose; the process gets a hang-up now (no reattach). */
  hangup: 10,
} as const;

const LAST_FRAME = FRAME.hangup;

export type FrameType = (typeof FRAME)[keyof typeof FRAME];

/** Larger frames are a protocol error (data frames are split to this size by the sender). */
export const MAX_FRAME = 1 << 20;

export function encodeFrame(type: FrameType, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const head = Buffer.alloc(5);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** Data split into frames of at most MAX_FRAME bytes. */
export function dataFrames(type: FrameType, data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += MAX_FRAME) out.push(encodeFrame(type, data.subarray(i, i + MAX_FRAME)));
  return out;
}

/** Reassembles frames from a byte stream, chunk by chunk. Throws on a frame past MAX_FRAME or an unknown type. */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Array<{ type: FrameType; data: Buffer }> {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Array<{ type: FrameType; data: Buffer }> = [];
    while (this.buf.length >= 5) {
      const type = this.buf.readUInt8(0);
      const len = this.buf.readUInt32BE(1);
      if (type > LAST_FRAME) throw new Error(`unknown frame type ${type}`);
      if (len > MAX_FRAME) throw new Error(`a frame of ${len} bytes is larger than ${MAX_FRAME}`);
      if (this.buf.length < 5 + len) break;
      out.push({ type: type as FrameType, data: this.buf.subarray(5, 5 + len) });
      this.buf = this.buf.subarray(5 + len);
    }
    return out;
  }
}

export function encodeExecRequest(r: ExecRequest | AttachRequest): string {
  return Buffer.from(JSON.stringify(r), 'utf8').toString('base64url');
}

/** The exit status a shell would show: the code, or 128 + the signal's number. */
export function exitStatus(e: ExecExit, signalNumber: (name: string) => number | undefined): number {
  if (e.code !== null) return e.code;
  const n = e.signal ? signalNumber(e.signal.startsWith('SIG') ? e.signal : `SIG${e.signal}`) : undefined;
  return n ? 128 + n : 1;
}
