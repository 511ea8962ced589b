/**
 * The client's side of a client-served workspace (`gpurun run --serve-workspace`): on the stream opened with
 * `BrokerClient.openWorkspace`, waits for the broker's start line (WorkspaceServeStart), then serves SFTP confined to
 * the workspace (read-only when the host's mount is) until the stream or the session ends.
 */
import type { Duplex } from 'node:stream';
import { serveSftp, type SftpSession } from '../hosts/sftpGuard.ts';
import type { WorkspaceServeStart } from '../protocol/jobs.ts';

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
    session = serveSftp(root, stream, stream, { readOnly: !!start.readOnly, onDenied: (why) => say(`refused an SFTP request from the host: ${why}`) });
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
