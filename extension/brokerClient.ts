/**
 * The connection to the broker: a team broker (gpurun.brokerUrl and the token in SecretStorage) or, with no URL, the
 * local broker on the Unix socket of $GPURUN_HOME, started here (via the bundled CLI) when it is not running.
 * The HTTP client itself is server/protocol/client.ts (undici; non-2xx answers become GpurunError with the code).
 */
import { execFile, spawn } from 'node:child_process';
import { connect as tlsConnect } from 'node:tls';
import { mkdirSync, openSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as vscode from 'vscode';
import { BrokerClient } from '../server/protocol/client.ts';
import { GpurunError } from '../server/protocol/errors.ts';
import { gpurunHome } from '../server/protocol/paths.ts';
import { nodeVersionOk, pickBrokerNode, type NodeCandidate } from './core/brokerNode.ts';
import { SETTINGS, SETTINGS_SECTION, tokenKey } from './contributions.ts';
import type { Log } from './log.ts';

export interface Connection {
  client: BrokerClient;
  /** True for the local broker this extension starts. */
  embedded: boolean;
  address: string;
  /** Makes sure the broker is there again (restarts the local one); used when a stream breaks. */
  revive(): Promise<void>;
}

const START_TIMEOUT_MS = 20_000;

export class Broker implements vscode.Disposable {
  private conn: Promise<Connection> | undefined;
  private readonly changed = new vscode.EventEmitter<void>();
  /** Fires when the connection settings change (URL, sign in/out): everything reconnects. */
  readonly onDidChange = this.changed.event;
  /** PID of the local broker this window started, if it did. */
  startedPid: number | undefined;
  private readonly extensionPath: string;
  private readonly secrets: vscode.SecretStorage;
  private readonly log: Log;

  constructor(extensionPath: string, secrets: vscode.SecretStorage, log: Log) {
    this.extensionPath = extensionPath;
    this.secrets = secrets;
    this.log = log;
  }

  url(): string {
    return vscode.workspace.getConfiguration(SETTINGS_SECTION).get<string>(SETTINGS.brokerUrl.key, SETTINGS.brokerUrl.default).trim();
  }

  /** The broker's address and token as a child process gets them (the language server), without connecting. */
  async credentials(): Promise<{ address: string; token?: string }> {
    const url = this.url();
    if (!url) return { address: `unix:${join(gpurunHome(), 'broker.sock')}` };
    const token = await this.secrets.get(tokenKey(url));
    return token ? { address: url, token } : { address: url };
  }

  /** The current connection (made on first use; the local broker is started then). */
  connection(): Promise<Connection> {
    if (!this.conn) {
      this.conn = this.open();
      this.conn.catch(() => (this.conn = undefined));
    }
    return this.conn;
  }

  /** Drops the connection; the next use connects again with the current settings. */
  reset(): void {
    const old = this.conn;
    this.conn = undefined;
    void old?.then((c) => c.client.close()).catch(() => {});
    this.changed.fire();
  }

  private async open(): Promise<Connection> {
    const url = this.url();
    if (url) {
      const token = await this.secrets.get(tokenKey(url));
      const fingerprint = url.startsWith('https:') ? await this.pinFor(url) : undefined;
      const client = new BrokerClient({ address: url, ...(token ? { token } : {}), ...(fingerprint ? { fingerprint } : {}) });
      this.log.info(`connecting to the broker at ${url}${token ? ' with a token' : ' without a token'}`);
      return { client, embedded: false, address: url, revive: async () => {} };
    }
    const home = gpurunHome();
    const address = `unix:${join(home, 'broker.sock')}`;
    const client = new BrokerClient({ address });
    const conn: Connection = { client, embedded: true, address, revive: () => this.ensureLocal(client, home, false) };
    await this.ensureLocal(client, home, true);
    return conn;
  }

  /**
   * The certificate pin of an https broker: the gpurun.brokerFingerprint setting; when it is empty and the certificate
   * is not signed by a CA this machine trusts (a broker's self-signed one), trust on first use: a modal shows the
   * fingerprint to compare with the one the broker's admin gives, and "Trust" stores it in the setting.
   */
  private async pinFor(url: string): Promise<string | undefined> {
    const cfg = vscode.workspace.getConfiguration(SETTINGS_SECTION);
    const pinned = cfg.get<string>(SETTINGS.brokerFingerprint.key, '').trim();
    if (pinned) return pinned;
    const peer = await peerCertificate(url);
    if (peer.trusted) return undefined;
    const trust = 'Trust This Certificate';
    const pick = await vscode.window.showWarningMessage(
      `The broker at ${url} presents a certificate that no authority this machine trusts has signed (${peer.why}).`,
      { modal: true, detail: `SHA-256 fingerprint:\n${peer.fingerprint}\n\nCompare it with the fingerprint the broker's admin gives you (gpurun broker prints it at start). Trust it only if they are the same: it is then kept in the setting gpurun.brokerFingerprint, and a broker with any other certificate is refused.` },
      trust,
    );
    if (pick !== trust) throw new GpurunError('E_TLS', `the certificate of ${url} was not trusted`, { hint: 'Set gpurun.brokerFingerprint to the fingerprint the broker\'s admin gives you, or sign in again and trust it.' });
    await cfg.update(SETTINGS.brokerFingerprint.key, peer.fingerprint, vscode.ConfigurationTarget.Global);
    this.log.info(`trusted the certificate of ${url} on first use: ${peer.fingerprint}`);
    return peer.fingerprint;
  }

  /** Starts the local broker unless it answers; with `progress`, shows a notification while it starts. */
  private async ensureLocal(client: BrokerClient, home: string, progress: boolean): Promise<void> {
    if (await isUp(client)) return;
    const start = async () => {
      const node = await this.node();
      mkdirSync(home, { recursive: true, mode: 0o700 });
      const cli = join(this.extensionPath, 'dist', 'cli.js');
      const out = openSync(join(home, 'broker.log'), 'a', 0o600);
      this.log.info(`starting the local broker: ${node.path} ${cli} broker --embedded (GPURUN_HOME=${home})`);
      const child = spawn(node.path, [cli, 'broker', '--embedded'], {
        detached: true,
        stdio: ['ignore', out, out],
        env: { ...process.env, ...node.env, GPURUN_HOME: home },
      });
      closeSync(out);
      child.unref();
      this.startedPid = child.pid;
      const deadline = Date.now() + START_TIMEOUT_MS;
      while (Date.now() < deadline) {
        if (await isUp(client)) {
          this.log.info(`the local broker is up (pid ${child.pid})`);
          return;
        }
        if (child.exitCode !== null) break;
        await sleep(50);
      }
      throw new GpurunError('E_UNREACHABLE', `the local broker did not start`, { hint: `See ${join(home, 'broker.log')}.` });
    };
    if (!progress) return start();
    return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: 'GPU Run: starting the local broker…' }, start);
  }

  /** The Node that runs the bundled CLI: the local broker, and `serve-workspace` for client-served jobs. */
  async node(): Promise<NodeCandidate> {
    const configured = vscode.workspace.getConfiguration(SETTINGS_SECTION).get<string>(SETTINGS.localBrokerNode.key, '').trim() || undefined;
    const pick = pickBrokerNode({ execPath: process.execPath, nodeVersion: process.versions.node, electron: Boolean(process.versions.electron) }, configured);
    if (pick) return pick;
    // VS Code's runtime is too old for node:sqlite: try `node` on PATH.
    const v = await new Promise<string | undefined>((r) => execFile('node', ['-v'], { timeout: 5000 }, (err, out) => r(err ? undefined : out.trim())));
    if (v && nodeVersionOk(v)) return { path: 'node', version: v };
    throw new GpurunError('E_CONFIG', `the local broker needs Node.js 22.5 or newer; VS Code runs ${process.versions.node}${v ? ` and node on PATH is ${v}` : ''}`, {
      hint: 'Install Node.js 22.5+ and set gpurun.localBrokerNode to it, or set gpurun.brokerUrl to a team broker.',
    });
  }

  /** Stops the local broker this window started, if no job of it is queued or running. */
  async stopLocalIfIdle(activeJobs: number): Promise<void> {
    if (!this.startedPid || this.url() || activeJobs > 0) return;
    let pid = this.startedPid;
    try {
      pid = Number(readFileSync(join(gpurunHome(), 'broker.lock'), 'utf8')) || pid;
    } catch {
      /* no lock: it has gone */
      return;
    }
    try {
      process.kill(pid, 'SIGTERM');
      this.log.info(`stopped the local broker (pid ${pid}): no job is running`);
    } catch {
      /* already gone */
    }
  }

  dispose(): void {
    void this.conn?.then((c) => c.client.close()).catch(() => {});
    this.changed.dispose();
  }
}

async function isUp(client: BrokerClient): Promise<boolean> {
  try {
    return (await client.health()).ok;
  } catch {
    return false;
  }
}

/** The certificate an https broker presents: its fingerprint, and whether this machine's CAs vouch for it. */
function peerCertificate(url: string): Promise<{ fingerprint: string; trusted: boolean; why?: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const host = u.hostname.replace(/^\[|\]$/g, '');
    const s = tlsConnect({ host, port: Number(u.port || 443), rejectUnauthorized: false, ...(/^[\d.:]+$/.test(host) ? {} : { servername: host }) }, () => {
      const fingerprint = s.getPeerCertificate().fingerprint256;
      const trusted = s.authorized;
      const why = s.authorizationError ? String(s.authorizationError) : undefined;
      s.end();
      resolve({ fingerprint, trusted, ...(why ? { why } : {}) });
    });
    s.setTimeout(10_000, () => s.destroy(new Error('timed out')));
    s.on('error', (err) => reject(new GpurunError('E_UNREACHABLE', `cannot reach the broker at ${url} (${err.message})`, { hint: 'Check gpurun.brokerUrl and that the broker runs.' })));
  });
}
