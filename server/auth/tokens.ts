/**
 * Bearer tokens. A token is shown once when created; the store keeps only its SHA-256, a public id (the hash's
 * first 12 hex digits), an optional expiry and the time it was revoked. Expired and revoked tokens are refused with
 * a message that says so; open streams of such a token are ended by the app (app.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { GpurunError } from '../protocol/errors.ts';
import type { Store, TokenRecord } from '../core/store.ts';
import type { Principal } from '../broker.ts';
import { parseDuration } from '../core/units.ts';

const USER_RE = /^[a-z_][a-z0-9_.-]{0,63}$/i;

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** `--expires 90d` → the ISO time it ends; an error message for a bad or zero duration. */
export function expiryOf(text: string, now: Date): string | GpurunError {
  const sec = parseDuration(text);
  if (typeof sec === 'string' || sec <= 0) return new GpurunError('E_BAD_REQUEST', `--expires: ${typeof sec === 'string' ? sec : 'must be longer than 0'}`, { hint: 'e.g. --expires 90d, --expires 12h' });
  return new Date(now.getTime() + sec * 1000).toISOString();
}

export function createToken(store: Store, user: string, admin: boolean, expiresAt: string | null = null): string {
  if (!USER_RE.test(user)) {
    throw new GpurunError('E_BAD_REQUEST', `"${user}" is not a valid user name`, { hint: 'Use letters, digits, ".", "_" and "-", starting with a letter.' });
  }
  const token = `gpr_${randomBytes(24).toString('base64url')}`;
  store.addToken(hashToken(token), user, admin, new Date().toISOString(), expiresAt);
  return token;
}

/** Why a stored token is not usable now, or null when it is. */
export function tokenRefusal(rec: TokenRecord, now: Date): string | null {
  if (rec.revokedAt) return `the token ${rec.id} of ${rec.user} was revoked at ${rec.revokedAt}`;
  if (rec.expiresAt && Date.parse(rec.expiresAt) <= now.getTime()) return `the token ${rec.id} of ${rec.user} expired at ${rec.expiresAt}`;
  return null;
}

/** The principal behind an `Authorization` header value, and the token's hash (to check it again later). */
export function authenticateToken(store: Store, header: string | undefined, now = new Date()): { principal: Principal; hash: string } {
  if (!header) {
    throw new GpurunError('E_UNAUTHORIZED', 'this broker needs a token', {
      hint: 'Ask the broker admin for one (gpurun token create USER on the broker machine) and set GPURUN_TOKEN.',
    });
  }
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  const hash = m ? hashToken(m[1]) : '';
  const rec = m ? store.findToken(hash) : undefined;
  if (!rec) throw new GpurunError('E_UNAUTHORIZED', 'the token was not accepted by the broker', { hint: 'Check GPURUN_TOKEN; ask the admin for a new token if it was revoked.' });
  const why = tokenRefusal(rec, now);
  if (why) throw new GpurunError('E_UNAUTHORIZED', why, { hint: 'Ask the broker admin for a new token (gpurun token create) and set GPURUN_TOKEN.' });
  return { principal: { user: rec.user, admin: rec.admin }, hash };
}

export function authenticate(store: Store, header: string | undefined): Principal {
  return authenticateToken(store, header).principal;
}

/**
 * The token `ref` names: its id, a prefix of its id that only one token has, or the token itself. Throws
 * E_NOT_FOUND (none) or E_BAD_REQUEST (a prefix several tokens share).
 */
export function findTokenRef(store: Store, ref: string): TokenRecord {
  if (ref.startsWith('gpr_')) {
    const rec = store.findToken(hashToken(ref));
    if (rec) return rec;
  } else if (/^[0-9a-f]{4,12}$/.test(ref)) {
    const hits = store.listTokens().filter((t) => t.id.startsWith(ref));
    if (hits.length === 1) return hits[0];
    if (hits.length > 1) throw new GpurunError('E_BAD_REQUEST', `${hits.length} tokens have ids starting with ${ref}: ${hits.map((t) => t.id).join(', ')}`, { hint: 'Give more of the id.' });
  }
  throw new GpurunError('E_NOT_FOUND', `no token ${ref.startsWith('gpr_') ? '(the one given)' : ref}`, { hint: 'List tokens with: gpurun token list (ids are 4 to 12 hex digits)' });
}

/** A token as lists show it: no hash, its state now. */
export function tokenView(rec: TokenRecord, now = new Date()): TokenRecord & { state: 'active' | 'expired' | 'revoked' } {
  const state = rec.revokedAt ? 'revoked' : rec.expiresAt && Date.parse(rec.expiresAt) <= now.getTime() ? 'expired' : 'active';
  return { ...rec, state };
}
