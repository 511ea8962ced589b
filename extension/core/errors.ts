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

/**
 * An error as the editor says it: the broker client's hints name the CLI's GPURUN_BROKER and --broker, which mean
 * nothing here; the editor's setting is gpurun.brokerUrl (or, for the local broker, there is nothing to set).
 */
export function editorErrorText(err: { code?: string; message: string; hint?: string }, embedded: boolean): string {
  if (err.code === 'E_UNREACHABLE') {
    if (embedded) return errorText({ message: err.message, hint: 'The local broker did not answer; GPU Run starts it again by itself (Show Log has its output).' });
    // The setting's name comes first: a notification shows about 55 characters before it must be expanded.
    const m = /^cannot reach the broker at (\S+) \((.*)\)\.?$/.exec(err.message);
    const where = m ? `gpurun.brokerUrl: ${m[1]}, ${m[2]}` : 'gpurun.brokerUrl';
    return `cannot reach the broker (${where}).${m ? '' : ` ${err.message.replace(/\.?$/, '.')}`} Check that it runs there and that the setting is its address.`;
  }
  if (err.code === 'E_UNAUTHORIZED') return `${err.message.replace(/\.$/, '')}. Sign in with a token from the broker's admin.`;
  return errorText({ message: err.message, hint: err.hint?.replace(/GPURUN_BROKER or --broker/g, 'the setting gpurun.brokerUrl').replace(/GPURUN_TOKEN/g, 'GPU Run: Sign In') });
}
