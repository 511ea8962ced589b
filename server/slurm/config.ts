/**
 * The `clusters` section of the broker config: Slurm clusters jobs can be sent to. Validated with errors that name
 * the field (through the config's own `fail`). Pure.
 */
import { isAbsolute } from 'node:path';
import { parseDuration } from '../core/units.ts';
import type { Queue } from '../protocol/jobs.ts';
import { SSH_TARGET_KEYS, validateSshTarget, type FieldChecker, type SshTarget } from '../hosts/sshConfig.ts';

export interface ClusterConfig {
  name: string;
  /**
   * Where Slurm's commands run: "local" (the broker runs on the login node; staging copies files on this machine),
   * or the login node over SSH (commands through the ssh2 pool, staging over the same connection's SFTP).
   */
  login: 'local' | SshTarget;
  /** Slurm partition of each gpurun queue. */
  partitions: Record<Queue, string>;
  /** gres name of GPUs (`--gres=NAME[:type]:N`). */
  gres: string;
  account?: string;
  /** Folder on the cluster's shared storage (seen by login and compute nodes) where workspaces are staged. */
  stagingDir: string;
  /** "pyxis": jobs with an image run in it through `srun --container-image`. */
  container?: 'pyxis';
  /** How often one squeue asks about all of the cluster's jobs. */
  pollMs: number;
}

const SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;
const NAME = /^[A-Za-z0-9][\w.-]*$/;

/** `f` is the config's field checker; relative key and known_hosts paths of an SSH login resolve against `baseDir`. */
export function validateClusters(raw: unknown, f: FieldChecker, reserved: Set<string>, baseDir: string): ClusterConfig[] {
  const fail: (path: string, msg: string) => never = (path, msg) => f.fail(path, msg);
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) fail('clusters', 'must be a list of clusters');
  const names = new Set<string>();
  return (raw as unknown[]).map((c, i) => {
    const p = `clusters[${i}]`;
    if (typeof c !== 'object' || c === null || Array.isArray(c)) fail(p, 'must be an object');
    const o = c as Record<string, unknown>;
    const known = ['name', 'login', 'partitions', 'gres', 'account', 'stagingDir', 'container', 'pollInterval'];
    for (const k of Object.keys(o)) if (!known.includes(k)) fail(`${p}.${k}`, `unknown setting; known here: ${known.join(', ')}`);
    const str = (v: unknown, path: string): string => {
      if (typeof v !== 'string' || v === '') fail(path, 'must be a non-empty string');
      return v;
    };
    const safe = (v: unknown, path: string): string => {
      const s = str(v, path);
      if (!SAFE.test(s)) fail(path, 'may hold only letters, digits and _@%+=:,./- (it goes on #SBATCH lines)');
      return s;
    };
    const name = str(o.name, `${p}.name`);
    if (!NAME.test(name)) fail(`${p}.name`, 'use letters, digits, ".", "_" and "-"');
    if (names.has(name) || reserved.has(name)) fail(`${p}.name`, `"${name}" is already the name of ${reserved.has(name) ? 'another backend' : 'another cluster'}`);
    names.add(name);
    let login: 'local' | SshTarget;
    if (typeof o.login === 'object' && o.login !== null && !Array.isArray(o.login)) {
      const lo = o.login as Record<string, unknown>;
      f.keys(lo, `${p}.login`, SSH_TARGET_KEYS);
      login = validateSshTarget(lo, `${p}.login`, f, baseDir, 'an SSH login node');
    } else if (o.login === 'local') login = 'local';
    else {
      const given = o.login === undefined ? 'is required' : `${JSON.stringify(o.login)} is neither of these`;
      fail(`${p}.login`, `${given}: "local" (the broker runs on the login node) or an SSH login node {"address": HOST, "user": USER, "identityFile": KEY, "knownHosts": FILE} (or {"sshAlias": HOST})`);
    }
    const parts = o.partitions === undefined ? {} : o.partitions;
    if (typeof parts !== 'object' || parts === null || Array.isArray(parts)) fail(`${p}.partitions`, 'must be an object: {"online": PARTITION, "offline": PARTITION}');
    const po = parts as Record<string, unknown>;
    for (const k of Object.keys(po)) if (k !== 'online' && k !== 'offline') fail(`${p}.partitions.${k}`, 'unknown queue; known: online, offline');
    const partitions = {
      online: po.online === undefined ? 'online' : safe(po.online, `${p}.partitions.online`),
      offline: po.offline === undefined ? 'offline' : safe(po.offline, `${p}.partitions.offline`),
    };
    const stagingDir = safe(o.stagingDir, `${p}.stagingDir`);
    if (!isAbsolute(stagingDir)) fail(`${p}.stagingDir`, 'must be an absolute path on the cluster\'s shared storage');
    if (o.container !== undefined && o.container !== 'pyxis') fail(`${p}.container`, 'must be "pyxis" (or left out for jobs without containers)');
    let pollMs = 2000;
    if (o.pollInterval !== undefined) {
      const d = typeof o.pollInterval === 'string' || typeof o.pollInterval === 'number' ? parseDuration(o.pollInterval) : 'must be a duration such as "2s"';
      if (typeof d === 'string') fail(`${p}.pollInterval`, d);
      if (d < 1) fail(`${p}.pollInterval`, 'must be at least 1s');
      pollMs = d * 1000;
    }
    return {
      name,
      login: login!,
      partitions,
      gres: o.gres === undefined ? 'gpu' : safe(o.gres, `${p}.gres`),
      ...(o.account === undefined ? {} : { account: safe(o.account, `${p}.account`) }),
      stagingDir,
      ...(o.container === 'pyxis' ? { container: 'pyxis' as const } : {}),
      pollMs,
    };
  });
}
