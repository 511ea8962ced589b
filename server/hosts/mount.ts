/**
 * The developer's workspace mounted on a GPU host with SSHFS, by one of two transports:
 * - direct: the host runs `sshfs user@devmachine:/path` itself (with reconnect and keepalives); the broker is not in
 *   the data path, so the mount outlives a broker restart. The SFTP side runs `gpurun sftp-serve --root /path`
 *   on the developer's machine (confined to the workspace).
 * - relay: the host runs `sshfs -o passive`, whose SFTP stream travels over the broker's SSH channel to a confined
 *   sftp-server the broker runs next to the files (the broker must run on the machine that owns the workspace),
 *   or, for a job whose workspace the client serves (`workspaceFrom: "client"`), on to the client's stream
 *   (hosts/clientWorkspaces.ts): the client runs the confined SFTP server and the broker only relays bytes.
 * Builders are pure and unit-tested; `Mounts` runs them over a RemoteExec.
 */
import { posix } from 'node:path';
import { GpurunError } from '../protocol/errors.ts';
import type { MountConfig } from './sshConfig.ts';
import type { RemoteExec } from './ssh.ts';
import { quoteShell } from '../core/shellQuote.ts';
import { serveSftp, type SftpSession } from './sftpGuard.ts';
import type { Duplex } from 'node:stream';
import type { WorkspaceServeStart } from '../protocol/jobs.ts';

/**
 * Options for many small files (Python imports: a stat and an open per candidate path): attributes, directory
 * listings and negative lookups are cached for a short while, and file contents stay in the page cache while the
 * file is unchanged. Measured by bench/ssh.ts.
 */
export const TUNED_OPTIONS = ['kernel_cache', 'dir_cache=yes', 'dcache_timeout=20', 'entry_timeout=20', 'attr_timeout=20', 'negative_timeout=20'];

/**
 * Where a job's workspace is mounted on the host: under the broker's own folder, so the orphan sweep of one broker
 * never touches the mounts of another broker sharing the host (and workDir).
 */
export function mountPoint(workDir: string, brokerId: string, jobId: string): string {
  return posix.join(mountsDir(workDir, brokerId), jobId);
}

/** The folder of one broker's mount points on a host. */
export function mountsDir(workDir: string, brokerId: string): string {
  return posix.join(workDir, 'mnt', brokerId);
}

/** A value inside `-o a,b,c`: libfuse splits on commas, and takes `\` as an escape. */
export function fuseOptValue(s: string): string {
  return s.replace(/[\\,]/g, '\\$&');
}

function commonOptions(m: MountConfig): string[] {
  return ['allow_other', 'idmap=none', ...(m.readOnly ? ['ro'] : []), ...TUNED_OPTIONS, ...m.options];
}

/** argv of the direct mount (run on the host; sshfs daemonizes once mounted). */
export function sshfsDirectArgs(m: MountConfig, workspace: string, mnt: string): string[] {
  const t = /^([\w.-]+)@([\w.-]+)(?::(\d+))?$/.exec(m.target ?? '');
  if (!t) throw new GpurunError('E_CONFIG', `mount.target "${m.target}" is not user@host[:port]`);
  // The remote command runs in the developer's login shell: every word quoted, then escaped for the -o list.
  const server = `${m.sftpServer} --root ${quoteShell(workspace)}${m.readOnly ? ' --read-only' : ''}`;
  const opts = [
    ...commonOptions(m),
    'reconnect',
    'ServerAliveInterval=5',
    'ServerAliveCountMax=3',
    'BatchMode=yes',
    'StrictHostKeyChecking=yes',
    ...(m.identityFile ? [`IdentityFile=${m.identityFile}`] : []),
    ...(m.knownHosts ? [`UserKnownHostsFile=${m.knownHosts}`] : []),
    `sftp_server=${fuseOptValue(server)}`,
  ];
  return ['sshfs', `${t[1]}@${t[2]}:${workspace}`, mnt, ...(t[3] ? ['-p', t[3]] : []), '-o', opts.join(',')];
}

/** argv of the relay mount: sshfs in the foreground speaking SFTP on its stdin/stdout. */
export function sshfsRelayArgs(m: MountConfig, workspace: string, mnt: string): string[] {
  return ['sshfs', '-f', '-o', ['passive', ...commonOptions(m)].join(','), `:${workspace}`, mnt];
}

/** argv that unmounts (lazily, so a busy mount goes too) and removes the mount point; succeeds if already gone. */
export function unmountArgs(mnt: string): string[] {
  return ['sh', '-c', 'fusermount3 -uz "$1" 2>/dev/null || fusermount -uz "$1" 2>/dev/null || umount -l "$1" 2>/dev/null; rmdir "$1" 2>/dev/null; test ! -e "$1"', 'gpurun-unmount', mnt];
}

/** argv that prints the file system type of the mount point (`fuse.sshfs` or `fuse` while mounted). */
export function mountCheckArgs(mnt: string): string[] {
  return ['timeout', '10', 'stat', '-f', '-c', '%T', mnt];
}

/** Whether mountCheckArgs' output says the FUSE mount is alive. */
export function isFuseType(out: string): boolean {
  return /^fuse/.test(out.trim());
}

export interface MountHandle {
  mnt: string;
  transport: 'direct' | 'relay';
  /** relay only: the local SFTP session; gone after a broker restart. */
  session?: SftpSession;
  /** relay only: resolves with why the stream ended. */
  ended?: Promise<string>;
}

/** Where a relay mount's SFTP is served: by the broker (default), or by the client's stream. */
export interface MountSource {
  /** The client's stream; rejects when none comes in time (hosts/clientWorkspaces.ts `take`). */
  fromClient(): Promise<Duplex>;
}

/** How a relay's sshfs ended on the host, when the host said (null: the channel closed without an exit status). */
type RelayExit = { code: number | null; signal: string | null } | null;

/**
 * Why a relay stream ended, in words: sshfs exited on the host (the host's side failed), or the channel closed
 * without an exit status (the broker's SSH connection to the host dropped: gpurun's own path).
 */
export function relayEnd(exit: RelayExit, stderr: string): string {
  const said = stderr.trim() ? `: ${stderr.trim()}` : '';
  if (exit) return `sshfs on the host exited (${exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`})${said}`;
  return `the SFTP relay stream ended (the broker's SSH channel to the host closed)${said}`;
}

/** How long a relay mount may take to come up. */
const READY_MS = 60_000;

export class Mounts {
  /** Relay sessions of this broker process, by mount point. */
  private readonly relays = new Map<string, MountHandle>();

  /** With `source.fromClient`, the mount is a relay to the client whatever the host's transport. */
  async mount(ssh: RemoteExec, m: MountConfig, workspace: string, mnt: string, log: (msg: string) => void, source?: MountSource): Promise<MountHandle> {
    // Wait for the client before touching the host, so a client that never comes leaves nothing behind.
    const client = source ? await source.fromClient() : undefined;
    await ssh.run(['mkdir', '-p', mnt], 'creating the mount point');
    // The relay's sshfs channel, closed on failure so sshfs does not wait on the host until sshd drops it.
    let relayCh: { close(): void } | undefined;
    try {
      if (client) return await this.relayToClient(ssh, m, workspace, mnt, client);
      if (m.transport === 'direct') {
        await ssh.run(sshfsDirectArgs(m, workspace, mnt), `mounting ${m.target}:${workspace} with sshfs`, { timeoutMs: 30_000 });
        return { mnt, transport: 'direct' };
      }
      const ch = await ssh.spawn(sshfsRelayArgs(m, workspace, mnt));
      relayCh = ch;
      let stderr = '';
      ch.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')).length > 4096 && (stderr = stderr.slice(-4096)));
      const session = serveSftp(workspace, ch, ch, { readOnly: m.readOnly, onDenied: (why) => log(`sftp request refused: ${why}`) });
      const ended = new Promise<string>((resolve) => ch.on('close', () => resolve(relayEnd(exit, stderr))));
      let exit: RelayExit = null;
      ch.on('exit', (code: number | null, signal?: string) => (exit = { code, signal: signal ?? null }));
      ended.then(() => session.close());
      const handle: MountHandle = { mnt, transport: 'relay', session, ended };
      await this.waitReady(ssh, mnt, ended, () => stderr);
      this.relays.set(mnt, handle);
      return handle;
    } catch (e) {
      client?.destroy();
      relayCh?.close();
      await this.unmount(ssh, mnt).catch(() => {});
      throw e;
    }
  }

  /** The host's sshfs channel piped to the client's stream, after one JSON line that tells the client to start. */
  private async relayToClient(ssh: RemoteExec, m: MountConfig, workspace: string, mnt: string, client: Duplex): Promise<MountHandle> {
    const ch = await ssh.spawn(sshfsRelayArgs(m, workspace, mnt));
    let stderr = '';
    ch.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')).length > 4096 && (stderr = stderr.slice(-4096)));
    let clientGone = client.destroyed;
    let exit: RelayExit = null;
    ch.on('exit', (code: number | null, signal?: string) => (exit = { code, signal: signal ?? null }));
    const ended = new Promise<string>((resolve) => {
      ch.on('close', () => {
        client.destroy();
        resolve(clientGone ? 'the client that served the workspace disconnected (gpurun run ended or lost its connection to the broker)' : relayEnd(exit, stderr));
      });
    });
    client.on('error', () => {}); // its end is reported through 'close'
    ch.on('error', () => {});
    // 'end' comes before 'close', and piping passes it on to sshfs at once: note the client left first.
    client.once('end', () => (clientGone = true));
    client.once('close', () => {
      clientGone = true;
      ch.close();
    });
    if (clientGone) ch.close();
    const start: WorkspaceServeStart = { host: ssh.hostName, readOnly: m.readOnly };
    client.write(`${JSON.stringify(start)}\n`);
    ch.pipe(client);
    client.pipe(ch);
    const handle: MountHandle = { mnt, transport: 'relay', ended };
    await this.waitReady(ssh, mnt, ended, () => stderr);
    this.relays.set(mnt, handle);
    return handle;
  }

  /**
   * sshfs -f does not say when the mount is ready: polls the file system type. A check that fails to answer (a busy
   * host during a burst of starts) is only "not yet"; the mount fails when the relay ends or after READY_MS.
   */
  private async waitReady(ssh: RemoteExec, mnt: string, ended: Promise<string>, stderr: () => string): Promise<void> {
    const deadline = Date.now() + READY_MS;
    for (let i = 0; ; ) {
      const race = await Promise.race([ended.then((why) => ({ why })), this.alive(ssh, mnt).then((ok) => ({ ok }), () => ({ ok: false }))]);
      if ('why' in race) throw new GpurunError('E_INTERNAL', `host ${ssh.hostName}: sshfs (relay) failed: ${race.why}`, { stderr: stderr() });
      if (race.ok) return;
      if (Date.now() > deadline) throw new GpurunError('E_INTERNAL', `host ${ssh.hostName}: the relay mount did not come up within ${READY_MS / 1000} s`, { stderr: stderr() });
      // Soon at first (a mount is usually up within a few checks), then less often: each check is a channel and a process.
      await new Promise((r) => setTimeout(r, Math.min(500, 50 * 2 ** Math.min(i++, 4))));
    }
  }

  /** The relay handle of a mount made by this broker process, if any. */
  relay(mnt: string): MountHandle | undefined {
    return this.relays.get(mnt);
  }

  async alive(ssh: RemoteExec, mnt: string): Promise<boolean> {
    const r = await ssh.exec(mountCheckArgs(mnt), { timeoutMs: 15_000 });
    return r.code === 0 && isFuseType(r.stdout);
  }

  async unmount(ssh: RemoteExec, mnt: string): Promise<void> {
    const h = this.relays.get(mnt);
    this.relays.delete(mnt);
    await ssh.run(unmountArgs(mnt), `unmounting ${mnt}`, { timeoutMs: 30_000 });
    h?.session?.close();
  }
}
