/** `GET /v1/cache` and `POST /v1/cache/clear`: the caller's persistent cache on each host. */
import { formatBytes } from './text.ts';

/** A user's cache on one host. */
export interface UserCacheInfo {
  host: string;
  /** `volume`: a Docker volume; `folder`: a folder of the local host; `none`: this host keeps no cache for jobs. */
  kind: 'volume' | 'folder' | 'none';
  /** The volume's name or the folder's path on the host; null for `none`. */
  name: string | null;
  /** Where a job sees it (XDG_CACHE_HOME points there); null for `none`. */
  path: string | null;
  /** Its size in bytes; null when unknown (the host could not be asked, or keeps none). */
  bytes: number | null;
  /** Why there is none, or why its size is unknown. */
  note?: string;
}

/** `POST /v1/cache/clear` body: one host, or every host when absent. */
export interface ClearCacheRequest {
  host?: string;
}

/** A cache's size as the CLI and the editor show it: `-` for none, `?` when the host could not say. Pure. */
export function cacheSizeText(c: UserCacheInfo): string {
  return c.kind === 'none' ? '-' : c.bytes === null ? '?' : formatBytes(c.bytes);
}

/** What a cache is and where a job sees it, or why the host keeps none. Pure. */
export function cacheWhereText(c: UserCacheInfo): string {
  return c.kind === 'none' ? `none: ${c.note ?? ''}` : `${c.kind} ${c.name}, in jobs at ${c.path}${c.note ? ` (${c.note})` : ''}`;
}
