/**
 * The one error type. `code` is stable (clients switch on it), `message` says what happened in words a person can
 * act on, `hint` says what to do next. The broker sends `{code, message, hint}` with the status from STATUS_OF.
 */

export const ERROR_CODES = [
  'E_BAD_REQUEST',
  'E_UNAUTHORIZED',
  'E_FORBIDDEN',
  'E_NOT_FOUND',
  'E_CONFLICT',
  'E_UNSATISFIABLE',
  'E_CONFIG',
  'E_UNREACHABLE',
  'E_PROTOCOL',
  'E_INTERNAL',
  'E_LIMIT',
  'E_TOO_LARGE',
  'E_TIMEOUT',
  'E_GONE',
  'E_STORAGE',
  'E_DISK_FULL',
  'E_TLS',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export const STATUS_OF: Record<ErrorCode, number> = {
  E_BAD_REQUEST: 400,
  E_UNAUTHORIZED: 401,
  E_FORBIDDEN: 403,
  E_NOT_FOUND: 404,
  E_CONFLICT: 409,
  E_UNSATISFIABLE: 422,
  E_CONFIG: 500,
  E_UNREACHABLE: 503,
  E_PROTOCOL: 502,
  E_INTERNAL: 500,
  /** A per-user limit (queued jobs, submit rate, failed sign-ins): try again later. */
  E_LIMIT: 429,
  E_TOO_LARGE: 413,
  /** The client was too slow to send its request. */
  E_TIMEOUT: 408,
  /** The thing existed but was removed (a job's output after its retention time). */
  E_GONE: 410,
  /** The broker could not read or write its database or files (e.g. the disk is full). */
  E_STORAGE: 503,
  /** The broker's data disk has less free space than its floor: submits wait until there is room. */
  E_DISK_FULL: 507,
  /** The broker's TLS certificate was not the one expected (client side). */
  E_TLS: 502,
};

/** The JSON body of every non-2xx answer. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  hint?: string;
}

export class GpurunError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  /** Exit code and stderr of a failed remote or local command, when that is the cause. */
  readonly exitCode?: number;
  readonly stderr?: string;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { hint?: string; cause?: unknown; exitCode?: number; stderr?: string } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'GpurunError';
    this.code = code;
    this.hint = opts.hint;
    this.exitCode = opts.exitCode;
    this.stderr = opts.stderr;
  }

  get status(): number {
    return STATUS_OF[this.code];
  }

  toBody(): ErrorBody {
    return this.hint ? { code: this.code, message: this.message, hint: this.hint } : { code: this.code, message: this.message };
  }
}

export function isErrorBody(x: unknown): x is ErrorBody {
  return typeof x === 'object' && x !== null && typeof (x as ErrorBody).code === 'string' && typeof (x as ErrorBody).message === 'string';
}

/**
 * True for a GpurunError, also one thrown by another bundle of this code (the CLI and the broker are separate
 * bundles, each with its own copy of the class, so `instanceof` is not enough).
 */
export function isGpurunError(e: unknown): e is GpurunError {
  return e instanceof Error && e.name === 'GpurunError' && typeof (e as GpurunError).code === 'string';
}
