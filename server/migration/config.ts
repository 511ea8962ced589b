/**
 * The broker config's `migration` block: how long a job may take to checkpoint, the load that moves offline jobs off
 * a host, and whether online jobs may preempt offline ones with a checkpoint. Validated here; config.ts calls it.
 */
import { parseDuration } from '../core/units.ts';
import { LOAD_KINDS, type Threshold } from './load.ts';

export interface MigrationConfig {
  /** How long a signalled job may take to write its checkpoint and exit before the move is given up. */
  checkpointTimeoutMs: number;
  /**
   * Load-driven moves: off when null. Fractions (0..1] of the host's CPUs and memory used by its online jobs, and of
   * the time and memory of the GPUs they hold; 1 where not set (never over).
   */
  threshold: Threshold | null;
  /** How long the online load must stay over the threshold before a move starts. */
  windowMs: number;
  /** How often hosts report their online jobs' usage. */
  sampleMs: number;
  /** An online job that cannot be placed because offline jobs hold the GPUs checkpoints and requeues them. */
  preempt: boolean;
  /**
   * How jobs move: "cooperative" (the job saves its own state; only jobs submitted with --checkpoint move), or
   * "transparent" (CRIU checkpoints the container, with no help from the job, where both hosts have it; elsewhere
   * as "cooperative").
   */
  method: 'cooperative' | 'transparent';
}

export const DEFAULT_MIGRATION: MigrationConfig = { checkpointTimeoutMs: 60_000, threshold: null, windowMs: 60_000, sampleMs: 5_000, preempt: false, method: 'cooperative' };

const KEYS = ['checkpointTimeout', 'threshold', 'window', 'sampleEvery', 'preempt', 'method'];

/** `fail(path, message)` throws the config error. */
export function validateMigration(raw: unknown, fail: (path: string, msg: string) => never): MigrationConfig {
  if (raw === undefined) return DEFAULT_MIGRATION;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('migration', 'must be an object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KEYS.includes(k)) fail(`migration.${k}`, `unknown setting; known here: ${KEYS.join(', ')}`);
  const dur = (v: unknown, path: string, dflt: number): number => {
    if (v === undefined) return dflt;
    const r = typeof v === 'string' || typeof v === 'number' ? parseDuration(v) : 'must be a duration such as "60s"';
    if (typeof r === 'string') fail(path, r);
    if (r <= 0) fail(path, 'must be longer than 0 s');
    return r * 1000;
  };
  const frac = (v: unknown, path: string): number => {
    if (typeof v !== 'number' || !(v > 0 && v <= 1)) fail(path, 'must be a fraction above 0 and at most 1, e.g. 0.9');
    return v;
  };
  let threshold: MigrationConfig['threshold'] = null;
  if (o.threshold !== undefined) {
    const t = o.threshold as Record<string, unknown>;
    if (typeof t !== 'object' || t === null) fail('migration.threshold', 'must be an object such as {"cpu": 0.9, "memory": 0.9, "gpu": 0.9, "gpuMemory": 0.9}');
    for (const k of Object.keys(t)) if (!(LOAD_KINDS as readonly string[]).includes(k)) fail(`migration.threshold.${k}`, `unknown setting; known here: ${LOAD_KINDS.join(', ')}`);
    threshold = Object.fromEntries(LOAD_KINDS.map((k) => [k, t[k] === undefined ? 1 : frac(t[k], `migration.threshold.${k}`)])) as Threshold;
  }
  if (o.preempt !== undefined && typeof o.preempt !== 'boolean') fail('migration.preempt', 'must be true or false');
  if (o.method !== undefined && o.method !== 'cooperative' && o.method !== 'transparent') fail('migration.method', 'must be "cooperative" or "transparent"');
  return {
    checkpointTimeoutMs: dur(o.checkpointTimeout, 'migration.checkpointTimeout', DEFAULT_MIGRATION.checkpointTimeoutMs),
    threshold,
    windowMs: dur(o.window, 'migration.window', DEFAULT_MIGRATION.windowMs),
    sampleMs: dur(o.sampleEvery, 'migration.sampleEvery', DEFAULT_MIGRATION.sampleMs),
    preempt: o.preempt === true,
    method: o.method === 'transparent' ? 'transparent' : 'cooperative',
  };
}
