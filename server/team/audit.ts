/**
 * The audit log: one JSON object per line in `<dataDir>/audit.log` (mode 0600): who submitted and cancelled which
 * job, who created or revoked which token, and when. Appends are synchronous and single `write`s with O_APPEND, so
 * lines from the broker and from `gpurun token` on the same machine do not interleave. A failed write (a full
 * disk) is reported to the logger and never fails the request.
 *
 * Usage: `openAudit(dataDir, log)` once per process, then `audit({ action: 'token.revoke', by: 'admin', user: 'bob' })`.
 */
import { appendFileSync, chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../logger.ts';

export interface AuditEvent {
  /** What happened: `job.submit`, `job.cancel`, `token.create`, `token.revoke`, … */
  action: string;
  /** Who did it (the principal's user), when known. */
  by?: string;
  /** Other facts: job id, target user, source address. Never a token or an env value. */
  [field: string]: unknown;
}

let current: { path: string; log?: Logger; moded?: boolean } | undefined;

export function openAudit(dataDir: string, log?: Logger): string {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const path = join(dataDir, 'audit.log');
  current = { path, ...(log ? { log } : {}) };
  return path;
}

/** Appends one event (with its time) to the audit log opened by openAudit; does nothing when none is open. */
export function audit(event: AuditEvent): void {
  if (!current) return;
  const line = `${JSON.stringify({ t: new Date().toISOString(), ...event })}\n`;
  try {
    appendFileSync(current.path, line, { mode: 0o600 });
    // Whoever created it first, and with whatever umask, it is 0600.
    if (!current.moded) chmodSync(current.path, 0o600);
    current.moded = true;
  } catch (err) {
    current.log?.error('could not write the audit log', { err, action: event.action });
  }
}
