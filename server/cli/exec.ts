/**
 * `gpurun exec [-i] [-t] JOB -- CMD [ARGS...]`: a new process in a running job (its container, GPUs and /workspace;
 * on hosts without Docker its variables and folder), through the broker (protocol/interactive.ts). Its output
 * streams back, and the CLI exits with its exit code. `-i` passes stdin; `-t` gives it a terminal end to end (raw
 * mode here: Ctrl+C, Ctrl+D and every key go to the process; the window size follows).
 */
import { constants as osConstants } from 'node:os';
import type { Duplex } from 'node:stream';
import type { BrokerClient } from '../protocol/client.ts';
import { GpurunError } from '../protocol/errors.ts';
import { dataFrames, encodeExecRequest, encodeFrame, EXEC_HEADER, EXEC_UPGRADE, exitStatus, FRAME, FrameReader, type ExecExit, type ExecRequest } from '../protocol/interactive.ts';
import { parseArgs, usage } from './args.ts';
import { connect } from './connect.ts';

export const EXEC_HELP = `Usage: gpurun exec [-i] [-t] JOB -- CMD [ARGS...]

Runs CMD as a new process in the running job JOB: in its container on a Docker host (the same GPUs, variables and
/workspace), or on hosts without Docker in the job's environment and folder. Its output streams back and gpurun exits
with its exit code. Only the job's owner can do this; every exec is in the broker's audit log.
  -i, --stdin   pass this terminal's (or pipe's) input to CMD; without it CMD's stdin is empty
  -t, --tty     a terminal end to end (implies -i): keys, Ctrl+C and Ctrl+D go to CMD, the window size follows
                (-it is the same). e.g. gpurun exec -it JOB -- bash
  --broker URL  broker address (default: $GPURUN_BROKER, token in $GPURUN_TOKEN)
`;

export async function execCommand(argv: string[]): Promise<number> {
  const dd = argv.indexOf('--');
  const { opts, rest } = parseArgs(dd < 0 ? argv : argv.slice(0, dd), { values: ['broker'], flags: ['stdin', 'tty', 'help'], short: { i: 'stdin', t: 'tty', it: 'tty', ti: 'tty', h: 'help' } }, 'exec');
  if (opts.help) {
    process.stdout.write(EXEC_HELP);
    return 0;
  }
  if (rest.length !== 1) throw usage('exec', rest.length ? `expected one job id before "--", got ${rest.length} words` : 'no job id given');
  const command = dd < 0 ? [] : argv.slice(dd + 1);
  if (command.length === 0) throw usage('exec', 'no command given: put it after "--", e.g. gpurun exec JOB -- nvidia-smi');
  const tty = !!opts.tty;
  const conn = await connect(opts.broker as string | undefined);
  try {
    return await execInJob(conn.client, rest[0], { command, ...(tty ? ttyRequest() : {}) }, { stdin: tty || !!opts.stdin });
  } finally {
    await conn.client.close();
  }
}

/** The terminal part of a request: this terminal's size and TERM (a plain default when they are unknown). */
export function ttyRequest(): Pick<ExecRequest, 'tty' | 'rows' | 'cols' | 'term'> {
  const term = process.env.TERM && /^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$/.test(process.env.TERM) ? process.env.TERM : 'xterm';
  return { tty: true, rows: process.stdout.rows || 24, cols: process.stdout.columns || 80, term };
}

function signalNumber(name: string): number | undefined {
  return (osConstants.signals as Record<string, number>)[name];
}

/**
 * Runs the exec stream of job `id` against this process's stdin, stdout and stderr; resolves with the exit status
 * (the process's code, 128 + a signal, 130 when interrupted here). Rejects with the broker's error when it refused.
 */
export async function execInJob(client: BrokerClient, id: string, req: ExecRequest, opts: { stdin: boolean }): Promise<number> {
  const sock = await client.upgrade(`/v1/jobs/${encodeURIComponent(id)}/exec`, EXEC_UPGRADE, `the exec in job ${id}`, { [EXEC_HEADER]: encodeExecRequest(req) });
  const stdin = process.stdin;
  const raw = !!req.tty && stdin.isTTY;
  const cleanups: Array<() => void> = [];
  if (raw) {
    stdin.setRawMode(true);
    cleanups.push(() => stdin.setRawMode(false));
    const onResize = () => sock.write(encodeFrame(FRAME.resize, JSON.stringify({ rows: process.stdout.rows, cols: process.stdout.columns })));
    process.stdout.on('resize', onResize);
    cleanups.push(() => process.stdout.off('resize', onResize));
  }
  if (opts.stdin) pumpStdin(sock, cleanups);
  else sock.write(encodeFrame(FRAME.stdinEnd));
  // Without a terminal in raw mode, Ctrl+C here ends the exec (the process's channel hangs up).
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
    sock.destroy();
  };
  process.on('SIGINT', onSigint);
  cleanups.push(() => process.off('SIGINT', onSigint));
  try {
    const end = await readFrames(sock);
    if (interrupted) return 130;
    if ('error' in end) throw new GpurunError(end.error.code as never, end.error.message, end.error.hint ? { hint: end.error.hint } : {});
    return exitStatus(end, signalNumber);
  } catch (err) {
    if (interrupted) return 130;
    throw err;
  } finally {
    for (const c of cleanups.reverse()) c();
  }
}

function pumpStdin(sock: Duplex, cleanups: Array<() => void>): void {
  const stdin = process.stdin;
  const onData = (d: Buffer) => {
    let ok = true;
    for (const f of dataFrames(FRAME.stdin, d)) ok = sock.write(f) && ok;
    if (!ok) {
      stdin.pause();
      sock.once('drain', () => stdin.resume());
    }
  };
  const onEnd = () => sock.writable && sock.write(encodeFrame(FRAME.stdinEnd));
  stdin.on('data', onData);
  stdin.once('end', onEnd);
  stdin.resume();
  cleanups.push(() => {
    stdin.off('data', onData);
    stdin.off('end', onEnd);
    stdin.pause();
    // A pipe or terminal still being read keeps this process alive after the exec has ended.
    if (!stdin.isTTY) stdin.destroy();
  });
}

type End = ExecExit | { error: { code: string; message: string; hint?: string } };

/** Writes output frames to stdout/stderr (holding the stream back while they are full) until the last frame. */
function readFrames(sock: Duplex): Promise<End> {
  return new Promise<End>((resolve, reject) => {
    const reader = new FrameReader();
    let end: End | undefined;
    const write = (w: NodeJS.WriteStream, data: Buffer) => {
      if (!w.write(data)) {
        sock.pause();
        w.once('drain', () => sock.resume());
      }
    };
    sock.on('data', (chunk: Buffer) => {
      try {
        for (const f of reader.push(chunk)) {
          if (f.type === FRAME.stdout) write(process.stdout, f.data);
          else if (f.type === FRAME.stderr) write(process.stderr, f.data);
          else if (f.type === FRAME.exit) end = JSON.parse(f.data.toString('utf8')) as ExecExit;
          else if (f.type === FRAME.error) end = { error: JSON.parse(f.data.toString('utf8')) as { code: string; message: string; hint?: string } };
        }
      } catch (err) {
        reject(new GpurunError('E_PROTOCOL', `the broker's exec stream is not understood: ${(err as Error).message}`));
        sock.destroy();
      }
    });
    sock.on('error', () => {});
    sock.once('close', () => (end ? resolve(end) : reject(new GpurunError('E_UNREACHABLE', 'the connection to the broker closed before the process ended', { hint: 'The process may still run in the job; gpurun exec again to look.' }))));
  });
}
