/**
 * `gpurun exec [-i] [-t] JOB -- CMD [ARGS...]`: a new process in a running job (its container, GPUs and /workspace;
 * on hosts without Docker its variables and folder), through the broker (protocol/interactive.ts). Its output
 * streams back, and the CLI exits with its exit code. `-i` passes stdin; `-t` gives it a terminal end to end (raw
 * mode here: Ctrl+C, Ctrl+D and every key go to the process; the window size follows).
 */
import { constants as osConstants } from 'node:os';
import type { BrokerClient } from '../protocol/client.ts';
import { exitStatus, type ExecRequest } from '../protocol/interactive.ts';
import { ExecStream } from '../protocol/execClient.ts';
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
 * A dropped connection to the broker is attached again (protocol/execClient.ts); closing this terminal (SIGHUP) hangs
 * the process up.
 */
export async function execInJob(client: BrokerClient, id: string, req: ExecRequest, opts: { stdin: boolean }): Promise<number> {
  const stdin = process.stdin;
  const raw = !!req.tty && stdin.isTTY;
  const stream = new ExecStream(client, id, req, {
    stdout: (d) => process.stdout.write(d),
    stderr: (d) => void process.stderr.write(d),
    drained: () => new Promise<void>((r) => process.stdout.once('drain', () => r())),
    notice: (text) => void process.stderr.write(`${raw ? '\r\n' : ''}gpurun: ${text}${raw ? '\r\n' : '\n'}`),
  });
  const cleanups: Array<() => void> = [];
  if (raw) {
    stdin.setRawMode(true);
    cleanups.push(() => stdin.setRawMode(false));
    const onResize = () => stream.resize(process.stdout.rows, process.stdout.columns);
    process.stdout.on('resize', onResize);
    cleanups.push(() => process.stdout.off('resize', onResize));
  }
  if (opts.stdin) pumpStdin(stream, cleanups);
  else stream.end();
  // Without a terminal in raw mode, Ctrl+C here ends the exec; a closed terminal hangs the process up.
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
    stream.hangup();
  };
  const onSighup = () => stream.hangup();
  process.on('SIGINT', onSigint);
  process.on('SIGHUP', onSighup);
  cleanups.push(() => (process.off('SIGINT', onSigint), process.off('SIGHUP', onSighup)));
  try {
    const end = await stream.run();
    if (interrupted) return 130;
    return end ? exitStatus(end, signalNumber) : 129;
  } catch (err) {
    if (interrupted) return 130;
    throw err;
  } finally {
    for (const c of cleanups.reverse()) c();
  }
}

function pumpStdin(stream: ExecStream, cleanups: Array<() => void>): void {
  const stdin = process.stdin;
  const onData = (d: Buffer) => stream.write(d);
  const onEnd = () => stream.end();
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
