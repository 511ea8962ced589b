/**
 * SSH connections to GPU hosts (ssh2): per host a small pool of connections, each carrying up to
 * MAX_CHANNELS sessions (sshd allows 10 by default), kept alive with SSH keepalives. The host key is checked
 * against the configured known_hosts file before anything else happens.
 */
import { readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { Client, type ClientChannel, type ConnectConfig, type SFTPWrapper } from 'ssh2';
import { GpurunError } from '../protocol/errors.ts';
import type { SshTarget } from './sshConfig.ts';
import { checkHostKey, knownHostsName, knownKeyTypes, parseKnownHosts, type HostKeyVerdict } from './knownHosts.ts';
import { shellCommand } from '../core/shellQuote.ts';
import type { CommandExec, ExecResult } from '../core/remoteExec.ts';

/** What runners need from a host: run a command to its end (CommandExec), or open a long-lived one. */
export interface RemoteExec extends CommandExec {
  /** Like exec, but a non-zero exit is a GpurunError carrying the exit code and stderr. */
  run(argv: readonly string[], what: string, opts?: { timeoutMs?: number }): Promise<string>;
  /** Opens a channel running argv; the caller reads and writes it and must close it. With `pty`, under a terminal. */
  spawn(argv: readonly string[], opts?: SpawnOptions): Promise<ClientChannel>;
  /** Opens a TCP connection from the host to `address:port` (SSH direct-tcpip); the caller must close it. */
  forwardOut?(address: string, port: number): Promise<ClientChannel>;
}

/** A terminal for the channel (ssh2's pty request): its size in rows and columns, and TERM. */
export interface SpawnOptions {
  pty?: { rows: number; cols: number; term: string };
}

export type { ExecResult };

const MAX_CHANNELS = 8;

/** How a remote command ended, as the SSH server reported it (`exit-status` or `exit-signal`). */
export interface ChannelExit {
  code: number | null;
  signal: string | null;
}

/** Exits recorded the moment each channel of spawn() opened. */
const exits = new WeakMap<ClientChannel, ChannelExit>();

/**
 * Calls `fn` with the channel's exit status: at once if it has arrived, else when it does. ssh2 emits `exit` while it
 * parses the packets it read, in the same turn as it hands over the channel: a fast command on a busy broker (the
 * channel's open, its output, its exit and its close read at once) is over before an `await spawn()` returns, and a
 * listener added then never hears of it. spawn() records the exit before anyone awaits; read it through here.
 */
export function onExit(ch: ClientChannel, fn: (exit: ChannelExit) => void): void {
  const seen = exits.get(ch);
  if (seen) fn(seen);
  else ch.once('exit', () => fn(exits.get(ch) ?? { code: null, signal: null }));
}
const KEEPALIVE_MS = 2_000;
/** Tries of a session that sshd refused to open (spawn). */
const OPEN_TRIES = 5;
const KEEPALIVE_COUNT = 3;
/** How long a session may take to open (sshd answers in milliseconds; under heavy load in a second or two). */
const OPEN_TIMEOUT_MS = 30_000;
/**
 * A ready connection that has heard nothing from the host for this long (a keepalive is answered every ~2 s) is
 * quiet: it takes no new channels, new work goes over another connection. Its own channels stay and wait.
 */
const QUIET_MS = 6_000;

export interface SshPoolOptions {
  /**
   * How long a connection may go without an answer to its keepalives before it is given up (default ~6 s).
   * `Infinity`: never by its keepalives; the owner gives it up (dropAll) when it knows the host is gone. GPU hosts
   * use that (hosts/sshHosts.ts): after a few blips TCP's retransmission backoff can keep a connection silent for a
   * minute or two although the link is back, and giving it up would end every channel on it (a relay mount's SFTP
   * stream) over a blip shorter than the grace.
   */
  keepaliveToleranceMs?: number;
  /** How long the SSH handshake may take (default 10 s). */
  readyTimeoutMs?: number;
  /** Keepalive interval and quiet time (defaults 2 s and 6 s: KEEPALIVE_MS, QUIET_MS); tests set shorter ones. */
  keepaliveMs?: number;
  quietMs?: number;
}

interface PooledConn {
  client: Client;
  channels: number;
  ready: Promise<void>;
  closed: boolean;
  /** When the handshake ended (ms; 0 before). */
  readyAt: number;
  /** When the last bytes came from the host (ms). */
  heardAt: number;
}

/** Whether a ready connection has heard nothing for `quietMs` (QUIET_MS: see there). */
function quiet(c: PooledConn, now: number, quietMs: number): boolean {
  return c.readyAt > 0 && now - c.heardAt > quietMs;
}

/** ssh2's keepaliveCountMax for a tolerance (ms): unanswered keepalives before it ends the connection. */
export function keepaliveCount(toleranceMs: number | undefined, intervalMs = KEEPALIVE_MS): number {
  if (toleranceMs === undefined) return KEEPALIVE_COUNT;
  if (toleranceMs === Infinity) return Infinity;
  return Math.max(KEEPALIVE_COUNT, Math.ceil(toleranceMs / intervalMs) + 1);
}

export class SshPool implements RemoteExec {
  readonly hostName: string;
  private readonly cfg: SshTarget & { name: string };
  /** How messages name the other end: "host NAME", or e.g. "cluster NAME's login node". */
  private readonly what: string;
  private readonly conns: PooledConn[] = [];
  private readonly onClose: (err: Error) => void;
  private shut = false;
  private readonly opts: SshPoolOptions;
  private readonly quietMs: number;

  /**
   * `onClose` hears about every connection that ends with an error or unexpectedly (for the host's state); `what`
   * names the other end in messages (default "host NAME").
   */
  constructor(cfg: SshTarget & { name: string }, onClose: (err: Error) => void = () => {}, what = `host ${cfg.name}`, opts: SshPoolOptions = {}) {
    this.cfg = cfg;
    this.opts = opts;
    this.quietMs = opts.quietMs ?? QUIET_MS;
    this.what = what;
    this.hostName = cfg.name;
    this.onClose = onClose;
  }

  private connectConfig(verdict: { v?: HostKeyVerdict }): ConnectConfig {
    const c = this.cfg;
    let known: ReturnType<typeof parseKnownHosts> = [];
    try {
      known = parseKnownHosts(readFileSync(c.knownHosts, 'utf8'));
    } catch {
      // A missing file is the same as an empty one: every key is unknown and the error says what to add.
    }
    const name = knownHostsName(c.address, c.port);
    const types = knownKeyTypes(known, name).flatMap((t) => (t === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [t]));
    let privateKey: Buffer | undefined;
    if (c.identityFile) {
      try {
        privateKey = readFileSync(c.identityFile);
      } catch (e) {
        throw new GpurunError('E_CONFIG', `${this.what}: cannot read the key file ${c.identityFile}: ${(e as Error).message}`, { hint: 'Fix identityFile in the broker config.' });
      }
    }
    return {
      host: c.address,
      port: c.port,
      username: c.user,
      ...(privateKey ? { privateKey } : {}),
      ...(c.agent && process.env.SSH_AUTH_SOCK ? { agent: process.env.SSH_AUTH_SOCK } : {}),
      keepaliveInterval: this.opts.keepaliveMs ?? KEEPALIVE_MS,
      keepaliveCountMax: keepaliveCount(this.opts.keepaliveToleranceMs, this.opts.keepaliveMs ?? KEEPALIVE_MS),
      readyTimeout: this.opts.readyTimeoutMs ?? 10_000,
      ...(types.length ? { algorithms: { serverHostKey: types as never } } : {}),
      hostVerifier: (key: Buffer) => {
        verdict.v = checkHostKey(known, name, key);
        return verdict.v.ok;
      },
    };
  }

  private open(): PooledConn {
    const client = new Client();
    const verdict: { v?: HostKeyVerdict } = {};
    const conn: PooledConn = { client, channels: 0, closed: false, ready: Promise.resolve(), readyAt: 0, heardAt: Date.now() };
    conn.ready = new Promise<void>((resolve, reject) => {
      let settled = false;
      let wasReady = false;
      client.once('ready', () => {
        settled = true;
        wasReady = true;
        conn.readyAt = conn.heardAt = Date.now();
        // SFTP relays and log follows are many small packets each way: Nagle's delay would cost ~40 ms per request.
        client.setNoDelay(true);
        resolve();
      });
      client.on('error', (err) => {
        const e = this.describe(err, verdict.v);
        if (!settled) {
          settled = true;
          reject(e);
        } else if (wasReady && !this.shut) this.onClose(e);
      });
      client.on('close', () => {
        conn.closed = true;
        const i = this.conns.indexOf(conn);
        if (i >= 0) this.conns.splice(i, 1);
        if (!settled) {
          settled = true;
          reject(new GpurunError('E_UNREACHABLE', `${this.what}: the connection closed during the SSH handshake`));
        } else if (wasReady && !this.shut) this.onClose(new Error(`the SSH connection to ${this.cfg.address}:${this.cfg.port} closed`));
      });
      try {
        // The socket is the pool's own, so that it sees every byte that comes in (what makes a connection quiet).
        // Connecting before ssh2 takes it: ssh2 then waits for its 'connect' (as with a socket of its own).
        const config = this.connectConfig(verdict);
        const sock = new Socket();
        sock.connect(this.cfg.port, this.cfg.address);
        client.connect({ ...config, sock });
        // ssh2 paused the socket: this listener does not start the flow, ssh2 does once its parser listens.
        sock.on('data', () => (conn.heardAt = Date.now()));
      } catch (e) {
        settled = true;
        reject(e);
      }
    });
    conn.ready.catch(() => client.end());
    this.conns.push(conn);
    return conn;
  }

  private describe(err: Error, v: HostKeyVerdict | undefined): GpurunError {
    const c = this.cfg;
    const where = `${c.address}:${c.port}`;
    if (v && !v.ok) {
      const what = v.kind === 'unknown' ? `is not in ${c.knownHosts}` : v.kind === 'changed' ? `has CHANGED (it differs from line ${v.conflictingLines.join(', ')} of ${c.knownHosts})` : 'is marked @revoked';
      const hint =
        v.kind === 'changed'
          ? `If the host was reinstalled and ${v.fingerprint} is its new key (check on the host: ssh-keygen -lf /etc/ssh/ssh_host_${v.keyType.replace(/^ssh-/, '')}_key.pub), replace that line with:\n  ${v.lineToAdd}`
          : `If ${v.fingerprint} is the host's key (check on the host: ssh-keygen -lf /etc/ssh/ssh_host_${v.keyType.replace(/^ssh-/, '')}_key.pub), add this line to ${c.knownHosts}:\n  ${v.lineToAdd}`;
      return new GpurunError('E_UNREACHABLE', `${this.what} (${where}): refused its host key ${v.keyType} ${v.fingerprint}: the key ${what}`, { hint, cause: err });
    }
    const level = (err as Error & { level?: string }).level;
    if (level === 'client-authentication') {
      return new GpurunError('E_UNREACHABLE', `${this.what} (${where}): login as ${c.user} was refused`, { hint: `Put the broker's public key in ~${c.user}/.ssh/authorized_keys on the host, or fix identityFile/agent.`, cause: err });
    }
    return new GpurunError('E_UNREACHABLE', `${this.what} (${where}): ${err.message}`, { cause: err });
  }

  /** A connection with a free channel slot, opening one if needed; the slot is taken. */
  private async acquire(): Promise<PooledConn> {
    if (this.shut) throw new GpurunError('E_UNREACHABLE', `${this.what}: the broker is shutting down`);
    const now = Date.now();
    let conn = this.conns.find((c) => !c.closed && c.channels < MAX_CHANNELS && !quiet(c, now, this.quietMs));
    if (!conn) conn = this.open();
    conn.channels++;
    try {
      await conn.ready;
    } catch (e) {
      conn.channels--;
      throw e;
    }
    return conn;
  }

  /** Connects (if not yet) and returns; rejects with the reason the host cannot be reached. */
  async check(): Promise<void> {
    const c = await this.acquire();
    c.channels--;
  }

  async spawn(argv: readonly string[], opts: SpawnOptions = {}): Promise<ClientChannel> {
    // sshd refuses a session ("open failed") while it still counts sessions this side has seen close (MaxSessions):
    // a burst of short commands meets that now and then. Such a refusal is tried again shortly, a few times.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.spawnOnce(argv, opts);
      } catch (e) {
        if (attempt >= OPEN_TRIES || !/open failed/i.test((e as Error).message)) throw e;
        await new Promise((r) => setTimeout(r, 100 * attempt));
      }
    }
  }

  private async spawnOnce(argv: readonly string[], opts: SpawnOptions): Promise<ClientChannel> {
    const conn = await this.acquire();
    const command = shellCommand(argv);
    const execOpts = opts.pty ? { pty: { ...opts.pty, width: 0, height: 0 } } : {};
    return new Promise<ClientChannel>((resolve, reject) => {
      // A host that takes the connection's packets but never answers the open (it hangs, or the link went silent
      // and keepalives do not end the connection) would leave the caller waiting without end.
      let late = false;
      const timer = setTimeout(() => {
        late = true;
        reject(new GpurunError('E_UNREACHABLE', `${this.what}: the host did not open an SSH channel within ${Math.round(OPEN_TIMEOUT_MS / 1000)} s`));
      }, OPEN_TIMEOUT_MS);
      conn.client.exec(command, execOpts, (err, ch) => {
        clearTimeout(timer);
        if (err) {
          conn.channels--;
          if (!late) reject(new GpurunError('E_UNREACHABLE', `${this.what}: could not open an SSH channel: ${err.message}`, { cause: err }));
          return;
        }
        if (late) {
          // Opened after its caller was told it failed: nobody reads it, so it goes at once.
          ch.once('close', () => conn.channels--);
          ch.close();
          return;
        }
        ch.once('exit', (code: number | null, signal?: string) => exits.set(ch, { code: code ?? null, signal: signal ?? null }));
        ch.once('close', () => conn.channels--);
        resolve(ch);
      });
    });
  }

  async forwardOut(address: string, port: number): Promise<ClientChannel> {
    const conn = await this.acquire();
    return new Promise<ClientChannel>((resolve, reject) => {
      conn.client.forwardOut('127.0.0.1', 0, address, port, (err, ch) => {
        if (err) {
          conn.channels--;
          reject(new GpurunError('E_UNREACHABLE', `${this.what}: could not connect to ${address}:${port} there: ${err.message}`, { cause: err, hint: 'Is anything listening on that port in the job? (The SSH server must also allow TCP forwarding: AllowTcpForwarding yes.)' }));
          return;
        }
        ch.once('close', () => conn.channels--);
        resolve(ch);
      });
    });
  }

  async exec(argv: readonly string[], opts: { stdin?: string | Buffer; timeoutMs?: number } = {}): Promise<ExecResult> {
    const ch = await this.spawn(argv);
    return new Promise<ExecResult>((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let code: number | null = null;
      let signal: string | null = null;
      const timer = opts.timeoutMs
        ? setTimeout(() => {
            ch.close();
            reject(new GpurunError('E_UNREACHABLE', `${this.what}: ${argv[0]} did not finish within ${opts.timeoutMs} ms`));
          }, opts.timeoutMs)
        : undefined;
      ch.on('data', (d: Buffer) => out.push(d));
      ch.stderr.on('data', (d: Buffer) => err.push(d));
      onExit(ch, (e) => {
        code = e.code;
        signal = e.signal;
      });
      ch.on('close', () => {
        clearTimeout(timer);
        resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
      });
      if (opts.stdin !== undefined) ch.end(opts.stdin);
      else ch.end();
    });
  }

  async run(argv: readonly string[], what: string, opts: { timeoutMs?: number } = {}): Promise<string> {
    const r = await this.exec(argv, opts);
    if (r.code !== 0) {
      const stderr = r.stderr.trim();
      throw new GpurunError('E_INTERNAL', `${this.what}: ${what} failed (exit ${r.code ?? r.signal}): ${stderr.split('\n').slice(-3).join(' / ') || '(no output)'}`, {
        exitCode: r.code ?? undefined,
        stderr,
      });
    }
    return r.stdout;
  }

  private sftpSession?: { conn?: PooledConn; ready: Promise<SFTPWrapper> };

  /**
   * The pool's one SFTP session (the sftp subsystem on a pooled connection, holding one of its channel slots),
   * shared by every caller: SFTP requests on one session run concurrently. Opened again after it or its
   * connection closes.
   */
  sftp(): Promise<SFTPWrapper> {
    const cur = this.sftpSession;
    if (cur && !cur.conn?.closed) return cur.ready;
    const session: { conn?: PooledConn; ready: Promise<SFTPWrapper> } = { ready: Promise.resolve(undefined as never) };
    const forget = () => {
      if (this.sftpSession === session) this.sftpSession = undefined;
    };
    session.ready = (async () => {
      const conn = await this.acquire();
      session.conn = conn;
      return new Promise<SFTPWrapper>((resolve, reject) => {
        conn.client.sftp((err, sftp) => {
          if (err) {
            conn.channels--;
            reject(new GpurunError('E_UNREACHABLE', `${this.what}: could not start SFTP: ${err.message}`, { cause: err, hint: 'The SSH server must offer the sftp subsystem (a "Subsystem sftp" line in its sshd_config).' }));
            return;
          }
          sftp.once('close', () => {
            conn.channels--;
            forget();
          });
          resolve(sftp);
        });
      });
    })();
    session.ready.catch(forget);
    this.sftpSession = session;
    return session.ready;
  }

  /**
   * Gives up every connection to the host now (the host is known to be gone, or rebooted): their channels end, the
   * next caller opens a new one.
   */
  dropAll(): void {
    this.sftpSession = undefined;
    for (const c of this.conns.splice(0)) {
      c.closed = true;
      c.client.destroy();
    }
  }

  /** Connections whose host has been silent for a while (they take no new channels), for logs and tests. */
  quietCount(): number {
    const now = Date.now();
    return this.conns.filter((c) => !c.closed && quiet(c, now, this.quietMs)).length;
  }

  close(): void {
    this.shut = true;
    this.sftpSession = undefined;
    for (const c of this.conns.splice(0)) c.client.end();
  }
}
