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
import { onExit, type RemoteExec } from './ssh.ts';
import { quoteShell } from '../core/shellQuote.ts';
import { serveSftp, type SftpSession } from './sftpGuard.ts';
import type { Duplex } from 'node:stream';
import type { WorkspaceServeStart } from '../protocol/jobs.ts';
import { overlayMountArgs, probeLayout, snapshotJobDir, snapshotPaths, SnapshotSync, syncCache, type SnapshotPaths } from './snapshot.ts';
import { ClientSftp, ClientSide } from './clientSide.ts';
import { DevSide, LocalSide, type WorkspaceSide } from './workspaceSide.ts';
import { listingArgs, parseListing, rooted, type Layout } from './snapshotPlan.ts';

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

/**
 * `sshfsArgv` run so that symlinks reach the job as they are on the developer's disk. Debian's sshfs (3.7.3 with
 * its `contain_symlinks` patch, on by default) answers EPERM to readlink of any link whose text is absolute or has
 * `..`, which breaks every virtualenv (`.venv/bin/python3 -> /usr/bin/python3`: `exec: Operation not permitted`).
 * The link's text is only text: the job resolves it in its own file system (the container's, or the host's for a
 * process job), never on the developer's machine, where the SFTP guard still refuses every path that leads out.
 * So `no_contain_symlinks` is given where this sshfs knows it (upstream sshfs has no such option, and refuses
 * unknown ones), before the other options so that `mount.options` can still turn containment back on.
 */
export function sshfsLinksAsIs(sshfsArgv: string[]): string[] {
  const script = 'if sshfs -h 2>&1 | grep -q no_contain_symlinks; then shift; exec sshfs -o no_contain_symlinks "$@"; fi; exec "$@"';
  return ['sh', '-c', script, 'gpurun-sshfs', ...sshfsArgv];
}

/** argv that unmounts (lazily, so a busy mount goes too) and removes the mount point; succeeds if already gone. */
export function unmountArgs(mnt: string): string[] {
  return ['sh', '-c', UNMOUNT_SH, 'gpurun-unmount', mnt, snapshotJobDir(mnt)];
}

/**
 * Unmounts $1 (sshfs or a snapshot's overlay), then a snapshot's parts in $2 if there are any: its sshfs mount, then
 * the folder. The folder is removed only once nothing is mounted in it, and never across file systems (so never
 * through a mount into the developer's workspace).
 */
const UNMOUNT_SH = [
  'um() { fusermount3 -uz "$1" 2>/dev/null || fusermount -uz "$1" 2>/dev/null || umount -l "$1" 2>/dev/null; }',
  'um "$1"; rmdir "$1" 2>/dev/null',
  'if [ -d "$2" ]; then',
  '  um "$2/lazy"',
  '  case $(stat -f -c %T "$2/lazy" 2>/dev/null) in fuse*) ;; *) rm -rf --one-file-system "$2" ;; esac',
  'fi',
  'test ! -e "$1"',
].join('\n');

/** argv that prints the file system type of the mount point (`fuse.sshfs` or `fuse` while mounted). */
export function mountCheckArgs(mnt: string): string[] {
  return ['timeout', '10', 'stat', '-f', '-c', '%T', mnt];
}

/** The exit code of mountCheckArgs when the check did not answer in time (`timeout`'s). */
export const MOUNT_CHECK_TIMED_OUT = 124;

/**
 * The layers of the snapshot overlay mounted at `mnt`, from /proc/mounts (overlayMountArgs' options; the host's
 * workDir has no ",", ":" or "\\", and /proc/mounts writes a space as \\040), or undefined where there is none.
 */
export function overlayOf(procMounts: string, mnt: string): { cache: string; lazy: string; upper: string; work: string; layout: Layout } | undefined {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of procMounts.split('\n')) {
    const [, at, type, opts] = line.split(' ');
    if (type !== 'overlay' || !at || unescape(at) !== mnt || !opts) continue;
    const o = new Map(unescape(opts).split(',').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as [string, string]));
    const lower = o.get('lowerdir');
    const upper = o.get('upperdir');
    const work = o.get('workdir');
    if (!lower || !upper || !work) continue;
    const names = lower.includes('::');
    const [cache, lazy] = names ? lower.split('::') : lower.split(':');
    if (!cache || !lazy) continue;
    return { cache, lazy, upper, work, layout: names ? 'names' : 'opaque' };
  }
  return undefined;
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
  /** snapshot mounts only: the write-back loop and the watch on the workspace. */
  snapshot?: SnapshotSync;
  /** snapshot mounts only: the sshfs mount under the overlay (what `alive` checks). */
  lazy?: string;
  /** snapshot mounts only: the file that says when the host's cache was last used (snapshotPaths). */
  stamp?: string;
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

function relayKey(ssh: RemoteExec, mnt: string): string {
  return `${ssh.hostName}\0${mnt}`;
}

/** How long a relay mount may take to come up. */
const READY_MS = 60_000;

export class Mounts {
  /**
   * Relay sessions of this broker process, by host and mount point (hosts often share one workDir: a job that moved
   * to another host has the same mount point there, and the old host's cleanup must not end the new relay).
   */
  private readonly relays = new Map<string, MountHandle>();

  /** The snapshot layout each host supports (hosts/snapshotPlan.ts Layout), checked at its first snapshot mount. */
  private readonly layouts = new Map<string, Promise<{ layout: Layout | 'none'; why?: string }>>();
  private readonly layoutsKnown = new Map<string, { layout: Layout | 'none'; why?: string }>();

  /**
   * With `source.fromClient`, the mount is a relay to the client whatever the host's transport. `owner` keys the
   * host's cache of a snapshot mount (`mount.snapshot`, not read-only).
   */
  async mount(ssh: RemoteExec, m: MountConfig, workspace: string, mnt: string, log: (msg: string) => void, source?: MountSource, owner = ''): Promise<MountHandle> {
    // Wait for the client before touching the host, so a client that never comes leaves nothing behind.
    const client = source ? await source.fromClient() : undefined;
    await ssh.run(['mkdir', '-p', mnt], 'creating the mount point');
    // The relay's sshfs channel, closed on failure so sshfs does not wait on the host until sshd drops it.
    const relayCh: { ch?: { close(): void } } = {};
    try {
      if (client) {
        const sftp = await this.clientSession(ssh, m, client);
        const snapshot = m.clientSnapshot ?? m.snapshot;
        if (snapshot && !m.readOnly) {
          if (!sftp.feed) log('workspace: plain sshfs: the gpurun that serves the workspace has no snapshot support (an older version); update it for imports at local-disk speed');
          else {
            const k = await this.snapshotLayout(ssh, { ...m, snapshot }, mnt, log);
            if (k) return await this.snapshotMount(ssh, mnt, log, snapshotPaths(mnt, `${owner}\0client`, workspace, k.layout), k, (at) => this.relayToClient(ssh, m, workspace, at, client, sftp.session, relayCh), new ClientSide(sftp.session, workspace));
          }
        }
        const handle = await this.relayToClient(ssh, m, workspace, mnt, client, sftp.session, relayCh);
        this.relays.set(relayKey(ssh, mnt), handle);
        return handle;
      }
      if (m.snapshot && !m.readOnly) {
        const k = await this.snapshotLayout(ssh, m, mnt, log);
        // A direct mount's cache is also keyed by the developer's machine: the same path there is another workspace.
        if (k && m.transport === 'direct') {
          const lazy = async (at: string): Promise<MountHandle> => {
            // Registered before the mount, so that a failure below unmounts it.
            this.relays.set(relayKey(ssh, mnt), { mnt, transport: 'direct', lazy: at });
            await this.directMount(ssh, m, workspace, at);
            return { mnt, transport: 'direct' };
          };
          return await this.snapshotMount(ssh, mnt, log, snapshotPaths(mnt, `${owner}\0${m.target}`, workspace, k.layout), k, lazy, new DevSide(ssh, m, workspace));
        }
        if (k) return await this.snapshotMount(ssh, mnt, log, snapshotPaths(mnt, owner, workspace, k.layout), k, (at) => this.relayMount(ssh, m, workspace, at, log, relayCh), new LocalSide(workspace));
      }
      if (m.transport === 'direct') {
        await this.directMount(ssh, m, workspace, mnt);
        return { mnt, transport: 'direct' };
      }
      const handle = await this.relayMount(ssh, m, workspace, mnt, log, relayCh);
      this.relays.set(relayKey(ssh, mnt), handle);
      return handle;
    } catch (e) {
      client?.destroy();
      relayCh.ch?.close();
      await this.unmount(ssh, mnt).catch(() => {});
      throw e;
    }
  }

  /**
   * The snapshot layout for a mount at `mnt` on this host (its folders made), or undefined where the host cannot
   * have one (said in the log): the mount is then plain sshfs.
   */
  private async snapshotLayout(ssh: RemoteExec, m: MountConfig, mnt: string, log: (msg: string) => void): Promise<{ layout: Layout; why?: string } | undefined> {
    const jobDir = snapshotJobDir(mnt);
    await ssh.run(['mkdir', '-p', jobDir], 'creating the snapshot folders');
    const { layout, why } = m.snapshot === 'opaque' ? this.forcedOpaque(ssh.hostName) : await this.layout(ssh, posix.dirname(jobDir));
    if (layout !== 'none') return { layout, why };
    log(`workspace: plain sshfs, no snapshot on this host: ${why}`);
    await ssh.exec(['rmdir', jobDir]).catch(() => undefined);
    return undefined;
  }

  /**
   * The client's SFTP session on its stream: the start line that tells it to serve (WorkspaceServeStart), then the
   * session opened by the broker (hosts/clientSide.ts); `feed`: whether the client has the snapshot feed.
   */
  private async clientSession(ssh: RemoteExec, m: MountConfig, client: Duplex): Promise<{ session: ClientSftp; feed: boolean }> {
    client.on('error', () => {}); // its end is reported through 'close'
    const start: WorkspaceServeStart = { host: ssh.hostName, readOnly: m.readOnly };
    client.write(`${JSON.stringify(start)}\n`);
    const session = new ClientSftp(client);
    return { session, feed: await session.init() };
  }

  /** The host's own sshfs to the developer's machine at `at` (sshfs daemonizes once mounted). */
  private async directMount(ssh: RemoteExec, m: MountConfig, workspace: string, at: string): Promise<void> {
    await ssh.run(sshfsLinksAsIs(sshfsDirectArgs(m, workspace, at)), `mounting ${m.target}:${workspace} with sshfs`, { timeoutMs: 30_000 });
  }

  /** The host's `sshfs -o passive` at `at`, its SFTP stream served here, confined to the workspace. */
  private async relayMount(ssh: RemoteExec, m: MountConfig, workspace: string, at: string, log: (msg: string) => void, relayCh: { ch?: { close(): void } }): Promise<MountHandle> {
    const ch = await ssh.spawn(sshfsLinksAsIs(sshfsRelayArgs(m, workspace, at)));
    relayCh.ch = ch;
    let stderr = '';
    ch.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')).length > 4096 && (stderr = stderr.slice(-4096)));
    const session = serveSftp(workspace, ch, ch, { readOnly: m.readOnly, onDenied: (why) => log(`sftp request refused: ${why}`) });
    let exit: RelayExit = null;
    onExit(ch, (e) => (exit = e));
    const ended = new Promise<string>((resolve) => ch.on('close', () => resolve(relayEnd(exit, stderr))));
    ended.then(() => session.close());
    await this.waitReady(ssh, at, ended, () => stderr);
    return { mnt: at, transport: 'relay', session, ended };
  }

  /**
   * The snapshot mount (hosts/snapshot.ts): the sshfs mount at WORKDIR/snap/JOB/lazy (`lazy`: the relay, the host's
   * own sshfs with the direct transport, or the relay to the client), the host's cache synced from where the files
   * are (`side`, hosts/workspaceSide.ts), the overlay at `mnt`.
   */
  private async snapshotMount(ssh: RemoteExec, mnt: string, log: (msg: string) => void, p: SnapshotPaths, k: { layout: Layout; why?: string }, lazy: (at: string) => Promise<MountHandle>, side: WorkspaceSide): Promise<MountHandle> {
    const { layout, why } = k;
    await ssh.run(['mkdir', '-p', p.cache, p.lazy, p.upper, p.work, posix.dirname(p.stamp)], 'creating the snapshot folders');
    // The cache is in use from now: the sweep (expireCachesArgs) leaves it alone for mount.cacheDays.
    await ssh.run(['touch', p.stamp], 'marking the cache as used');
    const handle = await lazy(p.lazy);
    // Registered at once, so that a failure below unmounts the sshfs mount too.
    this.relays.set(relayKey(ssh, mnt), { ...handle, mnt, lazy: p.lazy });
    const local = rooted(await side.walk());
    const stats = await syncCache(ssh, side, p.cache, local, layout);
    const sent = `sent ${stats.files} small files (${stats.bytes} bytes), removed ${stats.removed} entries from the host's cache`;
    if (layout === 'names') log(`workspace snapshot (every name on the host, large files' data through sshfs): ${sent}, wrote ${stats.stubs} stubs of large files`);
    else log(`workspace snapshot (small files on the host; ${why}): ${sent}, ${stats.opaque.length} folders need no sshfs lookups`);
    await ssh.run(overlayMountArgs(p, mnt, layout), 'mounting the workspace overlay', { timeoutMs: 30_000 });
    // A fresh overlay builds its dentries and inodes at each first lookup: walked once now, while the container
    // starts, so that the job's imports find them ready (bench/workspace.ts: imports at ×1.2–1.3 of local disk without, ×1.05–1.2 with).
    void ssh.exec(['du', '-s', mnt], { timeoutMs: 120_000 }).catch(() => undefined);
    const sync = new SnapshotSync(ssh, side, mnt, p, local, layout === 'names' ? 'all' : stats.opaque, log);
    const full: MountHandle = { ...handle, mnt, lazy: p.lazy, snapshot: sync, stamp: p.stamp };
    this.relays.set(relayKey(ssh, mnt), full);
    await sync.start();
    return full;
  }

  /** The layout `ssh`'s host supports, checked once per host and broker process (a failed check is tried again). */
  private layout(ssh: RemoteExec, dir: string): Promise<{ layout: Layout | 'none'; why?: string }> {
    let known = this.layouts.get(ssh.hostName);
    if (!known) {
      known = probeLayout(ssh, dir);
      this.layouts.set(ssh.hostName, known);
      known.then((k) => this.layoutsKnown.set(ssh.hostName, k), () => {});
      known.catch(() => this.layouts.delete(ssh.hostName));
    }
    return known;
  }

  /** The layout `mount.snapshot: "opaque"` asks for, whatever the host supports. */
  private forcedOpaque(host: string): { layout: 'opaque'; why: string } {
    const k = { layout: 'opaque' as const, why: 'mount.snapshot is "opaque"' };
    this.layoutsKnown.set(host, k);
    return k;
  }

  /** What `gpurun hosts` says about the host's snapshot mounts, once the first one checked the host. */
  snapshotState(host: string): string | undefined {
    const k = this.layoutsKnown.get(host);
    if (!k) return undefined;
    if (k.layout === 'names') return 'snapshot (every name on the host; large files read through sshfs)';
    if (k.layout === 'opaque') return `snapshot, opaque layout (${k.why})`;
    return `plain sshfs, no snapshot (${k.why})`;
  }

  /** The host's `sshfs -o passive` at `at`, carried on the client's SFTP session (`sftp`, over `client`). */
  private async relayToClient(ssh: RemoteExec, m: MountConfig, workspace: string, at: string, client: Duplex, sftp: ClientSftp, relayCh: { ch?: { close(): void } }): Promise<MountHandle> {
    const ch = await ssh.spawn(sshfsLinksAsIs(sshfsRelayArgs(m, workspace, at)));
    relayCh.ch = ch;
    let stderr = '';
    ch.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')).length > 4096 && (stderr = stderr.slice(-4096)));
    let clientGone = client.destroyed;
    let exit: RelayExit = null;
    onExit(ch, (e) => (exit = e));
    const ended = new Promise<string>((resolve) => {
      ch.on('close', () => {
        client.destroy();
        resolve(clientGone ? 'the client that served the workspace disconnected (gpurun run ended or lost its connection to the broker)' : relayEnd(exit, stderr));
      });
    });
    ch.on('error', () => {});
    // 'end' comes before 'close': note the client left first.
    client.once('end', () => (clientGone = true));
    client.once('close', () => {
      clientGone = true;
      ch.close();
    });
    if (clientGone) ch.close();
    sftp.attachHost(ch);
    await this.waitReady(ssh, at, ended, () => stderr);
    return { mnt: at, transport: 'relay', ended };
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

  /**
   * Takes over a direct snapshot mount that an earlier broker process made (after a restart, also kill -9): the
   * overlay and its sshfs mount stayed on the host, only the write-back and the watch had ended. They start again
   * from what is there: the job's writes meanwhile are carried back (those the developer's disk already has are
   * not), and edits made on the developer's disk meanwhile are put into the job's view. Resolves undefined where
   * `mnt` is no snapshot overlay (a plain direct mount needs nothing).
   */
  async adopt(ssh: RemoteExec, m: MountConfig, workspace: string, mnt: string, log: (msg: string) => void): Promise<MountHandle | undefined> {
    const known = this.relays.get(relayKey(ssh, mnt));
    if (known) return known;
    const r = await ssh.exec(['cat', '/proc/mounts'], { timeoutMs: 15_000 });
    if (r.code !== 0) throw new Error(`reading the host's mounts failed: ${r.stderr.trim()}`);
    const found = overlayOf(r.stdout, mnt);
    if (!found) return undefined;
    const p = { ...found, job: snapshotJobDir(mnt), stamp: posix.join(posix.dirname(posix.dirname(found.cache)), 'cache-used', posix.basename(found.cache)) };
    if (!(await this.aliveAt(ssh, p.lazy))) throw new Error(`the sshfs mount under the overlay (${p.lazy}) is gone`);
    const side = new DevSide(ssh, m, workspace);
    const [upper, view, dev] = await Promise.all([ssh.exec(listingArgs(p.upper), { timeoutMs: 60_000 }), ssh.exec(listingArgs(mnt), { timeoutMs: 120_000 }), side.walk()]);
    if (upper.code !== 0 || view.code !== 0) throw new Error(`listing the job's view failed: ${(upper.stderr + view.stderr).trim()}`);
    let opaque: string[] | 'all' = 'all';
    if (found.layout === 'opaque') {
      const o = await ssh.exec(['sh', '-c', 'cat "$1" 2>/dev/null || true', 'gpurun-cache', `${p.cache}.opaque`], { timeoutMs: 60_000 });
      opaque = o.stdout.split('\0').filter(Boolean);
    }
    const sync = new SnapshotSync(ssh, side, mnt, p, parseListing(view.stdout), opaque, log, { upper: parseListing(upper.stdout), dev });
    const handle: MountHandle = { mnt, transport: 'direct', lazy: p.lazy, snapshot: sync, stamp: p.stamp };
    this.relays.set(relayKey(ssh, mnt), handle);
    await sync.start();
    log(`workspace: took over the snapshot mount (${found.layout} layout) left by the broker before`);
    return handle;
  }

  private async aliveAt(ssh: RemoteExec, path: string): Promise<boolean> {
    const r = await ssh.exec(mountCheckArgs(path), { timeoutMs: 15_000 });
    return r.code === 0 && isFuseType(r.stdout);
  }

  /** The relay handle of a mount made on `host` by this broker process, if any. */
  relay(host: string, mnt: string): MountHandle | undefined {
    return this.relays.get(`${host}\0${mnt}`);
  }

  async alive(ssh: RemoteExec, mnt: string): Promise<boolean> {
    return (await this.check(ssh, mnt)) === 'up';
  }

  /**
   * The mount as the host sees it: up, gone (not a FUSE mount any more), or stalled (the check did not answer within
   * its time: sshfs waits on its SFTP stream).
   */
  async check(ssh: RemoteExec, mnt: string): Promise<'up' | 'gone' | 'stalled'> {
    const r = await ssh.exec(mountCheckArgs(this.relays.get(relayKey(ssh, mnt))?.lazy ?? mnt), { timeoutMs: 15_000 });
    if (r.code === 0 && isFuseType(r.stdout)) return 'up';
    return r.code === MOUNT_CHECK_TIMED_OUT ? 'stalled' : 'gone';
  }

  async unmount(ssh: RemoteExec, mnt: string): Promise<void> {
    const h = this.relays.get(relayKey(ssh, mnt));
    this.relays.delete(relayKey(ssh, mnt));
    // The job's last writes reach the developer's disk before the overlay goes.
    await h?.snapshot?.close();
    if (h?.stamp) await ssh.exec(['touch', h.stamp]).catch(() => undefined);
    await ssh.run(unmountArgs(mnt), `unmounting ${mnt}`, { timeoutMs: 30_000 });
    h?.session?.close();
  }
}
