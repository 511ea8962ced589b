/**
 * What the HTTP app asks before and after it acts on a shared broker: admission of a submit (free-space floor,
 * per-user limits, env size), failed sign-ins rate-limited per source address (logged without the token), the
 * audit trail, and what /v1/health adds (disk, storage). Also the Node HTTP server's own bounds: header and request
 * timeouts for slow clients, and JSON errors for requests Node's parser refuses.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { GpurunError, isGpurunError } from '../protocol/errors.ts';
import { checkSubmit, envBytes, SlidingWindow, type Limits } from '../core/limits.ts';
import type { Logger } from '../logger.ts';
import type { DiskGuard } from './disk.ts';
import type { StorageHealth } from '../store/resilient.ts';
import { audit } from './audit.ts';

/** A slow client must have sent its headers within this, and its whole request within REQUEST_TIMEOUT_MS. */
export const HEADERS_TIMEOUT_MS = 10_000;
export const REQUEST_TIMEOUT_MS = 30_000;

export interface GuardDeps {
  limits: Limits;
  disk: DiskGuard;
  storage?: StorageHealth;
  log: Logger;
  /** Queued jobs per user now. */
  queuedOf(user: string): number;
  now?: () => number;
}

export class TeamGuard {
  private readonly d: GuardDeps;
  private readonly submits = new SlidingWindow();
  private readonly authFailures = new SlidingWindow();
  private readonly now: () => number;

  constructor(d: GuardDeps) {
    this.d = d;
    this.now = d.now ?? Date.now;
  }

  get limits(): Limits {
    return this.d.limits;
  }

  /** Throws when a submit by `user` must be refused: disk below its floor, storage failing, a per-user limit. */
  beforeSubmit(user: string, body: unknown): void {
    const b = (typeof body === 'object' && body !== null ? body : {}) as { env?: unknown; gpus?: unknown };
    // A store that still cannot write refuses the insert itself (E_STORAGE, 503); the disk floor is checked first.
    this.d.disk.assertRoom();
    const gpus = typeof b.gpus === 'number' && Number.isFinite(b.gpus) ? b.gpus : 0;
    checkSubmit(user, { queued: this.d.queuedOf(user) }, this.submits.count(user, this.now()), this.d.limits, { gpus, envBytes: envBytes(b.env) });
  }

  afterSubmit(user: string, jobId: string, from: string | undefined): void {
    this.submits.hit(user, this.now());
    audit({ action: 'job.submit', by: user, job: jobId, ...(from ? { from } : {}) });
  }

  /**
   * Wraps authentication: a source with too many failures in the last minute gets 429 before its token is even
   * looked at; each failure is logged with the address, never the token.
   */
  authenticate<P>(req: IncomingMessage, fn: () => P): P {
    const from = sourceOf(req);
    const now = this.now();
    const max = this.d.limits.authFailuresPerMinute;
    if (max && this.authFailures.count(from, now) >= max) {
      const wait = Math.ceil(this.authFailures.retryAfterMs(from, now) / 1000);
      throw new GpurunError('E_LIMIT', `too many failed sign-ins from ${from}: try again in ${wait} s`, { hint: 'Check GPURUN_TOKEN; ask the broker admin for a new token if it was revoked.' });
    }
    try {
      return fn();
    } catch (e) {
      if (isGpurunError(e) && e.code === 'E_UNAUTHORIZED') {
        const n = this.authFailures.hit(from, now);
        if (n <= max || !max) this.d.log.warn('authentication failed', { from, path: (req.url ?? '').slice(0, 200), failuresInLastMinute: n, reason: e.message });
        if (n === max) this.d.log.warn('failed sign-ins are now refused from this address for a while', { from, perMinute: max });
      }
      throw e;
    }
  }

  /** What /v1/health adds: the disk and the store, and a list of problems in words (empty when all is well). */
  health(): Record<string, unknown> {
    const s = this.d.disk.status();
    const problems: string[] = [];
    if (s.low) problems.push(`data disk low: ${s.freeBytes} bytes free, floor ${s.floorBytes}; new jobs are refused`);
    const st = this.d.storage?.storageProblem();
    if (st) problems.push(st);
    return { disk: { freeBytes: s.freeBytes, floorBytes: s.floorBytes, low: s.low }, ...(this.d.storage ? { pendingWrites: this.d.storage.pendingWrites() } : {}), problems };
  }
}

export function sourceOf(req: IncomingMessage): string {
  return req.socket?.remoteAddress ?? 'unix socket';
}

/**
 * Bounds of the Node server: headers within 10 s, the whole request within 30 s (long answers such as followed logs
 * and events are not limited: the timers cover receiving the request only), and every parser error answered with a
 * JSON `{code, message, hint}` instead of Node's bare status line.
 */
export function hardenServer(server: Server, log: Logger): void {
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.maxHeadersCount = 200;
  // A CONNECT request (a proxy's method) would otherwise be dropped without an answer.
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => {});
    const body = JSON.stringify({ code: 'E_BAD_REQUEST', message: `${req.method} is not allowed on this broker`, hint: 'The broker is not a proxy; see the HTTP API in the README.' });
    socket.end(`HTTP/1.1 400 E_BAD_REQUEST\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable || (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
      socket.destroy();
      return;
    }
    const [status, code, message]: [number, string, string] =
      err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'E_TOO_LARGE', 'the request headers are too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'E_TIMEOUT', `the request was not received within ${REQUEST_TIMEOUT_MS / 1000} s`]
      : err.code === 'ERR_HTTP_HEADERS_TIMEOUT' || err.code === 'ECONNRESET' ? [408, 'E_TIMEOUT', `the request headers were not received within ${HEADERS_TIMEOUT_MS / 1000} s`]
      : [400, 'E_BAD_REQUEST', `the request is not valid HTTP (${err.code ?? 'parse error'})`];
    if (err.code !== 'ECONNRESET') log.info('refused a malformed or slow request', { code: err.code, status });
    const body = JSON.stringify({ code, message, hint: 'Use a gpurun client, or send a well-formed HTTP/1.1 request.' });
    socket.end(`HTTP/1.1 ${status} ${code}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
}
