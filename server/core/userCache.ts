/**
 * A user's persistent cache on a host: a Docker volume per user on Docker hosts (mounted at the configured path in
 * every job container of that user, ~/.cache of root by default), a folder per user on the local host of a team
 * broker. Downloads (Hugging Face, pip, torch hub) then survive from one job of the user to the next. A cache is
 * never shared: its name comes from the owner, and only the owner's jobs mount it. Pure: names, variables, sizes.
 */
import { createHash } from 'node:crypto';

/** The cache settings of a broker (config `cache`). */
export interface CacheConfig {
  /** Jobs get their user's cache (default true). */
  enabled: boolean;
  /** Where the cache is in a job's container (default /root/.cache: ~/.cache of root, the images' usual user). */
  containerPath: string;
}

export const DEFAULT_CACHE: CacheConfig = { enabled: true, containerPath: '/root/.cache' };

/**
 * A name part for `owner` that Docker accepts ([a-z0-9_.-]); a name that had to be changed gets a hash of the real
 * one, so two owners never share a name (`Alice` and `alice`, `a b` and `a_b`).
 */
export function ownerSlug(owner: string): string {
  const clean = owner.toLowerCase().replace(/[^a-z0-9_.-]/g, '_');
  return clean === owner ? clean : `${clean}-${createHash('sha256').update(owner).digest('hex').slice(0, 8)}`;
}

/**
 * A name part for `owner` that no other owner can have, whatever the names: the readable part (ownerSlug's cleaning)
 * then always a hash of the real name. (ownerSlug alone lets an owner literally named like another's cleaned name and
 * hash share it; a cache must never be shared.)
 */
export function ownerKey(owner: string): string {
  return `${owner.toLowerCase().replace(/[^a-z0-9_.-]/g, '_').slice(0, 64)}-${createHash('sha256').update(owner).digest('hex').slice(0, 12)}`;
}

/** The Docker volume of `owner`'s cache on a host. */
export function cacheVolume(owner: string): string {
  return `gpurun-cache-${ownerKey(owner)}`;
}

/**
 * The variables that point the usual caches into the user's cache at `path` (as the job sees it): XDG's, so tools
 * that follow it need nothing else, and Hugging Face's, pip's and torch hub's own (they would otherwise go under
 * $HOME, which is not `path`'s parent in every image). A variable the job sets itself wins (the caller merges).
 */
export function cacheEnv(path: string): Record<string, string> {
  return { XDG_CACHE_HOME: path, HF_HOME: `${path}/huggingface`, PIP_CACHE_DIR: `${path}/pip`, TORCH_HOME: `${path}/torch` };
}

const UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };

/** Bytes of a size as Docker prints it ("0B", "1.5kB", "12.3MB", "2GB"); null when it is not one ("N/A"). */
export function parseDockerSize(text: string): number | null {
  const m = /^\s*([\d.]+)\s*([kmgt]?i?b)\s*$/i.exec(text);
  if (!m) return null;
  const n = Number(m[1]);
  const u = UNITS[m[2].toLowerCase()];
  return Number.isFinite(n) && u ? Math.round(n * u) : null;
}

/** The size of `volume` from `docker system df -v --format '{{json .Volumes}}'`; 0 when the volume does not exist yet. */
export function volumeSize(dfJson: string, volume: string): number | null {
  const vols = JSON.parse(dfJson.trim() || '[]') as Array<{ Name?: string; Size?: string }>;
  const v = (vols ?? []).find((x) => x.Name === volume);
  return v ? parseDockerSize(v.Size ?? '') : 0;
}
