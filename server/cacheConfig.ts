/**
 * The `cache` section of the broker config: each user's persistent cache on the hosts (core/userCache.ts).
 * `{"cache": {"enabled": true, "path": "/root/.cache"}}`; both optional.
 */
import { DEFAULT_CACHE, type CacheConfig } from './core/userCache.ts';

export function validateCache(v: unknown, fail: (path: string, msg: string) => never): CacheConfig {
  if (v === undefined) return DEFAULT_CACHE;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('cache', 'must be an object such as {"enabled": true, "path": "/root/.cache"}');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'enabled' && k !== 'path') fail(`cache.${k}`, 'is not a setting (known: enabled, path)');
  if (o.enabled !== undefined && typeof o.enabled !== 'boolean') fail('cache.enabled', 'must be true or false');
  const path = o.path ?? DEFAULT_CACHE.containerPath;
  // An absolute folder of the container, not the workspace (which the developer's files are) nor the root.
  if (typeof path !== 'string' || !/^\/[\w./-]*[\w-]$/.test(path) || path.split('/').includes('..') || path === '/workspace' || path.startsWith('/workspace/')) {
    fail('cache.path', 'must be an absolute folder of the container outside /workspace, such as /root/.cache');
  }
  return { enabled: o.enabled === undefined ? true : (o.enabled as boolean), containerPath: path as string };
}
