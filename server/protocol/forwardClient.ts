/**
 * The client's side of a port forward (wire in protocol/interactive.ts), shared by `gpurun forward`, `gpurun run -p`
 * and the VS Code Forward Port action: a listener on this machine's 127.0.0.1 whose every connection is one upgrade
 * to the broker, carried to a port of the job (as kubectl port-forward does).
 */
import { createServer, type Socket } from 'node:net';
import type { BrokerClient } from './client.ts';
import { GpurunError } from './errors.ts';
import { FORWARD_UPGRADE } from './interactive.ts';

/** A listener on 127.0.0.1 whose connections go to a port of a job. */
export interface OpenForward {
  /** The local port (the one asked for, or the one picked for 0). */
  local: number;
  close(): void;
}

/**
 * Listens on 127.0.0.1:`local` and carries each connection to port `port` of job `id` through the broker (one
 * upgrade each). A connection that cannot be carried (the job not running yet, nothing listening, the broker away)
 * is closed and `say` is told; the listener stays, so the forward works again once the broker is back.
 */
export async function openForward(client: BrokerClient, id: string, port: number, local: number, say: (s: string) => void): Promise<OpenForward> {
  const sockets = new Set<Socket>();
  let lastSaid = '';
  let saidAt = 0;
  const server = createServer((s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pause();
    client.upgrade(`/v1/jobs/${encodeURIComponent(id)}/forward?port=${port}`, FORWARD_UPGRADE, `the forward of port ${port} of job ${id}`).then(
      (up) => {
        up.on('error', () => s.destroy());
        up.once('close', () => s.destroy());
        s.once('close', () => up.destroy());
        s.pipe(up).pipe(s);
        s.resume();
      },
      (err: Error) => {
        // A browser retries: the same failure is said once per 10 s, not once per connection.
        const text = `a connection to port ${port} of job ${id} failed: ${err.message}`;
        if (text !== lastSaid || Date.now() - saidAt > 10_000) {
          say(text);
          saidAt = Date.now();
        }
        lastSaid = text;
        s.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE' ? new GpurunError('E_CONFLICT', `127.0.0.1:${local} is in use on this machine`, { hint: `Pick another local port: ${port}:LOCAL (0 for any free one)` }) : err));
    server.listen(local, '127.0.0.1', () => resolve());
  });
  return {
    local: (server.address() as { port: number }).port,
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}
