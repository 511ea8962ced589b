/**
 * Starting a broker: config → store → hosts → runtime → broker → app → listen; SIGTERM/SIGINT → close.
 * `embedded` is the zero-setup default the CLI and the editor start on demand: a Unix socket in a private folder,
 * no tokens, the local machine as the only host, and an exit after a while with nothing to do.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { chmodSync, mkdirSync, openSync, readFileSync, rmSync, writeSync, closeSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GpurunError } from './protocol/errors.ts';
import { isFinal, type Job } from './protocol/jobs.ts';
import { loadConfig, validateConfig, type BrokerConfig } from './config.ts';
import { SqliteStore } from './store/sqlite.ts';
import { LogFiles } from './logs/logFiles.ts';
import { HostRegistry } from './hosts/registry.ts';
import { ProcessRuntime } from './runtimes/process.ts';
import { UserCaches } from './cache/userCaches.ts';
import { keepUsage } from './store/gpuUsageStore.ts';
import { createSshSide } from './hosts/sshSide.ts';
import { Broker } from './broker.ts';
import { wireMoves } from './migration/wire.ts';
import { buildApp, buildUpgrade, isWorkspaceUpgrade } from './app.ts';
import { embeddedBaseEnv, teamBaseEnv, teamSlurmEnv } from './core/jobEnv.ts';
import { workspaceGate } from './auth/workspaces.ts';
import { refuseUntrustedLocalHosts } from './config.ts';
import { jsonLogger, type Logger } from './logger.ts';
import { embeddedSocket } from './protocol/paths.ts';
import { SlurmCluster, type ClusterParts } from './slurm/backend.ts';
import { HostPool } from './pool/backend.ts';
import { LocalExec } from './slurm/exec.ts';
import { LocalClusterFiles } from './slurm/files.ts';
import { SftpClusterFiles } from './slurm/sftpFiles.ts';
import { SshPool } from './hosts/ssh.ts';
import type { ClusterConfig } from './slurm/config.ts';
import { resilientStore } from './store/resilient.ts';
import { openAudit } from './team/audit.ts';
import { DiskGuard } from './team/disk.ts';
import { hardenServer, TeamGuard } from './team/guard.ts';
import { tlsMaterial } from './team/tls.ts';
import { OutputCap } from './logs/outputCap.ts';
import { Retention } from './logs/retention.ts';
import { formatBytes } from './core/limits.ts';
import { Interactive } from './interactive/targets.ts';
import { buildInteractiveUpgrade, isInteractiveUpgrade } from './interactive/upgrade.ts';

export const VERSION = '0.1.0';
export { SqliteStore } from './store/sqlite.ts';
export { createToken, expiryOf, findTokenRef, tokenView } from './auth/tokens.ts';
export { openAudit, audit } from './team/audit.ts';

export interface RunningBroker {
  config: BrokerConfig;
  server: Server | HttpsServer;
  broker: Broker;
  /** Where it listens, as a client would name it: http://host:port, https://host:port or unix:/path. */
  address: string;
  /** SHA-256 fingerprint of its TLS certificate (clients pin it), when it speaks TLS. */
  fingerprint?: string;
  close(): Promise<void>;
}

export function embeddedConfig(home: string): BrokerConfig {
  // One user on a private socket: no per-user queue or rate limits (the disk floor, output cap and retention stay).
  return validateConfig({ listen: `unix:${embeddedSocket(home)}`, limits: { maxQueuedJobs: 0, submitsPerMinute: 0 } }, '(embedded defaults)', home, home);
}

export function configFromFile(file: string, home: string): BrokerConfig {
  return loadConfig(file, home);
}

export async function startBroker(config: BrokerConfig, opts: { log?: Logger; idleExitMs?: number } = {}): Promise<RunningBroker> {
  const log = opts.log ?? jsonLogger(process.stderr);
  refuseUntrustedLocalHosts(config);
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  chmodSync(config.dataDir, 0o700);
  const lock = config.listen.kind === 'unix' ? takeLock(join(config.dataDir, 'broker.lock')) : undefined;
  // Made before anything else, so a broker that cannot speak TLS where it must refuses to start.
  const tls = tlsMaterial(config.listen, config.tls, config.dataDir);
  const store = resilientStore(new SqliteStore(join(config.dataDir, 'gpurun.db')), log);
  openAudit(config.dataDir, log);
  const logs = new LogFiles(join(config.dataDir, 'logs'));
  const shim = fileURLToPath(new URL('./shim.js', import.meta.url));
  const sshSide = createSshSide(config, log, store);
  // A team broker's local jobs all run as its OS user: each user gets a cache folder of their own (README: "Caches").
  const localCacheRoot = config.team && config.cache.enabled ? join(config.dataDir, 'cache') : undefined;
  const hosts = new HostRegistry(config.hosts, { process: new ProcessRuntime(join(config.dataDir, 'run'), shim, undefined, localCacheRoot), ...sshSide.runtimes }, process.env, sshSide.ssh);
  const usageStore = keepUsage(hosts.usage, join(config.dataDir, 'gpu-usage.db'), (msg, fields) => log.warn(msg, fields));
  const brokerEnv = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && !e[0].startsWith('GPURUN_')));
  // A team broker's jobs start from a clean environment, never the broker's own (README: "Running a team broker").
  const baseEnv = config.team ? teamBaseEnv(process.env) : embeddedBaseEnv(process.env);
  // A Slurm cluster's login node that is this machine runs Slurm's commands as local argv processes; one
  // reached over SSH runs them through an ssh2 pool and stages over that pool's SFTP.
  const clusterParts = (c: ClusterConfig): ClusterParts => {
    if (c.login === 'local') return { exec: new LocalExec(config.team ? teamSlurmEnv(process.env) : brokerEnv), files: new LocalClusterFiles() };
    const pool = new SshPool({ name: c.name, ...c.login }, (err) => log.warn('connection to the login node lost', { cluster: c.name, err }), `cluster ${c.name}'s login node`);
    return { exec: pool, files: new SftpClusterFiles(pool), close: () => pool.close() };
  };
  const clusters = config.clusters.map((c) => new SlurmCluster(c, clusterParts(c), { dataDir: config.dataDir, logs, log, cache: config.cache.enabled }));
  const backends = [...(config.hosts.length ? [new HostPool(hosts, logs)] : []), ...clusters];
  const gate = workspaceGate(config);
  const broker = new Broker({ config, store, logs, hosts, log, baseEnv, backends, ...(gate ? { workspaceGate: gate } : {}) });
  // Moves of running jobs between SSH hosts (migration/): wired before start(), so a move a restart caught goes on.
  const moves = sshSide.ssh ? wireMoves({ broker, store, hosts, config: config.migration, log: log.child({ part: 'migration' }) }) : undefined;
  await broker.start();
  hosts.onChange(() => broker.kick());
  sshSide.startSweeps((jobId) => !broker.isDone(jobId));
  // A client-served workspace stream ends with its job, also one that never left the queue (no mount took it):
  // the client serving it then sees the end and stops.
  const clientWorkspaces = sshSide.clientWorkspaces;
  if (clientWorkspaces) broker.on('job', (j: Job) => isFinal(j.state) && clientWorkspaces.drop(j.id));

  const trusted = config.listen.kind === 'unix' && config.auth.trustUnixSocket ? { user: config.auth.localUser, admin: true } : undefined;
  // Shared-broker limits: free-space floor, per-user limits, output cap, retention (team/, logs/).
  const disk = new DiskGuard(config.dataDir, config.limits);
  const guard = new TeamGuard({ limits: config.limits, disk, storage: store, log, queuedOf: (u) => broker.activeJobs().filter((j) => j.owner === u && j.state === 'queued').length });
  const outputCap = new OutputCap(logs, config.limits.maxLogBytes, log);
  outputCap.start(broker);
  const retention = new Retention({ store, logs, runDir: join(config.dataDir, 'run'), retentionSec: config.retentionSec, log });
  retention.start();
  const diskNow = disk.status();
  if (diskNow.low) log.warn('the data disk is below its free-space floor: new jobs are refused until there is room', { dataDir: config.dataDir, free: formatBytes(diskNow.freeBytes), floor: formatBytes(diskNow.floorBytes) });
  const caches = new UserCaches({
    cache: config.cache, hosts: () => broker.hosts(), exec: (h) => sshSide.ssh?.exec(h), ...(localCacheRoot ? { localRoot: localCacheRoot } : {}),
    // A cluster's cache is in use by every job of the user not yet ended there, pending ones too (Slurm may start
    // them any moment).
    runningOn: (u, h) => broker.activeJobs().filter((j) => j.owner === u && (j.backend === h || (j.host === h && (j.state === 'running' || j.state === 'starting')))).map((j) => j.id),
    clusters,
  });
  const appDeps = { broker, store, logs, log, version: VERSION, guard, retention, caches, clearGpuQuarantine: (h: string, g: number) => hosts.clearQuarantine(h, g), ...(trusted ? { trustedPrincipal: trusted } : {}), ...(moves ? { moves } : {}), ...(sshSide.clientWorkspaces ? { clientWorkspaces: sshSide.clientWorkspaces } : {}) };
  const handler = buildApp(appDeps);
  // Request timeouts (team/guard.ts) are checked every second, so a slow client is cut on time.
  const httpOpts = { keepAliveTimeout: 65_000, connectionsCheckingInterval: 1000, shouldUpgradeCallback: (req: IncomingMessage) => isWorkspaceUpgrade(req) || isInteractiveUpgrade(req) };
  const server = tls ? createHttpsServer({ cert: tls.cert, key: tls.key, ...httpOpts }, handler) : createServer(httpOpts, handler);
  hardenServer(server, log);
  // Exec and port forwards into running jobs (interactive/), and client-served workspaces.
  const interactive = buildInteractiveUpgrade(appDeps, new Interactive({ runtimeKind: (h) => hosts.runtimeFor(h).kind, ...(sshSide.ssh ? { ssh: sshSide.ssh } : {}) }));
  const workspace = buildUpgrade(appDeps);
  server.on('upgrade', (req, socket, head) => (isInteractiveUpgrade(req) ? interactive : workspace)(req, socket, head));
  const listen = config.listen;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE' ? new GpurunError('E_CONFIG', `cannot listen on ${describe(listen)}: the address is in use`, { hint: 'Another broker may be running; stop it or change "listen".' }) : err);
    });
    if (listen.kind === 'unix') {
      rmSync(listen.path, { force: true }); // stale from a killed broker; the lock says none is alive
      server.listen(listen.path, () => {
        chmodSync(listen.path, 0o600);
        resolve();
      });
    } else server.listen(listen.port, listen.host, () => resolve());
  });
  const addr = server.address();
  const address = listen.kind === 'unix' ? `unix:${listen.path}` : typeof addr === 'object' && addr ? `${tls ? 'https' : 'http'}://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${addr.port}` : '';
  if (tls) log.info('TLS', { certificate: tls.certPath, selfSigned: tls.selfSigned, fingerprint: tls.fingerprint });
  else if (listen.kind === 'tcp' && config.tls.mode === 'off') log.warn('plain HTTP on a TCP address because the config says "tls": false: tokens travel in clear text', { address: `${listen.host}:${listen.port}` });
  log.info('broker listening', { address, dataDir: config.dataDir, hosts: hosts.names(), clusters: config.clusters.map((c) => c.name), defaultBackend: config.defaultBackend });

  let idleTimer: NodeJS.Timeout | undefined;
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      clearInterval(idleTimer);
      outputCap.close();
      retention.close();
      broker.close();
      sshSide.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      store.close();
      usageStore?.close();
      if (listen.kind === 'unix') rmSync(listen.path, { force: true });
      lock?.release();
      log.info('broker stopped');
    })());

  if (opts.idleExitMs) {
    let lastBusy = Date.now();
    const idleMs = opts.idleExitMs;
    idleTimer = setInterval(() => {
      server.getConnections((_e, n) => {
        const busy = n > 0 || broker.activeCount() > 0;
        if (busy) lastBusy = Date.now();
        else if (Date.now() - lastBusy >= idleMs) {
          log.info('no jobs and no clients for a while: stopping', { idleMs });
          void close().then(() => process.exit(0));
        }
      });
    }, Math.min(10_000, idleMs / 2));
    idleTimer.unref();
  }
  return { config, server, broker, address, close, ...(tls ? { fingerprint: tls.fingerprint } : {}) };
}

function describe(l: BrokerConfig['listen']): string {
  return l.kind === 'unix' ? `unix:${l.path}` : `${l.host}:${l.port}`;
}

/** One broker per data folder: a pid file created exclusively; a stale one (dead pid) is taken over. */
function takeLock(path: string): { release(): void } {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return { release: () => existsSync(path) && readFileSync(path, 'utf8') === String(process.pid) && rmSync(path, { force: true }) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(path, 'utf8') || 0);
      if (pid > 0 && isAlive(pid)) {
        throw new GpurunError('E_CONFLICT', `another broker (pid ${pid}) already runs on ${path.replace(/\/broker\.lock$/, '')}`, { hint: 'Use it, or stop it first.' });
      }
      rmSync(path, { force: true });
    }
  }
  throw new GpurunError('E_CONFLICT', `could not take the broker lock ${path}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('broker');
  } catch {
    return true;
  }
}
