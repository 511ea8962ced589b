/**
 * The settings of a shared broker that config.ts delegates here: `limits`, `retention` and `tls`. Pure validation
 * with errors that name the field (see the README's "Broker configuration").
 */
import { isAbsolute, resolve } from 'node:path';
import { DEFAULT_LIMITS, parseBytes, type Limits } from './core/limits.ts';
import { parseDuration } from './core/units.ts';

/**
 * `auto`: TLS on a TCP address that is not loopback (a self-signed certificate made in dataDir on first start),
 * plain HTTP on loopback and Unix sockets. `self-signed`: TLS with that certificate on any TCP address. `files`: a
 * certificate and key the admin gives (e.g. CA-signed). `off`: plain HTTP, also on a network address (only when the
 * config says `"tls": false`).
 */
export type TlsConfig = { mode: 'auto' } | { mode: 'self-signed' } | { mode: 'off' } | { mode: 'files'; cert: string; key: string };

export interface TeamConfig {
  limits: Limits;
  /** Seconds an ended job's log and run folder are kept; 0 = forever. */
  retentionSec: number;
  tls: TlsConfig;
}

export const TEAM_KEYS = ['limits', 'retention', 'tls'];
const LIMIT_KEYS = ['maxQueuedJobs', 'maxRunningGpus', 'submitsPerMinute', 'maxEnvBytes', 'maxLogBytes', 'minFreeDisk', 'maxBodyBytes', 'authFailuresPerMinute'];
const DEFAULT_RETENTION_SEC = 30 * 86400;

type Fail = (path: string, msg: string) => never;

export function validateTeam(o: Record<string, unknown>, baseDir: string, fail: Fail): TeamConfig {
  const obj = (v: unknown, path: string) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, 'must be an object');
    return v as Record<string, unknown>;
  };
  const keys = (x: Record<string, unknown>, path: string, allowed: string[]) => {
    for (const k of Object.keys(x)) if (!allowed.includes(k)) fail(`${path}.${k}`, `unknown setting; known here: ${allowed.join(', ')}`);
  };
  const int = (v: unknown, path: string) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(path, 'must be a whole number ≥ 0 (0 = no limit)');
    return v;
  };
  const bytes = (v: unknown, path: string) => {
    const r = typeof v === 'string' || typeof v === 'number' ? parseBytes(v) : 'must be a size such as "64K" or "1G"';
    if (typeof r === 'string') fail(path, r);
    return r;
  };

  const l = o.limits === undefined ? {} : obj(o.limits, 'limits');
  keys(l, 'limits', LIMIT_KEYS);
  const limits: Limits = { ...DEFAULT_LIMITS, minFreeDisk: { ...DEFAULT_LIMITS.minFreeDisk } };
  for (const k of ['maxQueuedJobs', 'maxRunningGpus', 'submitsPerMinute', 'authFailuresPerMinute'] as const) if (l[k] !== undefined) limits[k] = int(l[k], `limits.${k}`);
  for (const k of ['maxEnvBytes', 'maxLogBytes', 'maxBodyBytes'] as const) if (l[k] !== undefined) limits[k] = bytes(l[k], `limits.${k}`);
  if (limits.maxBodyBytes < 1024) fail('limits.maxBodyBytes', 'must be at least 1K');
  if (l.minFreeDisk !== undefined) {
    const v = l.minFreeDisk;
    const pct = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(v) : null;
    if (pct) {
      if (Number(pct[1]) > 100) fail('limits.minFreeDisk', 'a percentage must be at most 100%');
      limits.minFreeDisk = { bytes: Number.MAX_SAFE_INTEGER, percent: Number(pct[1]) };
    } else limits.minFreeDisk = { bytes: bytes(v, 'limits.minFreeDisk'), percent: 100 };
  }

  let retentionSec = DEFAULT_RETENTION_SEC;
  if (o.retention !== undefined) {
    const r = obj(o.retention, 'retention');
    keys(r, 'retention', ['logs']);
    if (r.logs !== undefined) {
      const d = typeof r.logs === 'string' || typeof r.logs === 'number' ? parseDuration(r.logs) : 'must be a duration such as "30d" (0 = keep forever)';
      if (typeof d === 'string') fail('retention.logs', d);
      retentionSec = d;
    }
  }

  let tls: TlsConfig = { mode: 'auto' };
  if (o.tls === false) tls = { mode: 'off' };
  else if (o.tls === true) tls = { mode: 'self-signed' };
  else if (o.tls !== undefined) {
    const t = obj(o.tls, 'tls');
    keys(t, 'tls', ['cert', 'key']);
    const path = (v: unknown, p: string) => {
      if (typeof v !== 'string' || v === '') fail(p, 'must be the path of a PEM file');
      return isAbsolute(v) ? v : resolve(baseDir, v);
    };
    tls = { mode: 'files', cert: path(t.cert, 'tls.cert'), key: path(t.key, 'tls.key') };
  }
  return { limits, retentionSec, tls };
}
