/**
 * The client's side of a client-served workspace (`gpurun run --serve-workspace`, `gpurun serve-workspace ID`): on
 * the stream opened with `BrokerClient.openWorkspace`, waits for the broker's start line (WorkspaceServeStart), then
 * serves SFTP confined to the workspace (read-only when the host's mount is) until the stream or the session ends.
 */
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { serveSftp, type SftpSession } from '../hosts/sftpGuard.ts';
import type { BrokerClient } from '../protocol/client.ts';
import { GpurunError } from '../protocol/errors.ts';
import { isFinal, type WorkspaceServeStart } from '../protocol/jobs.ts';
import { parseArgs, usage } from './args.ts';
import { connect } from './connect.ts';

export interface ServedWorkspace {
  /** Resolves when the stream has ended (the job's mount is gone, or the connection to the broker broke). */
  done: Promise<void>;
  close(): void;
}

const MAX_START_LINE = 4096;

export function serveWorkspace(stream: Duplex, root: string, say: (msg: string) => void): ServedWorkspace {
  let session: SftpSession | undefined;
  let buf = Buffer.alloc(0);
  stream.on('error', () => {}); // its end is reported through 'close'
  const onData = (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    const nl = buf.indexOf(0x0a);
    if (nl < 0) {
      if (buf.length > MAX_START_LINE) stream.destroy();
      return;
    }
    stream.off('data', onData);
    stream.pause();
    let start: WorkspaceServeStart;
    try {
      start = JSON.parse(buf.subarray(0, nl).toString('utf8')) as WorkspaceServeStart;
    } catch {
      say('the broker sent a workspace stream this gpurun does not understand; not serving the workspace');
      stream.destroy();
      return;
    }
    const rest = buf.subarray(nl + 1);
    if (rest.length) stream.unshift(rest);
    say(`serving ${root} to host ${start.host}${start.readOnly ? ' (read-only)' : ''}`);
    session = serveSftp(root, stream, stream, { readOnly: !!start.readOnly, feed: true, onDenied: (why) => say(`refused an SFTP request from the host: ${why}`) });
    stream.resume();
  };
  stream.on('data', onData);
  const done = new Promise<void>((resolve) => stream.once('close', () => resolve()));
  void done.then(() => session?.close());
  return {
    done,
    close() {
      session?.close();
      stream.destroy();
    },
  };
}

/** `dir` as an absolute path, if it is an existing folder. */
export function workspaceFolder(dir: string): string {
  const abs = resolve(dir);
  if (!existsSync(abs) || !statSync(abs).isDirectory()) {
    throw new GpurunError('E_BAD_REQUEST', `the workspace ${abs} is not a folder`, { hint: 'Pass an existing folder with --workspace, or run from inside one.' });
  }
  return abs;
}

/** Attaches to job `id`'s workspace stream and serves `root` on it (the broker refuses jobs not the caller's etc.). */
export async function serveJobWorkspace(client: BrokerClient, id: string, root: string, say: (msg: string) => void): Promise<ServedWorkspace> {
  return serveWorkspace(await client.openWorkspace(id), root, say);
}

export const SERVE_WORKSPACE_HELP = `Usage: gpurun serve-workspace JOB_ID [--workspace DIR]

Serves the workspace of a job that was submitted with workspaceFrom "client" (by the VS Code extension, or through
the API) from this machine, through the broker, to the job's GPU host. Returns when the job has ended.

Options:
  --workspace DIR   the folder to serve (default: the job's workspace, as the broker reports it)
  --broker URL      broker address (default: $GPURUN_BROKER; the token is read from $GPURUN_TOKEN)
`;

/** How long, after the stream ends, the job may take to be recorded as ended (its mount goes first). */
const END_WAIT_MS = 30_000;

export async function serveWorkspaceCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['workspace', 'broker'], flags: ['help'], short: { h: 'help' } }, 'serve-workspace');
  if (opts.help) {
    process.stdout.write(SERVE_WORKSPACE_HELP);
    return 0;
  }
  if (rest.length !== 1) throw usage('serve-workspace', rest.length ? `expected one job id, got ${rest.length} arguments` : 'no job id given');
  const id = rest[0];
  const say = (s: string) => void process.stderr.write(`gpurun: ${s}\n`);
  const conn = await connect(opts.broker as string | undefined);
  try {
    const job = await conn.client.get(id);
    // Said here before the folder is checked; the broker checks the same (and that the job is the caller's).
    if (job.workspaceFrom !== 'client') throw new GpurunError('E_BAD_REQUEST', `job ${id} does not take its workspace from the client: the broker serves it`, { hint: 'Only jobs submitted with workspaceFrom "client" are served this way.' });
    if (isFinal(job.state)) throw new GpurunError('E_CONFLICT', `job ${id} has already ended (${job.state.replace('_', ' ')}); there is nothing to serve`);
    const root = workspaceFolder((opts.workspace as string | undefined) ?? job.workspace);
    const served = await serveJobWorkspace(conn.client, id, root, say);
    await served.done;
    let now = await conn.client.get(id);
    for (const until = Date.now() + END_WAIT_MS; !isFinal(now.state) && Date.now() < until; ) {
      await sleep(200);
      now = await conn.client.get(id);
    }
    if (!isFinal(now.state)) {
      throw new GpurunError('E_UNREACHABLE', `the workspace stream of job ${id} ended while the job is still ${now.state}`, { hint: `The connection to the broker broke, so the job has lost its files; see gpurun logs ${id}.` });
    }
    say(`job ${id} ${now.state.replace('_', ' ')}; stopped serving ${root}`);
    return 0;
  } finally {
    await conn.client.close();
  }
}
