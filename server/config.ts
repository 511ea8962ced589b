/**
 * The broker's configuration file (JSON), validated with errors that name the field. See the README's
 * "Broker configuration" for every setting. `validateConfig` is pure; `loadConfig` reads the file.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve, dirname } from 'node:path';
import { userInfo } from 'node:os';
import { GpurunError } from './protocol/errors.ts';
import { QUEUES, type Queue } from './protocol/jobs.ts';
import { validateMigration, type MigrationConfig } from './migration/config.ts';
import { parseDuration, parseMemory } from './core/units.ts';
import { DEFAULT_BACKOFF, MAX_RESTARTS, type BackoffConfig } from './core/restartPolicy.ts';
import { validImage } from './core/submit.ts';
import { validateClusters, type ClusterConfig } from './slurm/config.ts';
import { SSH_HOST_KEYS, validateSshHost, type SshHostConfig } from './hosts/sshConfig.ts';
import { TEAM_KEYS, validateTeam, type TeamConfig } from './teamConfig.ts';

export type Listen = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export interface LocalHostConfig {
  name: string;
  type: 'local';
  /** Override what the OS reports (e.g. to keep some for the desktop). */
  cpus?: number;
  memoryMiB?: number;
  labels: Record<string, string>;
}
export type HostConfig = LocalHostConfig | SshHostConfig;
export type { SshHostConfig } from './hosts/sshConfig.ts';

export interface QueueConfig {
  /** Longest time limit a job may ask for; 0 = no cap. */
  maxTimeSec: number;
  /** Time limit of a job that asks for none; 0 = none. */
  defaultTimeSec: number;
  /** Restarts after recoverable faults for a job that asks for none (`restarts`); 0 = none. */
  restarts: number;
}

export interface BrokerConfig extends TeamConfig {
  listen: Listen;
  dataDir: string;
  hosts: HostConfig[];
  queues: Record<Queue, QueueConfig>;
  defaults: { image?: string; gpus: number | 'auto'; cpus: number; memoryMiB: number };
  /** Time between TERM and KILL when a job is cancelled or runs out of time. */
  killGraceMs: number;
  /**
   * How long an SSH host may fail its health checks (its connection and a fresh one) before it is `lost` and its
   * jobs end `lost` (default 60 s). Shorter gaps are blips: jobs keep running and their output resumes.
   */
  hostLostAfterMs: number;
  /** Moves of running jobs between hosts (migration/config.ts). */
  migration: MigrationConfig;
  /** Wait before a job's first restart, doubling for each further one up to `maxMs`. */
  restartBackoff: BackoffConfig;
  auth: {
    /** Requests over the Unix socket are from `localUser` without a token (the socket's folder is private). */
    trustUnixSocket: boolean;
    localUser: string;
  };
  // -- Slurm clusters --
  /** Slurm clusters jobs can be sent to (`gpurun run --backend NAME`). */
  clusters: ClusterConfig[];
  /** Backend of a job that names none: "hosts" (the host pool) or a cluster's name. */
  defaultBackend: string;
  // -- Running a team broker (README) --
  /** The folder of the config file (the embedded default: its data folder); never a workspace. */
  configDir: string;
  /**
   * True unless this is the embedded single-user broker (a Unix socket whose requests are trusted without token):
   * then workspaces are checked against `workspaceRoots`, local hosts need `trustLocalUsers`, jobs get a clean env.
   */
  team: boolean;
  /** Folders each user may name as a broker-read workspace (`"*"`: everyone; `{user}` is the user's name); null: none. */
  workspaceRoots: Record<string, string[]> | null;
  /** A team broker with a `local` host runs its jobs as the broker's own Unix user: allowed only when this is true. */
  trustLocalUsers: boolean;
  /** `docker run` limits of every container. */
  containers: { pidsLimit: number };
}

/** The backend name of the host pool. */
export const HOSTS_BACKEND = 'hosts';

type Obj = Record<string, unknown>;

class Fields {
  private readonly file: string;
  constructor(file: string) {
    this.file = file;
  }
  fail(path: string, msg: string): never {
    throw new GpurunError('E_CONFIG', `${this.file}: ${path}: ${msg}`, { hint: 'Fix the field and start the broker again; the README lists every setting.' });
  }
  obj(v: unknown, path: string): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(path, 'must be an object');
    return v as Obj;
  }
  keys(o: Obj, path: string, allowed: string[]): void {
    for (const k of Object.keys(o)) if (!allowed.includes(k)) this.fail(path ? `${path}.${k}` : k, `unknown setting; known here: ${allowed.join(', ')}`);
  }
  str(v: unknown, path: string): string {
    if (typeof v !== 'string' || v === '') this.fail(path, 'must be a non-empty string');
    return v;
  }
  int(v: unknown, path: string, min: number): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) this.fail(path, `must be a whole number ≥ ${min}`);
    return v;
  }
  bool(v: unknown, path: string): boolean {
    if (typeof v !== 'boolean') this.fail(path, 'must be true or false');
    return v;
  }
  mem(v: unknown, path: string): number {
    const r = typeof v === 'string' || typeof v === 'number' ? parseMemory(v) : 'must be a size such as "16G"';
    if (typeof r === 'string') this.fail(path, r);
    return r;
  }
  dur(v: unknown, path: string): number {
    const r = typeof v === 'string' || typeof v === 'number' ? parseDuration(v) : 'must be a duration such as "2h"';
    if (typeof r === 'string') this.fail(path, r);
    return r;
  }
}

export function parseListen(text: string, onError: (msg: string) => never): Listen {
  if (text.startsWith('unix:')) {
    const path = text.slice(5);
    if (!isAbsolute(path)) onError('a Unix socket path must be absolute, e.g. unix:/run/gpurun/broker.sock');
    return { kind: 'unix', path };
  }
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) onError(`"${text}" is not HOST:PORT or unix:/path`);
  return { kind: 'tcp', host: m[1] ?? m[2], port };
}

/** Validates a parsed config object. `file` names it in errors; relative paths resolve against `baseDir`. */
export function validateConfig(raw: unknown, file: string, baseDir: string, fallbackDataDir: string): BrokerConfig {
  const f = new Fields(file);
  const o = f.obj(raw, '(top level)');
  f.keys(o, '', ['listen', 'dataDir', 'hosts', 'queues', 'defaults', 'killGrace', 'hostLostAfter', 'restartBackoff', 'auth', 'clusters', 'defaultBackend', 'workspaceRoots', 'trustLocalUsers', 'containers', 'migration', ...TEAM_KEYS]);
  const listen = parseListen(o.listen === undefined ? '127.0.0.1:8750' : f.str(o.listen, 'listen'), (m) => f.fail('listen', m));
  const dataDir = o.dataDir === undefined ? fallbackDataDir : resolve(baseDir, f.str(o.dataDir, 'dataDir'));

  // Slurm clusters: with clusters configured, hosts may be left out (then there are none) or empty.
  const hasClusters = Array.isArray(o.clusters) && o.clusters.length > 0;
  const hostsRaw = o.hosts === undefined ? (hasClusters ? [] : [{ name: 'local', type: 'local' }]) : o.hosts;
  if (!Array.isArray(hostsRaw) || (hostsRaw.length === 0 && !hasClusters)) f.fail('hosts', 'must be a non-empty list of hosts');
  const hostList = hostsRaw as unknown[];
  const names = new Set<string>();
  const hosts = hostList.map((h, i): HostConfig => {
    const p = `hosts[${i}]`;
    const ho = f.obj(h, p);
    const name = f.str(ho.name, `${p}.name`);
    if (!/^[A-Za-z0-9][\w.-]*$/.test(name)) f.fail(`${p}.name`, 'use letters, digits, ".", "_" and "-"');
    if (names.has(name)) f.fail(`${p}.name`, `"${name}" is used by another host`);
    names.add(name);
    const type = ho.type === undefined ? 'local' : f.str(ho.type, `${p}.type`);
    if (type !== 'local' && type !== 'ssh') f.fail(`${p}.type`, `unknown host type "${type}"; known: local, ssh`);
    f.keys(ho, p, type === 'ssh' ? SSH_HOST_KEYS : ['name', 'type', 'cpus', 'memory', 'labels']);
    const labels: Record<string, string> = {};
    if (ho.labels !== undefined) for (const [k, v] of Object.entries(f.obj(ho.labels, `${p}.labels`))) labels[k] = f.str(v, `${p}.labels.${k}`);
    if (type === 'ssh') return validateSshHost(ho, p, f, baseDir, name, labels);
    return {
      name,
      type: 'local',
      ...(ho.cpus === undefined ? {} : { cpus: f.int(ho.cpus, `${p}.cpus`, 1) }),
      ...(ho.memory === undefined ? {} : { memoryMiB: f.mem(ho.memory, `${p}.memory`) }),
      labels,
    };
  });

  const queues = {} as Record<Queue, QueueConfig>;
  const qo = o.queues === undefined ? {} : f.obj(o.queues, 'queues');
  f.keys(qo, 'queues', [...QUEUES]);
  for (const q of QUEUES) {
    const one = qo[q] === undefined ? {} : f.obj(qo[q], `queues.${q}`);
    f.keys(one, `queues.${q}`, ['maxTime', 'defaultTime', 'restarts']);
    const maxTimeSec = one.maxTime === undefined ? 0 : f.dur(one.maxTime, `queues.${q}.maxTime`);
    const defaultTimeSec = one.defaultTime === undefined ? 0 : f.dur(one.defaultTime, `queues.${q}.defaultTime`);
    if (maxTimeSec && defaultTimeSec > maxTimeSec) f.fail(`queues.${q}.defaultTime`, 'is longer than maxTime');
    const restarts = one.restarts === undefined ? 0 : f.int(one.restarts, `queues.${q}.restarts`, 0);
    if (restarts > MAX_RESTARTS) f.fail(`queues.${q}.restarts`, `must be at most ${MAX_RESTARTS}`);
    queues[q] = { maxTimeSec, defaultTimeSec, restarts };
  }

  const d = o.defaults === undefined ? {} : f.obj(o.defaults, 'defaults');
  f.keys(d, 'defaults', ['image', 'gpus', 'cpus', 'memory']);
  const defaults = {
    ...(d.image === undefined ? {} : { image: validImage(d.image) ? d.image : f.fail('defaults.image', 'must be an image reference such as python:3.12, starting with a letter or digit') }),
    gpus: d.gpus === undefined || d.gpus === 'auto' ? ('auto' as const) : f.int(d.gpus, 'defaults.gpus', 0),
    cpus: d.cpus === undefined ? 1 : f.int(d.cpus, 'defaults.cpus', 1),
    memoryMiB: d.memory === undefined ? 1024 : f.mem(d.memory, 'defaults.memory'),
  };

  // Slurm clusters.
  const clusters = validateClusters(o.clusters, f, new Set([HOSTS_BACKEND, ...names]), baseDir);
  const backends = [...(hosts.length ? [HOSTS_BACKEND] : []), ...clusters.map((c) => c.name)];
  const defaultBackend = o.defaultBackend === undefined ? backends[0] : f.str(o.defaultBackend, 'defaultBackend');
  if (!backends.includes(defaultBackend)) f.fail('defaultBackend', `"${defaultBackend}" is not a backend; known: ${backends.join(', ')}`);

  const rb = o.restartBackoff === undefined ? {} : f.obj(o.restartBackoff, 'restartBackoff');
  f.keys(rb, 'restartBackoff', ['first', 'max']);
  const restartBackoff = {
    firstMs: rb.first === undefined ? DEFAULT_BACKOFF.firstMs : f.dur(rb.first, 'restartBackoff.first') * 1000,
    maxMs: rb.max === undefined ? DEFAULT_BACKOFF.maxMs : f.dur(rb.max, 'restartBackoff.max') * 1000,
  };
  if (restartBackoff.maxMs < restartBackoff.firstMs) f.fail('restartBackoff.max', 'is shorter than first');

  const a = o.auth === undefined ? {} : f.obj(o.auth, 'auth');
  f.keys(a, 'auth', ['trustUnixSocket', 'localUser']);
  const trustUnixSocket = a.trustUnixSocket === undefined ? listen.kind === 'unix' : f.bool(a.trustUnixSocket, 'auth.trustUnixSocket');
  const c = o.containers === undefined ? {} : f.obj(o.containers, 'containers');
  f.keys(c, 'containers', ['pidsLimit']);
  return {
    listen,
    dataDir,
    hosts,
    queues,
    defaults,
    killGraceMs: o.killGrace === undefined ? 10_000 : f.dur(o.killGrace, 'killGrace') * 1000,
    hostLostAfterMs: o.hostLostAfter === undefined ? 60_000 : Math.max(1, f.dur(o.hostLostAfter, 'hostLostAfter')) * 1000,
    restartBackoff,
    auth: {
      trustUnixSocket,
      localUser: a.localUser === undefined ? userInfo().username : f.str(a.localUser, 'auth.localUser'),
    },
    clusters,
    defaultBackend,
    configDir: baseDir,
    team: !(listen.kind === 'unix' && trustUnixSocket),
    workspaceRoots: o.workspaceRoots === undefined ? null : workspaceRoots(o.workspaceRoots, f),
    trustLocalUsers: o.trustLocalUsers === undefined ? false : f.bool(o.trustLocalUsers, 'trustLocalUsers'),
    containers: { pidsLimit: c.pidsLimit === undefined ? 4096 : f.int(c.pidsLimit, 'containers.pidsLimit', 16) },
    migration: validateMigration(o.migration, (p, m) => f.fail(p, m)),
    // Limits, retention and TLS of a shared broker (teamConfig.ts).
    ...validateTeam(o, baseDir, (p, m) => f.fail(p, m)),
  };
}

/** `{"*": "/home/{user}", "alice": ["/data/alice"]}`: each value an absolute path or a list of them. */
function workspaceRoots(v: unknown, f: Fields): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [user, roots] of Object.entries(f.obj(v, 'workspaceRoots'))) {
    const p = `workspaceRoots.${user}`;
    if (user !== '*' && !/^[a-z_][a-z0-9_.-]{0,63}$/i.test(user)) f.fail(p, 'must be "*" or a user name');
    const list = Array.isArray(roots) ? roots : [roots];
    out[user] = list.map((r, i) => {
      const s = f.str(r, Array.isArray(roots) ? `${p}[${i}]` : p);
      if (!isAbsolute(s) || s.includes('\0')) f.fail(p, `"${s}" must be an absolute path`);
      return s;
    });
  }
  return out;
}

/**
 * A team broker refuses to start with a `local` host unless the config trusts its users: such a host runs every
 * user's job as the broker's own Unix user, who can read the broker's store, logs and SSH keys.
 */
export function refuseUntrustedLocalHosts(config: BrokerConfig): void {
  if (!config.team || config.trustLocalUsers) return;
  const i = config.hosts.findIndex((h) => h.type === 'local');
  if (i < 0) return;
  throw new GpurunError('E_CONFIG', `hosts[${i}] "${config.hosts[i].name}" is a local host: on a team broker it would run every user's job as the broker's own user (${userInfo().username}), able to read the broker's data, tokens and SSH keys`, {
    hint: 'Use SSH hosts (a config with no "hosts" has one implicit local host), or set "trustLocalUsers": true if every token holder may act as that user.',
  });
}

export function loadConfig(file: string, fallbackDataDir: string): BrokerConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new GpurunError('E_CONFIG', `cannot read the config file ${file}: ${(e as Error).message}`, { hint: 'Pass an existing file with --config.' });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new GpurunError('E_CONFIG', `${file} is not valid JSON: ${(e as Error).message}`);
  }
  return validateConfig(raw, file, dirname(resolve(file)), fallbackDataDir);
}
