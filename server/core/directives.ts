/**
 * `# gpurun: gpus=2 gpu-type=A100 cpus=8 memory=32G time=2h queue=offline restarts=3` in the first lines of a script sets that
 * script's defaults. Pure: used by the CLI, the broker-less CodeLens and tests alike.
 */
import { QUEUES, type Queue, type SubmitRequest } from '../protocol/jobs.ts';
import { parseDuration, parseMemory } from './units.ts';

/** Only this many leading lines are read: a directive is a header, not something found deep in a file. */
export const DIRECTIVE_SCAN_LINES = 30;

export interface Directive {
  gpus?: number;
  gpuType?: string;
  cpus?: number;
  memoryMiB?: number;
  timeSec?: number;
  queue?: Queue;
  image?: string;
  restarts?: number;
  restartOnExit?: number[];
}

export interface DirectiveError {
  /** 0-based line of the directive. */
  line: number;
  /** 0-based column where the bad word starts, and its length. */
  column: number;
  length: number;
  message: string;
}

export interface DirectiveResult {
  directive: Directive;
  errors: DirectiveError[];
  /** 0-based lines holding directives (the CodeLens sits on the first). */
  lines: number[];
}

const KEYS = ['gpus', 'gpu-type', 'cpus', 'memory', 'time', 'queue', 'image', 'restarts', 'restart-on-exit'] as const;
const DIRECTIVE_RE = /^(\s*#\s*gpurun:)(.*)$/;

/** Parses every `# gpurun:` line within the first DIRECTIVE_SCAN_LINES lines; later lines win for the same key. */
export function parseDirectives(source: string): DirectiveResult {
  const result: DirectiveResult = { directive: {}, errors: [], lines: [] };
  const lines = source.split(/\r?\n/, DIRECTIVE_SCAN_LINES);
  lines.forEach((text, line) => {
    const m = DIRECTIVE_RE.exec(text);
    if (!m) return;
    result.lines.push(line);
    const body = m[2];
    for (const word of body.matchAll(/\S+/g)) {
      const column = m[1].length + (word.index ?? 0);
      const fail = (message: string) => result.errors.push({ line, column, length: word[0].length, message });
      const eq = word[0].indexOf('=');
      if (eq <= 0) {
        fail(`"${word[0]}" is not key=value; write e.g. gpus=2`);
        continue;
      }
      const key = word[0].slice(0, eq);
      const value = word[0].slice(eq + 1);
      if (!(KEYS as readonly string[]).includes(key)) {
        fail(`unknown key "${key}"; known keys: ${KEYS.join(', ')}`);
        continue;
      }
      if (value === '') {
        fail(`${key} has no value`);
        continue;
      }
      const err = applyKey(result.directive, key as (typeof KEYS)[number], value);
      if (err) fail(`${key}: ${err}`);
    }
  });
  return result;
}

function applyKey(d: Directive, key: (typeof KEYS)[number], value: string): string | undefined {
  switch (key) {
    case 'gpus':
    case 'cpus': {
      if (!/^\d+$/.test(value)) return `must be a whole number, got "${value}"`;
      const n = Number(value);
      if (key === 'cpus' && n === 0) return 'must be at least 1';
      if (key === 'gpus') d.gpus = n;
      else d.cpus = n;
      return;
    }
    case 'gpu-type':
      if (!/^[\w.-]+$/.test(value)) return `must be a GPU name such as A100 or L4, got "${value}"`;
      d.gpuType = value;
      return;
    case 'memory': {
      const mib = parseMemory(value);
      if (typeof mib === 'string') return mib;
      d.memoryMiB = mib;
      return;
    }
    case 'time': {
      const sec = parseDuration(value);
      if (typeof sec === 'string') return sec;
      d.timeSec = sec;
      return;
    }
    case 'queue':
      if (!(QUEUES as readonly string[]).includes(value)) return `must be one of ${QUEUES.join(', ')}, got "${value}"`;
      d.queue = value as Queue;
      return;
    case 'image':
      d.image = value;
      return;
    case 'restarts':
      if (!/^\d+$/.test(value)) return `must be a whole number, got "${value}"`;
      d.restarts = Number(value);
      return;
    case 'restart-on-exit': {
      const codes = parseExitCodes(value);
      if (typeof codes === 'string') return codes;
      d.restartOnExit = codes;
      return;
    }
  }
}

/** Sets on `req` what the directive asks for (the CLI and the editor both start from this; their options win). */
export function applyDirective(req: SubmitRequest, d: Directive): SubmitRequest {
  if (d.gpus !== undefined) req.gpus = d.gpus;
  if (d.gpuType !== undefined) req.gpuType = d.gpuType;
  if (d.cpus !== undefined) req.cpus = d.cpus;
  if (d.memoryMiB !== undefined) req.memory = d.memoryMiB;
  if (d.timeSec !== undefined) req.time = d.timeSec;
  if (d.queue !== undefined) req.queue = d.queue;
  if (d.image !== undefined) req.image = d.image;
  if (d.restarts !== undefined) req.restarts = d.restarts;
  if (d.restartOnExit !== undefined) req.restartOnExit = d.restartOnExit;
  return req;
}

/** "75,143" → [75, 143]; an error in words otherwise. Shared by the directive and `--restart-on-exit`. */
export function parseExitCodes(value: string): number[] | string {
  const parts = value.split(',');
  if (!parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) >= 1 && Number(p) <= 255)) return `must be exit codes from 1 to 255 separated by commas, e.g. 75,143; got "${value}"`;
  return parts.map(Number);
}
