/** Which button an error message offers, by the broker's error code. Pure. */
import type { ErrorCode } from '../../server/protocol/errors.ts';

export type ErrorAction = 'Sign In' | 'Open Settings' | 'Show Log' | 'Show Hosts';

/** The actions for an error: the one that fixes it first, "Show Log" always last. */
export function actionsFor(code: ErrorCode | undefined, embedded: boolean): ErrorAction[] {
  switch (code) {
    case 'E_UNAUTHORIZED':
    case 'E_FORBIDDEN':
      return ['Sign In', 'Show Log'];
    case 'E_UNREACHABLE':
      return embedded ? ['Show Log'] : ['Open Settings', 'Sign In', 'Show Log'];
    case 'E_UNSATISFIABLE':
      return ['Show Hosts', 'Show Log'];
    case 'E_CONFIG':
      return ['Open Settings', 'Show Log'];
    default:
      return ['Show Log'];
  }
}

/** "message. hint" for one notification line. */
export function errorText(err: { message: string; hint?: string }): string {
  const msg = err.message.replace(/\.?$/, '.');
  return err.hint ? `${msg} ${err.hint}` : msg;
}
