/**
 * SSH host entries of the broker config (`type: "ssh"`), validated with errors that name the field, and the small
 * part of `~/.ssh/config` a host alias needs (HostName, User, Port, IdentityFile).
 */
import { readFileSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { isAbsolute, resolve } from 'node:path';

/** How the GPU host mounts the developer's workspace; see README "GPU hosts over SSH". */
export interface MountConfig {
  /** `direct`: the host runs `sshfs target:/path`; `relay`: the host runs `sshfs -o passive` fed by the broker. */
  transport: 'direct' | 'relay';
  readOnly: boolean;
  /** Extra sshfs `-o` options (each `key` or `key=value`), after gpurun's own. */
  options: string[];
  /** direct: `user@host` or `user@host:port` of the developer's machine, as the GPU host reaches it. */
  target?: string;
  /** direct: key file on the GPU host for logging in to `target`. */
  identityFile?: string;
  /** direct: known_hosts file on the GPU host that holds `target`'s key (checked strictly). */
  knownHosts?: string;
  /** direct: command on the developer's machine that serves SFTP confined to a folder (gets `--root DIR`). It must
   * contain a `/`, or sshfs takes it for a subsystem name. */
  sftpServer: string;
  /**
   * Every name and the small files read from a cache on the host, large files' data through sshfs
   * (hosts/snapshot.ts). `true` takes the best layout the host's kernel supports; `"opaque"` keeps the older layout
   * (hosts/snapshotPlan.ts Layout). Default: on for relay (a broker restart ends a relay mount with or without it),
   * off for direct (a plain direct mount outlives a broker restart; a snapshot's write-back runs in the broker).
   */
  snapshot: boolean | 'opaque';
  /**
   * The same for jobs whose workspace the client serves: `snapshot` where it is set, else on (such a mount is a
   * relay to the client, which ends with a broker restart either way).
   */
  clientSnapshot?: boolean | 'opaque';
  /** A snapshot cache on the host that no job has used for this many days is removed by the sweep (0: never). */
  cacheDays: number;
}

/** Where and how the broker logs in over SSH: what an SSH host and a Slurm cluster's SSH login node share. */
export interface SshTarget {
  address: string;
  port: number;
  user: string;
  /** A `Host` of ~/.ssh/config whose HostName/User/Port/IdentityFile fill the fields not given. */
  sshAlias?: string;
  /** Private key file (absolute). */
  identityFile?: string;
  /** Use ssh-agent (SSH_AUTH_SOCK). */
  agent: boolean;
  /** known_hosts file the server's key is checked against (absolute); unknown keys are refused. */
  knownHosts: string;
}

export interface SshHostConfig extends SshTarget {
  name: string;
  type: 'ssh';
  /** `docker`: each job in a container; `process`: a plain process on the host (hosts without Docker). */
  runtime: 'docker' | 'process';
  /** `nvidia`: `docker run --gpus` (docker only); `env`: only CUDA_VISIBLE_DEVICES/NVIDIA_VISIBLE_DEVICES. */
  gpuMode: 'nvidia' | 'env';
  mount: MountConfig;
  /** Folder on the host for mount points and job state. */
  workDir: string;
  /** A draining host finishes its jobs and gets no new ones. */
  draining: boolean;
  cpus?: number;
  memoryMiB?: number;
  labels: Record<string, string>;
}

/** What config.ts's field checker offers (kept as an interface so this file does not import config.ts). */
export interface FieldChecker {
  fail(path: string, msg: string): never;
  obj(v: unknown, path: string): Record<string, unknown>;
  keys(o: Record<string, unknown>, path: string, allowed: string[]): void;
  str(v: unknown, path: string): string;
  int(v: unknown, path: string, min: number): number;
  bool(v: unknown, path: string): boolean;
  mem(v: unknown, path: string): number;
}

/** The settings of an SshTarget. */
export const SSH_TARGET_KEYS = ['address', 'port', 'user', 'sshAlias', 'identityFile', 'agent', 'knownHosts'];
export const SSH_HOST_KEYS = ['name', 'type', ...SSH_TARGET_KEYS, 'runtime', 'gpuMode', 'mount', 'workDir', 'draining', 'cpus', 'memory', 'labels'];
const MOUNT_KEYS = ['transport', 'readOnly', 'options', 'target', 'identityFile', 'knownHosts', 'sftpServer', 'snapshot', 'cacheDays'];

/**
 * The SshTarget fields of `ho` (its other keys are the caller's to check), errors naming `p.FIELD`. What is left out
 * comes from the ~/.ssh/config entry named by sshAlias, then the defaults: port 22, this user, ~/.ssh/known_hosts,
 * ssh-agent when no identityFile is given.
 */
export function validateSshTarget(ho: Record<string, unknown>, p: string, f: FieldChecker, baseDir: string, what = 'an ssh host'): SshTarget {
  const alias = ho.sshAlias === undefined ? undefined : f.str(ho.sshAlias, `${p}.sshAlias`);
  const fromAlias = alias ? lookupSshAlias(readSshConfig(), alias) : {};
  const address = ho.address === undefined ? (fromAlias.hostName ?? alias) : f.str(ho.address, `${p}.address`);
  if (!address) f.fail(`${p}.address`, `is required for ${what} (or give sshAlias)`);
  const port = ho.port === undefined ? (fromAlias.port ?? 22) : f.int(ho.port, `${p}.port`, 1);
  if (port > 65535) f.fail(`${p}.port`, 'must be at most 65535');
  const identity = ho.identityFile === undefined ? fromAlias.identityFile : resolve(baseDir, expandHome(f.str(ho.identityFile, `${p}.identityFile`)));
  const agent = ho.agent === undefined ? !identity : f.bool(ho.agent, `${p}.agent`);
  if (!identity && !agent) f.fail(`${p}.identityFile`, 'give a key file, or set agent: true to use ssh-agent');
  return {
    address,
    port,
    user: ho.user === undefined ? (fromAlias.user ?? userInfo().username) : f.str(ho.user, `${p}.user`),
    ...(alias ? { sshAlias: alias } : {}),
    ...(identity ? { identityFile: identity } : {}),
    agent,
    knownHosts: ho.knownHosts === undefined ? resolve(homedir(), '.ssh/known_hosts') : resolve(baseDir, expandHome(f.str(ho.knownHosts, `${p}.knownHosts`))),
  };
}

export function validateSshHost(ho: Record<string, unknown>, p: string, f: FieldChecker, baseDir: string, name: string, labels: Record<string, string>): SshHostConfig {
  f.keys(ho, p, SSH_HOST_KEYS);
  const target = validateSshTarget(ho, p, f, baseDir);
  const runtime = ho.runtime === undefined ? 'docker' : f.str(ho.runtime, `${p}.runtime`);
  if (runtime !== 'docker' && runtime !== 'process') f.fail(`${p}.runtime`, `must be "docker" (jobs in containers) or "process" (plain processes, for hosts without Docker), not "${runtime}"`);
  const gpuMode = ho.gpuMode === undefined ? (runtime === 'docker' ? 'nvidia' : 'env') : f.str(ho.gpuMode, `${p}.gpuMode`);
  if (gpuMode !== 'nvidia' && gpuMode !== 'env') f.fail(`${p}.gpuMode`, `must be "nvidia" (--gpus device=…) or "env" (CUDA_VISIBLE_DEVICES only), not "${gpuMode}"`);
  if (runtime === 'process' && gpuMode === 'nvidia') {
    f.fail(`${p}.gpuMode`, '"nvidia" needs containers (docker run --gpus); with runtime "process" a job sees its GPUs through CUDA_VISIBLE_DEVICES only: set "env" or leave gpuMode out');
  }
  const workDir = ho.workDir === undefined ? '/var/tmp/gpurun' : f.str(ho.workDir, `${p}.workDir`);
  if (!isAbsolute(workDir)) f.fail(`${p}.workDir`, 'must be an absolute path on the host');
  return {
    name,
    type: 'ssh',
    ...target,
    runtime,
    gpuMode,
    mount: validateMount(ho.mount === undefined ? {} : f.obj(ho.mount, `${p}.mount`), `${p}.mount`, f),
    workDir,
    draining: ho.draining === undefined ? false : f.bool(ho.draining, `${p}.draining`),
    ...(ho.cpus === undefined ? {} : { cpus: f.int(ho.cpus, `${p}.cpus`, 1) }),
    ...(ho.memory === undefined ? {} : { memoryMiB: f.mem(ho.memory, `${p}.memory`) }),
    labels,
  };
}

function validateMount(m: Record<string, unknown>, p: string, f: FieldChecker): MountConfig {
  f.keys(m, p, MOUNT_KEYS);
  const transport = m.transport === undefined ? 'relay' : f.str(m.transport, `${p}.transport`);
  if (transport !== 'direct' && transport !== 'relay') f.fail(`${p}.transport`, `must be "direct" or "relay", not "${transport}"`);
  const options: string[] = [];
  if (m.options !== undefined) {
    if (!Array.isArray(m.options)) f.fail(`${p}.options`, 'must be a list of sshfs -o options');
    m.options.forEach((o, i) => {
      const s = f.str(o, `${p}.options[${i}]`);
      if (!/^[\w.-]+(=[^,\s]+)?$/.test(s)) f.fail(`${p}.options[${i}]`, `"${s}" is not one option (key or key=value, no commas or spaces)`);
      options.push(s);
    });
  }
  const target = m.target === undefined ? undefined : f.str(m.target, `${p}.target`);
  if (transport === 'direct' && !target) f.fail(`${p}.target`, 'is required for the direct transport: user@devmachine[:port] as the GPU host reaches it');
  if (target && !/^[\w.-]+@[\w.-]+(:\d{1,5})?$/.test(target)) f.fail(`${p}.target`, `"${target}" is not user@host or user@host:port`);
  const hostPath = (k: 'identityFile' | 'knownHosts') => {
    if (m[k] === undefined) return {};
    const v = f.str(m[k], `${p}.${k}`);
    if (!isAbsolute(v) || /[,\s]/.test(v)) f.fail(`${p}.${k}`, 'must be an absolute path on the GPU host without commas or spaces');
    return { [k]: v };
  };
  return {
    transport,
    readOnly: m.readOnly === undefined ? false : f.bool(m.readOnly, `${p}.readOnly`),
    options,
    ...(target ? { target } : {}),
    ...hostPath('identityFile'),
    ...hostPath('knownHosts'),
    sftpServer: m.sftpServer === undefined ? '/usr/bin/env gpurun sftp-serve' : f.str(m.sftpServer, `${p}.sftpServer`),
    snapshot: m.snapshot === undefined ? transport === 'relay' : snapshotSetting(m.snapshot, `${p}.snapshot`, f),
    clientSnapshot: m.snapshot === undefined ? true : snapshotSetting(m.snapshot, `${p}.snapshot`, f),
    cacheDays: m.cacheDays === undefined ? 14 : f.int(m.cacheDays, `${p}.cacheDays`, 0),
  };
}

function snapshotSetting(v: unknown, path: string, f: FieldChecker): boolean | 'opaque' {
  if (v !== true && v !== false && v !== 'opaque') f.fail(path, 'must be true, false or "opaque"');
  return v as boolean | 'opaque';
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? homedir() + p.slice(1) : p;
}

function readSshConfig(): string {
  try {
    return readFileSync(resolve(homedir(), '.ssh/config'), 'utf8');
  } catch {
    return '';
  }
}

/**
 * The settings ~/.ssh/config gives `alias`: first value wins, as in OpenSSH; `Host` patterns may use `*`, `?`, `!`.
 * Only HostName, User, Port and IdentityFile are read.
 */
export function lookupSshAlias(text: string, alias: string): { hostName?: string; user?: string; port?: number; identityFile?: string } {
  const out: { hostName?: string; user?: string; port?: number; identityFile?: string } = {};
  let active = true;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/#.*/, '').trim();
    const m = /^(\w+)\s*(?:=\s*|\s+)(.+)$/.exec(line);
    if (!m) continue;
    const key = m[1].toLowerCase();
    const value = m[2].trim().replace(/^"(.*)"$/, '$1');
    if (key === 'host') {
      const pats = value.split(/\s+/);
      const neg = pats.some((q) => q.startsWith('!') && glob(q.slice(1), alias));
      active = !neg && pats.some((q) => !q.startsWith('!') && glob(q, alias));
    } else if (key === 'match') active = false;
    else if (active) {
      if (key === 'hostname' && out.hostName === undefined) out.hostName = value.replace(/%h/g, alias);
      else if (key === 'user' && out.user === undefined) out.user = value;
      else if (key === 'port' && out.port === undefined && /^\d+$/.test(value)) out.port = Number(value);
      else if (key === 'identityfile' && out.identityFile === undefined) out.identityFile = expandHome(value);
    }
  }
  return out;
}

function glob(pattern: string, name: string): boolean {
  return new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i').test(name);
}
