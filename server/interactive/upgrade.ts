/**
 * The broker's side of `gpurun exec` and `gpurun forward`: HTTP upgrades on `GET /v1/jobs/ID/exec` (Upgrade:
 * gpurun-exec) and `GET /v1/jobs/ID/forward?port=N` (Upgrade: gpurun-tcp), wire in protocol/interactive.ts. Only
 * the job's owner may enter a running job (others: 404, as for any job of someone else; an admin: 403). Everything
 * is checked before the 101: the caller, the job, the request; every exec and every forwarded connection is in
 * the audit log. A stream ends within a second or two of its token being revoked or expiring.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { GpurunError } from '../protocol/errors.ts';
import { dataFrames, encodeFrame, EXEC_HEADER, EXEC_UPGRADE, FORWARD_UPGRADE, FRAME, FrameReader } from '../protocol/interactive.ts';
import { authorize, refuseUpgrade, requestUrl, watchTokenStream, type AppDeps, type UpgradeHandler } from '../app.ts';
import { parseExecRequest, parsePort, size } from '../core/interactive.ts';
import { audit } from '../team/audit.ts';
import type { Interactive } from './targets.ts';

const PATH = /^\/v1\/jobs\/([a-z0-9]{1,32})\/(exec|forward)$/;

/** For createServer's shouldUpgradeCallback: the exec and forward endpoints upgrade. */
export function isInteractiveUpgrade(req: IncomingMessage): boolean {
  try {
    return PATH.test(requestUrl(req).pathname);
  } catch {
    return false;
  }
}

export function buildInteractiveUpgrade(d: AppDeps, interactive: Interactive): UpgradeHandler {
  return (req, socket, head) => {
    socket.on('error', () => {});
    void (async () => {
      const url = requestUrl(req);
      const m = PATH.exec(url.pathname);
      if (!m) throw new GpurunError('E_NOT_FOUND', `no upgrade on ${req.method} ${url.pathname}`);
      if (req.method !== 'GET') throw new GpurunError('E_BAD_REQUEST', `${req.method} is not allowed on ${url.pathname}`);
      const want = m[2] === 'exec' ? EXEC_UPGRADE : FORWARD_UPGRADE;
      if ((req.headers.upgrade ?? '').toLowerCase() !== want) throw new GpurunError('E_BAD_REQUEST', `the upgrade must be to ${want}`);
      const auth = d.trustedPrincipal ? { principal: d.trustedPrincipal, hash: undefined } : authorize(d, req);
      const target = d.broker.runningAttempt(auth.principal, m[1]);
      const who = { by: auth.principal.user, job: target.job.id, owner: target.job.owner, host: target.host, from: req.socket.remoteAddress };
      if (auth.hash) watchTokenStream(d, socket, auth.hash);
      if (m[2] === 'forward') {
        const port = parsePort(url.searchParams.get('port'), 'port');
        const conn = await interactive.connect(target, port);
        audit({ action: 'job.forward', ...who, port });
        upgraded(socket, want, head);
        conn.on('error', () => socket.destroy());
        socket.on('error', () => conn.destroy());
        socket.once('close', () => conn.destroy());
        conn.once('close', () => socket.destroy());
        socket.pipe(conn).pipe(socket);
        return;
      }
      const r = parseExecRequest(req.headers[EXEC_HEADER] as string | undefined);
      await execSession(d, interactive, target, r, socket, head, want, who);
    })().catch((err) => refuseUpgrade(d.log, socket, err));
  };
}

function upgraded(socket: Duplex, protocol: string, head: Buffer): void {
  (socket as Socket).setNoDelay?.(true);
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\n\r\n`);
  if (head.length) socket.unshift(head);
}

async function execSession(d: AppDeps, interactive: Interactive, target: Parameters<Interactive['exec']>[0], r: ReturnType<typeof parseExecRequest>, socket: Duplex, head: Buffer, protocol: string, who: Record<string, unknown>): Promise<void> {
  // Output that comes before the 101 is written waits for it.
  let pending: Buffer[] | undefined = [];
  const send = (b: Buffer[]) => {
    if (pending) pending.push(...b);
    else for (const f of b) socket.write(f);
  };
  const session = await interactive.exec(target, r, { stdout: (b) => send(dataFrames(FRAME.stdout, b)), stderr: (b) => send(dataFrames(FRAME.stderr, b)) });
  audit({ action: 'job.exec', ...who, command: r.command, tty: !!r.tty });
  d.log.info('exec in a job', { job: who.job, user: who.by, tty: !!r.tty });
  upgraded(socket, protocol, Buffer.alloc(0));
  for (const f of pending) socket.write(f);
  pending = undefined;
  const reader = new FrameReader();
  let ended = false;
  const onData = (chunk: Buffer) => {
    try {
      for (const f of reader.push(chunk)) {
        if (f.type === FRAME.stdin) session.write(f.data);
        else if (f.type === FRAME.stdinEnd) session.end();
        else if (f.type === FRAME.resize) {
          const s = JSON.parse(f.data.toString('utf8')) as { rows?: unknown; cols?: unknown };
          session.resize(size(s.rows, 'rows', 24), size(s.cols, 'cols', 80));
        }
      }
    } catch (err) {
      socket.write(encodeFrame(FRAME.error, JSON.stringify({ code: 'E_BAD_REQUEST', message: `the exec stream broke the protocol: ${(err as Error).message}`, hint: 'Use the gpurun CLI of the same version as the broker.' })));
      socket.end();
      session.close();
    }
  };
  socket.on('data', onData);
  if (head.length) onData(head);
  socket.once('close', () => {
    if (!ended) session.close();
  });
  try {
    const exit = await session.exited;
    audit({ action: 'job.exec.end', ...who, exitCode: exit.code, signal: exit.signal });
    socket.end(encodeFrame(FRAME.exit, JSON.stringify(exit)));
  } catch (err) {
    const e = err instanceof GpurunError ? err : new GpurunError('E_INTERNAL', (err as Error).message);
    audit({ action: 'job.exec.end', ...who, error: e.message });
    socket.end(encodeFrame(FRAME.error, JSON.stringify({ code: e.code, message: e.message, hint: e.hint ?? 'See the broker log.' })));
  } finally {
    ended = true;
  }
}
