/** A small structured logger: one JSON object per line. Children carry fields (e.g. the job id). Never log tokens. */
export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export function jsonLogger(out: { write(s: string): unknown }, base: Record<string, unknown> = {}): Logger {
  const emit = (level: string, msg: string, fields?: Record<string, unknown>) => {
    const extra: Record<string, unknown> = { ...fields };
    if (extra.err instanceof Error) {
      const e = extra.err as Error & { code?: unknown; hint?: unknown };
      // The hint is what an admin does about it (e.g. the known_hosts line to add); it never holds secrets.
      extra.err = { message: e.message, stack: e.stack, code: e.code, ...(e.hint ? { hint: e.hint } : {}) };
    }
    out.write(`${JSON.stringify({ t: new Date().toISOString(), level, msg, ...base, ...extra })}\n`);
  };
  return {
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (f) => jsonLogger(out, { ...base, ...f }),
  };
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {}, child: () => silentLogger };
