/**
 * The broker's side of `gpurun exec` and `gpurun forward`: HTTP upgrades on `GET /v1/jobs/ID/exec` (Upgrade:
 * gpurun-exec) and `GET /v1/jobs/ID/forward?port=N` (Upgrade: gpurun-tcp), wire in protocol/interactive.ts. Only
 * the job's owner may enter a running job (others: 404, as for any job of someone else; an admin: 403). Everything
 * is checked before the 101: the caller, the job, the request; every exec and every forwarded connection is in
 * the audit log. A stream ends within a second or two of its token being revoked or expiring. An exec outlives a
 * dropped connection: the client attaches again to its session (sessions.ts).
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { GpurunError } from '../protocol/errors.ts';
import { appendFileSync } from 'node:fs';
import { ATTACH_HEADER, encodeFrame, EXEC_HEADER, EXEC_UPGRADE, FORWARD_UPGRADE, FRAME } from '../protocol/interactive.ts';
import { authorize, refuseUpgrade, requestUrl, watchTokenStream, type AppDeps, type UpgradeHandler } from '../app.ts';
import { parseAttachRequest, parseExecRequest, parsePort } from '../core/interactive.ts';
import { ExecSessions } from './sessions.ts';
import { isFinal } from '../protocol/jobs.ts';
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

export function buildInteractiveUpgrade(d: AppDeps, interactive: Interactive, sessions = new ExecSessions()): UpgradeHandler {
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
      const attach = m[2] === 'exec' ? req.headers[ATTACH_HEADER] : undefined;
      if (typeof attach === 'string') {
        // A reattach: the session's own job may have ended meanwhile (its last output and exit are waiting).
        const a = parseAttachRequest(attach);
        const job = d.broker.visible(auth.principal, m[1]);
        const live = sessions.get(a.session, auth.principal.user, job.id);
        if (!live) throw new GpurunError('E_GONE', `the exec session in job ${job.id} has ended`, { hint: `Nobody attached within the grace period, or it was hung up. Look at the job: gpurun show ${job.id}` });
        if (auth.hash) watchTokenStream(d, socket, auth.hash);
        audit({ action: 'job.exec.attach', by: auth.principal.user, job: job.id, owner: job.owner, from: req.socket.remoteAddress, session: live.id, offset: a.offset });
        upgraded(socket, want, head);
        live.attach(socket, a.offset);
        return;
      }
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
      if (head.length) socket.unshift(head);
      const r = parseExecRequest(req.headers[EXEC_HEADER] as string | undefined);
      await execSession(d, interactive, sessions, target, r, socket, want, who, auth.hash);
    })().catch((err) => refuseUpgrade(d.log, socket, err));
  };
}

function upgraded(socket: Duplex, protocol: string, head: Buffer): void {
  (socket as Socket).setNoDelay?.(true);
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\n\r\n`);
  if (head.length) socket.unshift(head);
}

async function execSession(d: AppDeps, interactive: Interactive, sessions: ExecSessions, target: Parameters<Interactive['exec']>[0], r: ReturnType<typeof parseExecRequest>, socket: Duplex, protocol: string, who: Record<string, unknown>, hash: string | undefined): Promise<void> {
  const live = sessions.create(String(who.by), target.job.id);
  // The command of an interactive job: what its terminal shows is its output, so it goes into the job's log too.
  const log = r.log ? (b: Buffer) => appendFileSync(d.logs.path(target.job.id), b) : () => {};
  const session = await interactive.exec(target, r, {
    stdout: (b) => (live.output(FRAME.stdout, b), log(b)),
    stderr: (b) => (live.output(FRAME.stderr, b), log(b)),
  });
  live.started(session);
  if (hash) watchTokenStream(d, live, hash);
  // The job ended (cancelled, time limit): its sessions end with it, as its container's would (on hosts without
  // Docker the exec's process is not one of the job's own).
  const onJob = (j: { id: string; state: string }) => j.id === target.job.id && isFinal(j.state as never) && live.hangup();
  d.broker.on('job', onJob);
  live.once('close', () => d.broker.off('job', onJob));
  audit({ action: 'job.exec', ...who, command: r.command, tty: !!r.tty, session: live.id });
  d.log.info('exec in a job', { job: who.job, user: who.by, tty: !!r.tty });
  upgraded(socket, protocol, Buffer.alloc(0));
  live.attach(socket, 0);
  try {
    const exit = await session.exited;
    audit({ action: 'job.exec.end', ...who, exitCode: exit.code, signal: exit.signal });
    live.finish(encodeFrame(FRAME.exit, JSON.stringify(exit)));
  } catch (err) {
    const e = err instanceof GpurunError ? err : new GpurunError('E_INTERNAL', (err as Error).message);
    audit({ action: 'job.exec.end', ...who, error: e.message });
    live.finish(encodeFrame(FRAME.error, JSON.stringify({ code: e.code, message: e.message, hint: e.hint ?? 'See the broker log.' })));
  }
}
