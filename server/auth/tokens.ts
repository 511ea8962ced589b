/**
 * Bearer tokens. A token is shown once when created; the store keeps only its SHA-256.
 */
import { createHash, randomBytes } from 'node:crypto';
import { GpurunError } from '../protocol/errors.ts';
import type { Store } from '../core/store.ts';
import type { Principal } from '../broker.ts';

const USER_RE = /^[a-z_][a-z0-9_.-]{0,63}$/i;

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function createToken(store: Store, user: string, admin: boolean): string {
  if (!USER_RE.test(user)) {
    throw new GpurunError('E_BAD_REQUEST', `"${user}" is not a valid user name`, { hint: 'Use letters, digits, ".", "_" and "-", starting with a letter.' });
  }
  const token = `gpr_${randomBytes(24).toString('base64url')}`;
  store.addToken(hashToken(token), user, admin, new Date().toISOString());
  return token;
}

/** The principal behind an `Authorization` header value. */
export function authenticate(store: Store, header: string | undefined): Principal {
  if (!header) {
    throw new GpurunError('E_UNAUTHORIZED', 'this broker needs a token', {
      hint: 'Ask the broker admin for one (gpurun token create USER on the broker machine) and set GPURUN_TOKEN.',
    });
  }
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  const rec = m ? store.findToken(hashToken(m[1])) : undefined;
  if (!rec) throw new GpurunError('E_UNAUTHORIZED', 'the token was not accepted by the broker', { hint: 'Check GPURUN_TOKEN; ask the admin for a new token if it was revoked.' });
  return { user: rec.user, admin: rec.admin };
}
