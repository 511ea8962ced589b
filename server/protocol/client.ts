/**
 * The HTTP client of the broker API, used by the CLI and the VS Code extension. undici; a broker address is
 * `http(s)://host:port` or `unix:/path/to/broker.sock`. Non-2xx answers become GpurunError with the broker's
 * code, message and hint; a broker that cannot be reached is E_UNREACHABLE.
 */
import { Agent, buildConnector, request, type Dispatcher } from 'undici';
import type { TLSSocket } from 'node:tls';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Duplex } from 'node:stream';
import { GpurunError, isErrorBody } from './errors.ts';
import type { PoolSnapshot } from './pool.ts';
import { LOG_OFFSET_HEADER, LOG_SKIP_HEADER, WORKSPACE_UPGRADE, type HostInfo, type Job, type JobEvent, type SubmitRequest } from './jobs.ts';

export interface ClientOptions {
  address: string;
  token?: string;
  /**
   * SHA-256 fingerprint of the broker's TLS certificate (`AB:CD:…`, as the broker prints it): an https broker must
   * present exactly this certificate (its self-signed one). Without it, https brokers are checked against the
   * system's CAs.
   */
  fingerprint?: string;
}

/** `AB:CD:…`, `abcd…` and `SHA256:AB:CD…` name the same fingerprint. */
export function normalizeFingerprint(fp: string): string {
  return fp.trim().replace(/^sha-?256:/i, '').replace(/[:\s]/g, '').toUpperCase();
}

/** The E_TLS error of a certificate that is not the pinned one: names both fingerprints. */
export function fingerprintMismatch(address: string, got: string | undefined, want: string): GpurunError {
  return new GpurunError('E_TLS', `the broker at ${address} presented a TLS certificate with SHA-256 fingerprint ${got || '(none)'}, but GPURUN_BROKER_FINGERPRINT is ${want}`, {
    hint: 'If the broker made a new certificate, get its fingerprint from its admin (gpurun broker prints it at start) and set GPURUN_BROKER_FINGERPRINT; otherwise someone may be between you and the broker.',
  });
}

const UNTRUSTED_CERT = new Set(['DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_HAS_EXPIRED', 'ERR_TLS_CERT_ALTNAME_INVALID']);

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'EAI_AGAIN', 'ENOTFOUND', 'UND_ERR_CLOSED']);

export class BrokerClient {
  private readonly origin: string;
  private readonly dispatcher: Dispatcher;

  readonly opts: ClientOptions;

  constructor(opts: ClientOptions) {
    this.opts = opts;
    if (opts.address.startsWith('unix:')) {
      this.origin = 'http://localhost';
      this.dispatcher = new Agent({ connect: { socketPath: opts.address.slice(5) }, keepAliveTimeout: 10_000 });
    } else {
      let u: URL;
      try {
        u = new URL(opts.address);
      } catch {
        throw new GpurunError('E_BAD_REQUEST', `"${opts.address}" is not a broker address`, { hint: 'Use http://HOST:PORT or unix:/path/to/broker.sock' });
      }
      this.origin = u.origin;
      const pin = u.protocol === 'https:' && opts.fingerprint ? normalizeFingerprint(opts.fingerprint) : undefined;
      if (pin) {
        // Pinned: the certificate is not checked against CAs (it is self-signed) but must be exactly the pinned one.
        // No TLS session resumption: a resumed session shows no peer certificate to compare.
        const base = buildConnector({ rejectUnauthorized: false, maxCachedSessions: 0 });
        const connect: buildConnector.connector = (o, cb) =>
          base(o, (err, socket) => {
            if (err) return cb(err, null);
            const got = (socket as TLSSocket).getPeerCertificate?.()?.fingerprint256;
            if (!got || normalizeFingerprint(got) !== pin) {
              socket.destroy();
              return cb(fingerprintMismatch(opts.address, got, opts.fingerprint!), null);
            }
            cb(null, socket);
          });
        this.dispatcher = new Agent({ connect, keepAliveTimeout: 10_000 });
      } else this.dispatcher = new Agent({ keepAliveTimeout: 10_000 });
    }
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}), ...extra };
  }

  private async call(method: 'GET' | 'POST', path: string, opts: { body?: unknown; signal?: AbortSignal } = {}): Promise<Dispatcher.ResponseData> {
    try {
      return await request(this.origin + path, {
        method,
        dispatcher: this.dispatcher,
        headers: this.headers(opts.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (err) {
      throw this.wrapNetwork(err);
    }
  }

  /** Network failures become E_UNREACHABLE; anything else passes through. */
  wrapNetwork(err: unknown): unknown {
    const code = (err as { code?: string }).code ?? (err as { cause?: { code?: string } }).cause?.code;
    if ((err as Error)?.name === 'GpurunError') return err;
    if (code && UNTRUSTED_CERT.has(code)) {
      return new GpurunError('E_TLS', `the broker at ${this.opts.address} presented a TLS certificate this machine does not trust (${code})`, {
        cause: err,
        hint: 'If it is the broker\'s own self-signed certificate, set GPURUN_BROKER_FINGERPRINT to the fingerprint the broker printed when it started (ask its admin).',
      });
    }
    if (code && NETWORK_CODES.has(code)) {
      return new GpurunError('E_UNREACHABLE', `cannot reach the broker at ${this.opts.address} (${code})`, {
        cause: err,
        hint: 'Check that the broker runs and the address (GPURUN_BROKER or --broker) is right.',
      });
    }
    return err;
  }

  private async json<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const res = await this.call(method, path, { body });
    const text = await res.body.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new GpurunError('E_PROTOCOL', `the broker answered ${res.statusCode} with a body that is not JSON`, { hint: `Is ${this.opts.address} a gpurun broker?` });
    }
    if (res.statusCode >= 400) {
      if (isErrorBody(parsed)) throw new GpurunError(parsed.code, parsed.message, parsed.hint ? { hint: parsed.hint } : {});
      throw new GpurunError('E_PROTOCOL', `the broker answered ${res.statusCode}`);
    }
    return parsed as T;
  }

  health(): Promise<{ ok: boolean; version: string; protocol: number }> {
    return this.json('GET', '/v1/health');
  }
  whoami(): Promise<{ user: string; admin: boolean }> {
    return this.json('GET', '/v1/whoami');
  }
  submit(req: SubmitRequest): Promise<Job> {
    return this.json('POST', '/v1/jobs', req);
  }
  /** Jobs newest first, page by page (`GET /v1/jobs?before=`), up to `limit` in all (default: every one). */
  async list(opts: { all?: boolean; limit?: number } = {}): Promise<Job[]> {
    const out: Job[] = [];
    for await (const page of this.pages(opts)) out.push(...page);
    return out;
  }

  /** The same, one page at a time, so a caller printing thousands of jobs never holds them all. */
  async *pages(opts: { all?: boolean; limit?: number } = {}): AsyncGenerator<Job[]> {
    let before: string | undefined;
    let got = 0;
    for (;;) {
      const q = new URLSearchParams();
      if (opts.all) q.set('all', '1');
      q.set('limit', String(Math.min(1000, opts.limit ? opts.limit - got : 1000)));
      if (before) q.set('before', before);
      const page = await this.json<{ jobs: Job[]; next?: string }>('GET', `/v1/jobs?${q}`);
      got += page.jobs.length;
      yield page.jobs;
      if (!page.next || (opts.limit && got >= opts.limit)) return;
      before = page.next;
    }
  }

  get(id: string): Promise<Job> {
    return this.json('GET', `/v1/jobs/${encodeURIComponent(id)}`);
  }
  cancel(id: string): Promise<Job> {
    return this.json('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`);
  }
  async hosts(): Promise<HostInfo[]> {
    return (await this.json<{ hosts: HostInfo[] }>('GET', '/v1/hosts')).hosts;
  }
  /** Moves a running job to another host (`to`, or the broker's pick); answers at once, with the move under way. */
  migrate(id: string, to?: string): Promise<Job> {
    return this.json('POST', `/v1/jobs/${encodeURIComponent(id)}/migrate`, to === undefined ? {} : { to });
  }
  /** Admin: drains a host (`on`) or lets it take jobs again. */
  async drain(host: string, on: boolean): Promise<HostInfo[]> {
    return (await this.json<{ hosts: HostInfo[] }>('POST', `/v1/hosts/${encodeURIComponent(host)}/drain`, { on })).hosts;
  }
  /** Admin: puts a quarantined GPU of a host back into service. */
  async clearGpu(host: string, gpu: number): Promise<HostInfo[]> {
    return (await this.json<{ hosts: HostInfo[] }>('POST', `/v1/hosts/${encodeURIComponent(host)}/gpus/${gpu}/clear`)).hosts;
  }
  /** Hosts, queues and clusters in one answer (`GET /v1/pool`). */
  pool(): Promise<PoolSnapshot> {
    return this.json('GET', '/v1/pool');
  }

  /**
   * The job's output from byte `offset`. With `follow`, the stream lasts until the job has ended and everything is
   * sent. Each chunk comes with the offset just after it, so a caller that reconnects asks from there.
   */
  async *logs(id: string, offset: number, opts: { follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<{ data: Buffer; next: number }> {
    const res = await this.call('GET', `/v1/jobs/${encodeURIComponent(id)}/logs?offset=${offset}${opts.follow ? '&follow=1' : ''}`, opts.signal ? { signal: opts.signal } : {});
    if (res.statusCode >= 400) {
      const text = await res.body.text();
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        /* not JSON */
      }
      if (isErrorBody(parsed)) throw new GpurunError(parsed.code, parsed.message, parsed.hint ? { hint: parsed.hint } : {});
      throw new GpurunError('E_PROTOCOL', `the broker answered ${res.statusCode} for the logs of ${id}`);
    }
    let pos = Number(res.headers[LOG_OFFSET_HEADER] ?? offset);
    // A log past its output cap has a left-out range: the bytes sent jump over it, and so does the offset.
    const skip = /^(\d+)-(\d+)$/.exec(String(res.headers[LOG_SKIP_HEADER] ?? ''));
    const [from, to] = skip ? [Number(skip[1]), Number(skip[2])] : [Infinity, Infinity];
    try {
      for await (const c of res.body) {
        const chunk = c as Buffer;
        if (pos < from && pos + chunk.length >= from) {
          const first = chunk.subarray(0, from - pos);
          pos = to;
          if (first.length) yield { data: first, next: pos };
          const rest = chunk.subarray(first.length);
          if (rest.length) {
            pos += rest.length;
            yield { data: rest, next: pos };
          }
          continue;
        }
        pos += chunk.length;
        yield { data: chunk, next: pos };
      }
    } catch (err) {
      throw this.wrapNetwork(err);
    }
  }

  /**
   * Opens the job's workspace stream (`GET /v1/jobs/ID/workspace`, Upgrade: gpurun-sftp) for a job submitted with
   * `workspaceFrom: "client"`. Resolves with the raw socket after 101: the broker sends one JSON line
   * (WorkspaceServeStart) when the host mounts, then the SFTP stream that this client must serve.
   */
  openWorkspace(id: string): Promise<Duplex> {
    return this.upgrade(`/v1/jobs/${encodeURIComponent(id)}/workspace`, WORKSPACE_UPGRADE, `the workspace upgrade of ${id}`);
  }

  /**
   * `GET path` with `Upgrade: protocol` (workspace streams, exec, port forwards): resolves with the raw socket after
   * 101; an error answer becomes its GpurunError. `what` names the request in a protocol error.
   */
  upgrade(path: string, protocol: string, what: string, extra: Record<string, string> = {}): Promise<Duplex> {
    const headers = this.headers({ connection: 'Upgrade', upgrade: protocol, ...extra });
    let req: ClientRequest;
    if (this.opts.address.startsWith('unix:')) req = httpRequest({ socketPath: this.opts.address.slice(5), path, headers });
    else {
      const u = new URL(this.origin);
      const host = u.hostname.replace(/^\[|\]$/g, '');
      if (u.protocol === 'https:') {
        const pin = this.opts.fingerprint ? normalizeFingerprint(this.opts.fingerprint) : undefined;
        // Pinned: no agent, so no resumed TLS session (which would show no certificate to compare).
        req = httpsRequest({ host, port: u.port || undefined, path, headers, ...(pin ? { rejectUnauthorized: false, agent: false } : {}) });
        if (pin) {
          req.on('socket', (s) =>
            s.once('secureConnect', () => {
              const got = (s as TLSSocket).getPeerCertificate()?.fingerprint256;
              if (!got || normalizeFingerprint(got) !== pin) req.destroy(fingerprintMismatch(this.opts.address, got, this.opts.fingerprint!));
            }),
          );
        }
      } else req = httpRequest({ host, port: u.port || undefined, path, headers });
    }
    return new Promise<Duplex>((resolve, reject) => {
      req.on('upgrade', (_res: IncomingMessage, socket: Duplex, head: Buffer) => {
        if (head.length) socket.unshift(head);
        resolve(socket);
      });
      req.on('response', async (res: IncomingMessage) => {
        let text = '';
        for await (const c of res) text += (c as Buffer).toString('utf8');
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        reject(isErrorBody(parsed) ? new GpurunError(parsed.code, parsed.message, parsed.hint ? { hint: parsed.hint } : {}) : new GpurunError('E_PROTOCOL', `the broker answered ${res.statusCode} to ${what}`));
      });
      req.on('error', (err) => reject(this.wrapNetwork(err)));
      req.end();
    });
  }

  /** Job changes as they happen (Server-Sent Events). Ends when the connection does. */
  async *events(signal?: AbortSignal): AsyncGenerator<JobEvent> {
    const res = await this.call('GET', '/v1/events', signal ? { signal } : {});
    if (res.statusCode >= 400) {
      const body = (await res.body.json().catch(() => undefined)) as unknown;
      if (isErrorBody(body)) throw new GpurunError(body.code, body.message, body.hint ? { hint: body.hint } : {});
      throw new GpurunError('E_PROTOCOL', `the broker answered ${res.statusCode} for events`);
    }
    let buf = '';
    try {
      for await (const chunk of res.body) {
        buf += (chunk as Buffer).toString('utf8');
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
          if (data) yield JSON.parse(data) as JobEvent;
        }
      }
    } catch (err) {
      throw this.wrapNetwork(err);
    }
  }
}
