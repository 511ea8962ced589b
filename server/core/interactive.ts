/**
 * What a user may ask of `exec` and `forward`, decided in one place (pure): the command is an argv array of plain
 * strings, the terminal's size and TERM are bounded, a port is a number from 1 to 65535. Anything else is refused
 * with a message that says what was wrong, before anything runs.
 */
import { GpurunError } from '../protocol/errors.ts';
import { ATTACH_HEADER, EXEC_HEADER, type AttachRequest, type ExecRequest } from '../protocol/interactive.ts';

const MAX_ARGS = 4096;
const MAX_ARGV_BYTES = 128 * 1024;
const TERM_RE = /^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$/;

const bad = (msg: string, hint = 'Run it as: gpurun exec JOB -- CMD [ARGS...]') => new GpurunError('E_BAD_REQUEST', msg, { hint });

/** Parses and checks the `x-gpurun-exec` header (base64url JSON of an ExecRequest). */
export function parseExecRequest(header: string | undefined): ExecRequest {
  return validateExecRequest(decodeHeader(header, 'exec request', EXEC_HEADER));
}

function decodeHeader(header: string | undefined, what: string, name: string): unknown {
  if (!header) throw bad(`the ${what} is missing (the ${name} header)`);
  try {
    return JSON.parse(Buffer.from(header, 'base64url').toString('utf8'));
  } catch {
    throw bad(`the ${what} is not base64url JSON`);
  }
}

/** Parses and checks the `x-gpurun-exec-attach` header (base64url JSON of an AttachRequest). */
export function parseAttachRequest(header: string | undefined): AttachRequest {
  const r = decodeHeader(header, 'reattach request', ATTACH_HEADER);
  if (typeof r !== 'object' || r === null || Array.isArray(r)) throw bad('the reattach request must be a JSON object');
  const { session, offset, ...rest } = r as Record<string, unknown>;
  if (Object.keys(rest).length) throw bad(`unknown field "${Object.keys(rest)[0]}" in the reattach request`);
  if (typeof session !== 'string' || !/^[a-f0-9]{32}$/.test(session)) throw bad('session must be the id of an exec session (32 hex digits)');
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) throw bad('offset must be a whole number of bytes, 0 or more');
  return { session, offset };
}

export function validateExecRequest(raw: unknown): ExecRequest {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('the exec request must be a JSON object');
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) if (!['command', 'tty', 'rows', 'cols', 'term', 'log'].includes(k)) throw bad(`unknown field "${k}" in the exec request`);
  const cmd = r.command;
  if (!Array.isArray(cmd) || cmd.length === 0) throw bad('command must be a non-empty array of strings (an argv, not a shell line)');
  if (cmd.length > MAX_ARGS) throw bad(`command has ${cmd.length} words; at most ${MAX_ARGS}`);
  let bytes = 0;
  for (const [i, a] of cmd.entries()) {
    if (typeof a !== 'string') throw bad(`command[${i}] must be a string`);
    if (a.includes('\0')) throw bad(`command[${i}] contains a NUL byte`);
    bytes += Buffer.byteLength(a) + 1;
  }
  if (bytes > MAX_ARGV_BYTES) throw bad(`command is ${bytes} bytes long; at most ${MAX_ARGV_BYTES}`);
  if (cmd[0] === '') throw bad('command[0] (the program) is empty');
  if (r.tty !== undefined && typeof r.tty !== 'boolean') throw bad('tty must be true or false');
  if (r.log !== undefined && typeof r.log !== 'boolean') throw bad('log must be true or false');
  const out: ExecRequest = { command: cmd as string[], ...(r.tty ? { tty: true } : {}), ...(r.log ? { log: true } : {}) };
  if (r.tty) {
    out.rows = size(r.rows, 'rows', 24);
    out.cols = size(r.cols, 'cols', 80);
    if (r.term !== undefined && (typeof r.term !== 'string' || !TERM_RE.test(r.term))) throw bad('term must be a terminal type such as xterm-256color (letters, digits, ".+_-")');
    out.term = (r.term as string | undefined) ?? 'xterm';
  }
  return out;
}

/** A terminal dimension: a whole number from 1 to 10000 (default when absent). */
export function size(v: unknown, name: string, def: number): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 10_000) throw bad(`${name} must be a whole number from 1 to 10000`);
  return v;
}

/** A TCP port given as text (query parameter, `PORT[:LOCAL]`): 1 to 65535, or 0 where `zeroOk` (any free port). */
export function parsePort(text: string | null | undefined, what: string, zeroOk = false): number {
  if (text === null || text === undefined || !/^\d{1,5}$/.test(text)) throw new GpurunError('E_BAD_REQUEST', `${what} must be a port number from ${zeroOk ? 0 : 1} to 65535, got ${JSON.stringify(text ?? '')}`, { hint: 'e.g. gpurun forward JOB 6006 or gpurun forward JOB 8888:18888' });
  const n = Number(text);
  if (n > 65535 || (n === 0 && !zeroOk)) throw new GpurunError('E_BAD_REQUEST', `${what} must be a port number from ${zeroOk ? 0 : 1} to 65535, got ${n}`, { hint: 'e.g. gpurun forward JOB 6006 or gpurun forward JOB 8888:18888' });
  return n;
}

/** `PORT` or `PORT:LOCAL` of `gpurun forward`: the job's port and the local one (the same when not given). */
export function parsePortSpec(spec: string): { port: number; local: number } {
  const m = /^([^:]*)(?::(.*))?$/.exec(spec)!;
  const port = parsePort(m[1], 'the job\'s port');
  return { port, local: m[2] === undefined ? port : parsePort(m[2], 'the local port', true) };
}
