/**
 * The HTTP app: routes under /v1, authentication, JSON in and out, and the one place where errors become
 * `{code, message, hint}` with a status. Built from its dependencies; it never listens (main.ts and tests do).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { GpurunError, isGpurunError, type ErrorCode } from './protocol/errors.ts';
import { isFinal, LOG_OFFSET_HEADER, LOG_SKIP_HEADER, PROTOCOL_VERSION, WORKSPACE_UPGRADE, type Job } from './protocol/jobs.ts';
import type { ClientWorkspaces } from './hosts/clientWorkspaces.ts';
import { authenticateToken, findTokenRef, tokenRefusal, tokenView } from './auth/tokens.ts';
import type { Broker, Principal } from './broker.ts';
import type { Store } from './core/store.ts';
import type { LogFiles } from './logs/logFiles.ts';
import type { Logger } from './logger.ts';
import type { TeamGuard } from './team/guard.ts';
import type { Retention } from './logs/retention.ts';
import type { UserCaches } from './cache/userCaches.ts';
import { audit } from './team/audit.ts';
import { DEFAULT_LIMITS } from './core/limits.ts';
import { drainRoute, migrateRoute, type MoveRoutesDeps } from './migration/routes.ts';

export interface AppDeps {
  broker: Broker;
  store: Store;
  logs: LogFiles;
  log: Logger;
  version: string;
  /** Set when the transport itself identifies the caller (the embedded broker's private Unix socket). */
  trustedPrincipal?: Principal;
  /** Streams of client-served workspaces (absent without SSH hosts: the upgrade is then refused). */
  clientWorkspaces?: ClientWorkspaces;
  /** Lifts a GPU's quarantine (hosts/registry.ts); absent: nothing can be cleared. */
  clearGpuQuarantine?: (host: string, gpu: number) => void;
  /** Limits, failed-sign-in throttle and health of a shared broker (team/guard.ts). */
  guard?: TeamGuard;
  /** Tells the logs endpoint when retention removed a log. */
  retention?: Retention;
  /** Moves and drains (migration/); absent: jobs never move. */
  moves?: MoveRoutesDeps;
  /** Each user's persistent cache on the hosts (cache/userCaches.ts); absent: none. */
  caches?: UserCaches;
}

/** `POST /v1/hosts/NAME/gpus/N/clear`: an admin puts a quarantined GPU back into service. */
function clearGpu(d: AppDeps, c: Ctx): unknown {
  if (!c.principal.admin) throw new GpurunError('E_FORBIDDEN', 'only an admin can clear a GPU\'s quarantine', { hint: 'Ask an admin (a token made with gpurun token create USER --admin).' });
  if (!d.clearGpuQuarantine) throw new GpurunError('E_CONFLICT', `GPU ${c.params[1]} of ${c.params[0]} is not quarantined`);
  d.clearGpuQuarantine(c.params[0], Number(c.params[1]));
  return { hosts: d.broker.hosts() };
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const SSE_KEEPALIVE_MS = 15_000;
/** An event-stream reader that lets this much pile up unread is dropped (it can reconnect and list again). */
export const SSE_MAX_BUFFERED = 1 << 20;
/** A page of `GET /v1/jobs` stops before its JSON passes this, so an answer never nears a string's limit. */
const PAGE_MAX_BYTES = 8 << 20;


interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: string[];
  principal: Principal;
  /** The SHA-256 of the request's token (absent over the trusted socket): long streams check it again. */
  tokenHash?: string;
}

/** How often open streams (events, log follows) check that their token is still valid (not revoked, not expired). */
const STREAM_RECHECK_MS = 1_000;

type Route = [method: string, pattern: RegExp, fn: (c: Ctx) => Promise<unknown> | unknown];

/** A stream that outlives its request: an event stream, a log follow, a served workspace. */
interface LongStream {
  destroy(): void;
  once(event: 'close', fn: () => void): unknown;
}

/**
 * The long streams of one app, each with the hash of the token that opened it: a stream ends when its token is
 * revoked (at once over HTTP, within STREAM_RECHECK_MS when `gpurun token revoke` writes the database) or expires.
 */
class TokenStreams {
  private readonly streams = new Map<LongStream, string>();
  private readonly store: AppDeps['store'];
  constructor(store: AppDeps['store']) {
    this.store = store;
    setInterval(() => this.streams.size && this.recheck(), STREAM_RECHECK_MS).unref();
  }
  watch(stream: LongStream, hash: string): void {
    this.streams.set(stream, hash);
    stream.once('close', () => this.streams.delete(stream));
  }
  recheck(): void {
    const now = new Date();
    for (const [stream, hash] of this.streams) {
      const rec = this.store.findToken(hash);
      if (!rec || tokenRefusal(rec, now)) {
        this.streams.delete(stream);
        stream.destroy();
      }
    }
  }
}

/** Ends `stream` when the token with this hash is revoked or expires (the upgrades of interactive/ use it too). */
export function watchTokenStream(d: AppDeps, stream: LongStream, hash: string): void {
  tokenStreams(d).watch(stream, hash);
}

/** One TokenStreams per app's deps: the HTTP handler and the upgrade handlers share it. */
const streamsOf = new WeakMap<AppDeps, TokenStreams>();
function tokenStreams(d: AppDeps): TokenStreams {
  let s = streamsOf.get(d);
  if (!s) streamsOf.set(d, (s = new TokenStreams(d.store)));
  return s;
}

export function buildApp(d: AppDeps): Handler {
  const routes: Route[] = [
    ['GET', /^\/v1\/whoami$/, (c) => c.principal],
    ['POST', /^\/v1\/jobs$/, async (c) => {
      const body = await readJson(c.req, d.guard?.limits.maxBodyBytes ?? DEFAULT_LIMITS.maxBodyBytes);
      d.guard?.beforeSubmit(c.principal.user, body);
      const job = d.broker.submit(c.principal, body);
      d.guard?.afterSubmit(c.principal.user, job.id, c.req.socket.remoteAddress);
      c.res.statusCode = 201;
      return job;
    }],
    ['GET', /^\/v1\/jobs$/, (c) => listPage(d, c)],
    ['GET', /^\/v1\/jobs\/([a-z0-9]{1,32})$/, (c) => d.broker.get(c.principal, c.params[0])],
    ['POST', /^\/v1\/jobs\/([a-z0-9]{1,32})\/cancel$/, async (c) => {
      const job = await d.broker.cancel(c.principal, c.params[0]);
      audit({ action: 'job.cancel', by: c.principal.user, job: job.id, owner: job.owner });
      return job;
    }],
    ['POST', /^\/v1\/jobs\/([a-z0-9]{1,32})\/migrate$/, async (c) => migrateRoute(d.moves, c.principal, c.params[0], await readJson(c.req, DEFAULT_LIMITS.maxBodyBytes))],
    ['POST', /^\/v1\/hosts\/([A-Za-z0-9][\w.-]{0,99})\/drain$/, async (c) => drainRoute(d.moves, c.principal, c.params[0], await readJson(c.req, DEFAULT_LIMITS.maxBodyBytes))],
    ['GET', /^\/v1\/jobs\/([a-z0-9]{1,32})\/logs$/, (c) => streamLogs(d, c)],
    ['GET', /^\/v1\/hosts$/, () => ({ hosts: d.moves ? d.moves.hostsView(d.broker.hosts()) : d.broker.hosts() })],
    ['POST', /^\/v1\/hosts\/([A-Za-z0-9][\w.-]{0,99})\/gpus\/(\d{1,4})\/clear$/, (c) => clearGpu(d, c)],
    ['GET', /^\/v1\/pool$/, () => d.broker.pool()],
    ['GET', /^\/v1\/cache$/, async (c) => ({ caches: d.caches ? await d.caches.list(c.principal.user, c.url.searchParams.get('host') ?? undefined) : [] })],
    ['POST', /^\/v1\/cache\/clear$/, async (c) => {
      const body = (await readJson(c.req, 4096)) as { host?: unknown } | null;
      const host = body && typeof body === 'object' && typeof body.host === 'string' ? body.host : undefined;
      const cleared = d.caches ? await d.caches.clear(c.principal.user, host) : [];
      audit({ action: 'cache.clear', by: c.principal.user, host: host ?? '*' });
      return { cleared };
    }],
    ['GET', /^\/v1\/events$/, (c) => (watchToken(c), streamEvents(d, c))],
    ['GET', /^\/v1\/tokens$/, (c) => (admin(c), { tokens: d.store.listTokens().map((t) => tokenView(t)) })],
    ['DELETE', /^\/v1\/tokens\/([0-9a-f]{4,12})$/, (c) => {
      admin(c);
      const rec = findTokenRef(d.store, c.params[0]);
      const out = tokenView(d.store.revokeToken(rec.id, new Date().toISOString())!);
      d.log.info('token revoked', { token: rec.id, user: rec.user, by: c.principal.user });
      audit({ action: 'token.revoke', by: c.principal.user, user: rec.user, token: rec.id });
      recheckStreams();
      return out;
    }],
  ];

  const streams = tokenStreams(d);
  const recheckStreams = () => streams.recheck();
  function watchToken(c: Ctx): void {
    if (c.tokenHash) streams.watch(c.res, c.tokenHash);
  }
  function admin(c: Ctx): void {
    if (!c.principal.admin) throw new GpurunError('E_FORBIDDEN', 'only an admin token may list or revoke tokens', { hint: 'On the broker machine: gpurun token list / gpurun token revoke ID' });
  }

  return (req, res) => {
    void handle(req, res).catch((err) => sendError(d.log, res, err));
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = requestUrl(req);
    if (url.pathname === '/v1/health') {
      send(res, 200, { ok: true, version: d.version, protocol: PROTOCOL_VERSION, ...d.guard?.health() });
      return;
    }
    let pathMatched = false;
    for (const [method, pattern, fn] of routes) {
      const m = pattern.exec(url.pathname);
      if (!m) continue;
      pathMatched = true;
      if (method !== req.method) continue;
      const auth = d.trustedPrincipal ? { principal: d.trustedPrincipal, hash: undefined } : authorize(d, req);
      const c: Ctx = { req, res, url, params: m.slice(1), principal: auth.principal, ...(auth.hash ? { tokenHash: auth.hash } : {}) };
      if (url.searchParams.get('follow') === '1') watchToken(c);
      const out = redactFor(auth.principal, await fn(c));
      if (out !== undefined && !res.headersSent) send(res, res.statusCode === 200 ? 200 : res.statusCode, out);
      return;
    }
    if (pathMatched) throw new GpurunError('E_BAD_REQUEST', `${req.method} is not allowed on ${url.pathname}`);
    throw new GpurunError('E_NOT_FOUND', `no such endpoint: ${req.method} ${url.pathname}`, { hint: `This broker speaks protocol v${PROTOCOL_VERSION}; is the client newer?` });
  }
}

/**
 * The request's path and query. A target that is not an origin path (`//host/…`, `%00`, no leading `/`) is a bad
 * request, never an internal error.
 */
export function requestUrl(req: IncomingMessage): URL {
  const target = req.url ?? '/';
  if (!target.startsWith('/')) throw new GpurunError('E_BAD_REQUEST', 'the request target must be a path starting with /');
  try {
    return new URL(`http://broker${target}`);
  } catch {
    throw new GpurunError('E_BAD_REQUEST', 'the request target is not a valid path');
  }
}

/**
 * Env values are shown only to the job's owner: an admin's view of another user's job, and every event of the event
 * stream, carry the variables' names with empty values.
 */
export function redactJob(job: Job, viewer: Principal | undefined): Job {
  if (viewer && viewer.user === job.owner) return job;
  return { ...job, env: Object.fromEntries(Object.keys(job.env ?? {}).map((k) => [k, ''])) };
}

function redactFor(p: Principal, out: unknown): unknown {
  if (!p.admin || typeof out !== 'object' || out === null) return out;
  const o = out as { jobs?: Job[]; owner?: unknown; env?: unknown };
  if (Array.isArray(o.jobs)) return { ...o, jobs: o.jobs.map((j) => redactJob(j, p)) };
  if (typeof o.owner === 'string' && typeof o.env === 'object') return redactJob(out as Job, p);
  return out;
}

/** For createServer's shouldUpgradeCallback: only the workspace endpoint upgrades; anything else is a plain request. */
export function isWorkspaceUpgrade(req: IncomingMessage): boolean {
  try {
    return WORKSPACE_PATH.test(requestUrl(req).pathname);
  } catch {
    return false;
  }
}

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

const WORKSPACE_PATH = /^\/v1\/jobs\/([a-z0-9]{1,32})\/workspace$/;

/**
 * The server's 'upgrade' listener: `GET /v1/jobs/ID/workspace` with `Upgrade: gpurun-sftp` from the job's owner
 * answers 101, and the socket becomes the job's client-served workspace stream. Anything else is answered with an
 * error body and closed.
 */
export function buildUpgrade(d: AppDeps): UpgradeHandler {
  return (req, socket, head) => {
    socket.on('error', () => {});
    try {
      const url = requestUrl(req);
      const m = WORKSPACE_PATH.exec(url.pathname);
      if (!m) throw new GpurunError('E_NOT_FOUND', `no upgrade on ${req.method} ${url.pathname}`);
      if (req.method !== 'GET') throw new GpurunError('E_BAD_REQUEST', `${req.method} is not allowed on ${url.pathname}`);
      if ((req.headers.upgrade ?? '').toLowerCase() !== WORKSPACE_UPGRADE) throw new GpurunError('E_BAD_REQUEST', `the upgrade must be to ${WORKSPACE_UPGRADE}`);
      const auth = d.trustedPrincipal ? { principal: d.trustedPrincipal, hash: undefined } : authorize(d, req);
      const principal = auth.principal;
      const job = d.broker.visible(principal, m[1]);
      // Serving the files is the owner's alone, admins included: they would choose what another user's job reads.
      if (job.owner !== principal.user) throw new GpurunError('E_FORBIDDEN', `only ${job.owner} can serve the workspace of job ${job.id}`);
      if (job.workspaceFrom !== 'client') throw new GpurunError('E_BAD_REQUEST', `job ${job.id} does not take its workspace from the client`, { hint: 'Submit it with workspaceFrom "client" (gpurun run --serve-workspace).' });
      if (isFinal(job.state)) throw new GpurunError('E_CONFLICT', `job ${job.id} has already ended (${job.state})`);
      if (!d.clientWorkspaces) throw new GpurunError('E_BAD_REQUEST', 'this broker has no SSH hosts to relay a workspace to');
      d.clientWorkspaces.attach(job.id, socket);
      if (auth.hash) tokenStreams(d).watch(socket, auth.hash);
      (socket as Socket).setNoDelay?.(true);
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${WORKSPACE_UPGRADE}\r\n\r\n`);
      if (head.length) socket.unshift(head);
      d.log.info('client serves a workspace', { job: job.id, user: principal.user });
    } catch (err) {
      refuseUpgrade(d.log, socket, err);
    }
  };
}

/** Answers an upgrade that cannot be made with the error's status and `{code, message, hint}`, and closes. */
export function refuseUpgrade(log: Logger, socket: Duplex, err: unknown): void {
  const e = isGpurunError(err) ? err : new GpurunError('E_INTERNAL', 'internal broker error', { cause: err });
  if (e.code === 'E_INTERNAL') log.error('upgrade failed', { err: err instanceof Error ? err : new Error(String(err)) });
  const text = JSON.stringify(errorBody(e));
  socket.end(`HTTP/1.1 ${e.status} ${e.code}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
}

/** The caller's principal and token hash; failed attempts count against the caller's address (team/guard.ts). */
export function authorize(d: AppDeps, req: IncomingMessage): { principal: Principal; hash: string } {
  const check = () => authenticateToken(d.store, req.headers.authorization);
  return d.guard ? d.guard.authenticate(req, check) : check();
}

/**
 * `GET /v1/jobs[?all=1][&limit=N][&before=ID]`: newest first, at most `limit` (default 100, at most 1000) and at most
 * PAGE_MAX_BYTES of JSON; `next` is the `before` of the next page, absent on the last one.
 */
function listPage(d: AppDeps, c: Ctx): undefined {
  const limit = intParam(c.url, 'limit', 100, 1, 1000);
  const before = c.url.searchParams.get('before') ?? undefined;
  if (before !== undefined && !/^[a-z0-9]{1,32}$/.test(before)) throw new GpurunError('E_BAD_REQUEST', 'before must be a job id (the "next" of the previous page)');
  const all = c.url.searchParams.get('all') === '1';
  const parts: string[] = [];
  let bytes = 0;
  let last: string | undefined;
  let more = false;
  // One job past the limit says whether there is a next page; the broker reads each job only when it is taken.
  for (const job of d.broker.list(c.principal, { all, limit: limit + 1, ...(before ? { before } : {}) })) {
    const text = JSON.stringify(c.principal.admin ? redactJob(job, c.principal) : job);
    if (parts.length === limit || (parts.length > 0 && bytes + text.length > PAGE_MAX_BYTES)) {
      more = true;
      break;
    }
    parts.push(text);
    bytes += text.length + 1;
    last = job.id;
  }
  const next = more ? last : undefined;
  const body = `{"jobs":[${parts.join(',')}]${next ? `,"next":${JSON.stringify(next)}` : ''}}`;
  c.res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  c.res.end(body);
  return undefined;
}

/** What to do, for errors that carry no hint of their own: every error answer has code, message and hint. */
const DEFAULT_HINT: Partial<Record<ErrorCode, string>> = {
  E_BAD_REQUEST: 'Check the request against the HTTP API in the README (or use the gpurun CLI).',
  E_NOT_FOUND: 'Check the id or path; gpurun ls --all lists your jobs.',
  E_CONFLICT: 'Look at the job (gpurun ls) and try again if it still applies.',
  E_FORBIDDEN: 'Ask the owner of the job or the broker admin.',
  E_UNSATISFIABLE: 'Ask for less, or ask an admin for a larger host.',
};
const FALLBACK_HINT = 'See the broker log for details.';

function errorBody(e: GpurunError): { code: ErrorCode; message: string; hint: string } {
  return { code: e.code, message: e.message, hint: e.hint ?? DEFAULT_HINT[e.code] ?? FALLBACK_HINT };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(log: Logger, res: ServerResponse, err: unknown): void {
  const e = isGpurunError(err) ? err : new GpurunError('E_INTERNAL', 'internal broker error', { cause: err, hint: 'See the broker log for details.' });
  if (e.code === 'E_INTERNAL') log.error('request failed', { err: err instanceof Error ? err : new Error(String(err)) });
  if (res.headersSent || res.destroyed || res.socket?.destroyed) {
    res.destroy();
    return;
  }
  try {
    send(res, e.status, errorBody(e));
  } catch {
    res.destroy(); // the connection is gone; nothing to answer
  }
}

async function readJson(req: IncomingMessage, max: number): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  if (!type.startsWith('application/json')) throw new GpurunError('E_BAD_REQUEST', 'the body must be JSON (content-type: application/json)');
  const tooLarge = () => {
    // Answer now and stop reading: the rest of a too-large body is not waited for.
    req.socket.once('finish', () => req.socket.destroy());
    return new GpurunError('E_TOO_LARGE', `the body is larger than ${max} bytes`, { hint: 'Send less (the broker\'s limits.maxBodyBytes); large values belong in files in the workspace.' });
  };
  if (Number(req.headers['content-length'] ?? 0) > max) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > max) throw tooLarge();
      chunks.push(c as Buffer);
    }
  } catch (e) {
    if (isGpurunError(e)) throw e;
    // The client went away (or was cut for being slow) before the body was complete.
    throw new GpurunError('E_BAD_REQUEST', `the request body ended after ${size} bytes, before its end (${(e as Error).message})`, { hint: 'Send the whole body, as its Content-Length says.' });
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw new GpurunError('E_BAD_REQUEST', `the body is not valid JSON: ${(e as Error).message}`);
  }
}

function intParam(url: URL, name: string, def: number, min: number, max: number): number {
  const v = url.searchParams.get(name);
  if (v === null) return def;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new GpurunError('E_BAD_REQUEST', `${name} must be a whole number from ${min} to ${max}`);
  return Number(v);
}

/** Raw bytes from `offset`; with `follow=1`, the response stays open until the job has ended and all is sent. */
async function streamLogs(d: AppDeps, c: Ctx): Promise<undefined> {
  const job = d.broker.visible(c.principal, c.params[0]);
  d.retention?.assertLog(job);
  let offset = intParam(c.url, 'offset', 0, 0, Number.MAX_SAFE_INTEGER);
  const follow = c.url.searchParams.get('follow') === '1';
  const size = d.logs.size(job.id);
  if (offset > size && !follow) {
    throw new GpurunError('E_BAD_REQUEST', `offset ${offset} is past the end of the log (${size} bytes)`);
  }
  const cut = d.logs.cut(job.id);
  if (cut && offset >= cut.from && offset < cut.to) offset = cut.to;
  const ac = new AbortController();
  c.res.on('close', () => ac.abort());
  c.res.writeHead(200, { 'content-type': 'application/octet-stream', [LOG_OFFSET_HEADER]: String(offset), 'cache-control': 'no-store', ...(cut ? { [LOG_SKIP_HEADER]: `${cut.from}-${cut.to}` } : {}) });
  c.res.flushHeaders();
  const opts = follow ? { isDone: () => d.broker.isDone(job.id), signal: ac.signal } : { signal: ac.signal };
  for await (const chunk of d.logs.read(job.id, offset, opts)) {
    if (!c.res.write(chunk)) await new Promise<void>((r) => { c.res.once('drain', r); c.res.once('close', r); });
    if (ac.signal.aborted) return;
  }
  c.res.end();
  return undefined;
}

/**
 * A job change as one SSE event, made once per change and shared by every reader: with many readers and a large job
 * (a long command) a text per reader would be that many copies of it for the collector to catch up with.
 * No env values on the stream, not even the owner's own (GET /v1/jobs/ID has them): names only.
 */
const jobEvents = new WeakMap<Job, string>();
function jobEvent(job: Job): string {
  let text = jobEvents.get(job);
  if (text === undefined) {
    text = `event: job\ndata: ${JSON.stringify({ type: 'job', job: redactJob(job, undefined) })}\n\n`;
    jobEvents.set(job, text);
  }
  return text;
}

/** Server-Sent Events: one `data:` line per job change the principal may see. */
function streamEvents(d: AppDeps, c: Ctx): undefined {
  c.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
  c.res.write(': gpurun events\n\n');
  const onJob = (job: Job) => {
    if (!(c.principal.admin || job.owner === c.principal.user)) return;
    // A reader that stopped reading: drop it instead of buffering for it without bound.
    if (c.res.writableLength > SSE_MAX_BUFFERED) {
      d.log.warn('dropped an event-stream reader that stopped reading', { user: c.principal.user, buffered: c.res.writableLength });
      c.res.destroy();
      return;
    }
    c.res.write(jobEvent(job));
  };
  d.broker.on('job', onJob);
  const keep = setInterval(() => c.res.write(': keep-alive\n\n'), SSE_KEEPALIVE_MS);
  c.res.on('close', () => {
    clearInterval(keep);
    d.broker.off('job', onJob);
  });
  return undefined;
}
