/**
 * Each user's persistent cache on the broker's hosts (core/userCache.ts): its size and clearing it, for the caller
 * only (`GET /v1/cache`, `POST /v1/cache/clear`). Docker hosts over SSH keep it as a volume per user; the local host
 * of a team broker as a folder per user under the data folder; a Slurm cluster as a folder per user on its shared
 * storage. A cache in use by a running job of the user is not cleared (Docker refuses to remove a volume in use; the
 * folders are checked against the user's jobs).
 */
import { lstatSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { GpurunError } from '../protocol/errors.ts';
import type { UserCacheInfo } from '../protocol/cache.ts';
import type { CommandExec } from '../core/remoteExec.ts';
import { cacheVolume, ownerKey, volumeSize, type CacheConfig } from '../core/userCache.ts';

export interface UserCachesDeps {
  cache: CacheConfig;
  /** The broker's hosts: name and runtime kind (docker, ssh-process, process). */
  hosts(): Array<{ name: string; runtime: string }>;
  /** Runs commands on an SSH host. */
  exec(host: string): CommandExec | undefined;
  /** The local host's cache folders (a team broker); absent: local jobs run as the broker's user with its ~/.cache. */
  localRoot?: string;
  /** Ids of the user's jobs that run (or start) on `host` (a host's or a cluster's name) now. */
  runningOn(user: string, host: string): string[];
  /** The Slurm clusters, each keeping its users' caches on its shared storage (slurm/backend.ts). */
  clusters?: readonly ClusterCaches[];
}

/** A cluster's side of the caches: each user's folder on its shared storage. */
export interface ClusterCaches {
  readonly name: string;
  cacheInfo(user: string): Promise<UserCacheInfo>;
  clearCache(user: string): Promise<void>;
}

type Place = { name: string; runtime: string; cluster?: ClusterCaches };

/** The local folder of `user`'s cache under `root`. */
export function localCacheDir(root: string, user: string): string {
  return join(root, ownerKey(user));
}

export class UserCaches {
  private readonly d: UserCachesDeps;
  constructor(d: UserCachesDeps) {
    this.d = d;
  }

  /** The caller's cache on each host (or on `only`), with its size. */
  list(user: string, only?: string): Promise<UserCacheInfo[]> {
    return Promise.all(this.pick(only).map((h) => this.one(user, h)));
  }

  /** Empties the caller's cache on each host (or on `only`); returns what each held before. */
  async clear(user: string, only?: string): Promise<UserCacheInfo[]> {
    const out: UserCacheInfo[] = [];
    for (const h of this.pick(only)) {
      const info = await this.one(user, h);
      if (info.kind === 'none') {
        if (only) throw new GpurunError('E_CONFLICT', `host ${h.name} keeps no cache for jobs: ${info.note}`);
        continue;
      }
      const busy = this.d.runningOn(user, h.name);
      if (busy.length) throw new GpurunError('E_CONFLICT', `your cache on ${h.name} is in use by your running job ${busy.join(', ')}`, { hint: `Clear it when the job has ended (gpurun wait ${busy[0]}), or cancel it.` });
      if (h.cluster) await h.cluster.clearCache(user);
      else if (info.kind === 'volume') await this.removeVolume(h.name, info.name!);
      else rmSync(info.name!, { recursive: true, force: true });
      out.push(info);
    }
    return out;
  }

  private pick(only?: string): Place[] {
    const all: Place[] = [...this.d.hosts(), ...(this.d.clusters ?? []).map((c) => ({ name: c.name, runtime: 'slurm', cluster: c }))];
    if (only === undefined) return all;
    const h = all.find((x) => x.name === only);
    if (!h) throw new GpurunError('E_NOT_FOUND', `no host ${only}`, { hint: `Hosts: ${all.map((x) => x.name).join(', ') || '(none)'}.` });
    return [h];
  }

  private async one(user: string, h: Place): Promise<UserCacheInfo> {
    if (h.cluster) return h.cluster.cacheInfo(user);
    const none = (note: string): UserCacheInfo => ({ host: h.name, kind: 'none', name: null, path: null, bytes: null, note });
    if (!this.d.cache.enabled) return none('the broker config turns caches off (cache.enabled)');
    if (h.runtime === 'docker') {
      const volume = cacheVolume(user);
      const info: UserCacheInfo = { host: h.name, kind: 'volume', name: volume, path: this.d.cache.containerPath, bytes: null };
      const exec = this.d.exec(h.name);
      if (!exec) return { ...info, note: 'the host cannot be asked' };
      try {
        const r = await exec.exec(['docker', 'system', 'df', '-v', '--format', '{{json .Volumes}}'], { timeoutMs: 60_000 });
        if (r.code !== 0) return { ...info, note: `docker system df failed: ${r.stderr.trim() || `exit ${r.code}`}` };
        return { ...info, bytes: volumeSize(r.stdout, volume) };
      } catch (e) {
        return { ...info, note: `the host cannot be reached: ${(e as Error).message}` };
      }
    }
    if (h.runtime === 'process') {
      if (!this.d.localRoot) return none('local jobs run as you, with your own ~/.cache');
      const dir = localCacheDir(this.d.localRoot, user);
      return { host: h.name, kind: 'folder', name: dir, path: dir, bytes: folderBytes(dir) };
    }
    return none('jobs on hosts without Docker run as the host\'s SSH user, with its ~/.cache');
  }

  private async removeVolume(host: string, volume: string): Promise<void> {
    const exec = this.d.exec(host)!;
    const r = await exec.exec(['docker', 'volume', 'rm', volume], { timeoutMs: 60_000 });
    if (r.code === 0 || /no such volume/i.test(r.stderr)) return;
    if (/in use/i.test(r.stderr)) throw new GpurunError('E_CONFLICT', `your cache on ${host} is in use by a container`, { hint: 'Clear it when your running jobs there have ended.' });
    throw new GpurunError('E_INTERNAL', `removing your cache on ${host} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
  }
}

/** Bytes of the files under `dir` (links not followed); 0 when it does not exist. */
function folderBytes(dir: string): number {
  let n = 0;
  const walk = (p: string): void => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
    else n += st.size;
  };
  walk(dir);
  return n;
}
