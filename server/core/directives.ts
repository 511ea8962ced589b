/**
 * `# gpurun: gpus=2 gpu-type=A100 cpus=8 memory=32G time=2h queue=offline` in the first lines of a script sets that
 * script's defaults. The keys and their values are those of the job options schema (jobOptions.ts). Pure: used by
 * the CLI, the editor's run buttons, the language server and tests alike.
 */
import type { Queue, SubmitRequest } from '../protocol/jobs.ts';
import { DIRECTIVE_OPTIONS, optionByKey, parseOptionText, type JobOption } from './jobOptions.ts';

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
  checkpointSignal?: string;
  backend?: string;
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

/** One `key=value` word of a directive line, with where its parts are (0-based columns; `eq` is -1 without `=`). */
export interface DirectiveWord {
  line: number;
  column: number;
  text: string;
  key: string;
  value: string;
  /** Column of the `=`, or -1. */
  eq: number;
  /** The option the key names, if it is one a directive may set. */
  option?: JobOption;
}

export interface DirectiveLine {
  line: number;
  /** Column just after `gpurun:`, where words may start. */
  bodyColumn: number;
  words: DirectiveWord[];
}

const DIRECTIVE_RE = /^(\s*#\s*gpurun:)(.*)$/;
const KEYS = DIRECTIVE_OPTIONS.map((o) => o.key);

/** Whether a line is a `# gpurun:` line; the prefix length when it is. */
export function directivePrefix(text: string): number | undefined {
  const m = DIRECTIVE_RE.exec(text);
  return m ? m[1].length : undefined;
}

/** The words of every `# gpurun:` line within the first DIRECTIVE_SCAN_LINES lines, unparsed. */
export function directiveLines(source: string): DirectiveLine[] {
  const out: DirectiveLine[] = [];
  source.split(/\r?\n/, DIRECTIVE_SCAN_LINES).forEach((text, line) => {
    const m = DIRECTIVE_RE.exec(text);
    if (!m) return;
    const words: DirectiveWord[] = [];
    for (const w of m[2].matchAll(/\S+/g)) {
      const column = m[1].length + (w.index ?? 0);
      const eq = w[0].indexOf('=');
      const key = eq < 0 ? w[0] : w[0].slice(0, eq);
      const option = optionByKey(key);
      words.push({ line, column, text: w[0], key, value: eq < 0 ? '' : w[0].slice(eq + 1), eq: eq < 0 ? -1 : column + eq, ...(option?.directive ? { option } : {}) });
    }
    out.push({ line, bodyColumn: m[1].length, words });
  });
  return out;
}

/** The schema's verdict on one word: undefined when it is good (then `apply` sets it), else the message. */
export function checkWord(w: DirectiveWord, into?: Directive): string | undefined {
  if (w.eq <= w.column) return `"${w.text}" is not key=value; write e.g. gpus=2`;
  if (!w.option) return `unknown key "${w.key}"; known keys: ${KEYS.join(', ')}`;
  if (w.value === '') return `${w.key} has no value`;
  const r = parseOptionText(w.option, w.value);
  if ('error' in r) return `${w.key}: ${r.error}`;
  if (into) (into as Record<string, unknown>)[w.option.prop] = r.value;
  return undefined;
}

/** Parses every `# gpurun:` line within the first DIRECTIVE_SCAN_LINES lines; later lines win for the same key. */
export function parseDirectives(source: string): DirectiveResult {
  const result: DirectiveResult = { directive: {}, errors: [], lines: [] };
  for (const dl of directiveLines(source)) {
    result.lines.push(dl.line);
    for (const w of dl.words) {
      const message = checkWord(w, result.directive);
      if (message) result.errors.push({ line: w.line, column: w.column, length: w.text.length, message });
    }
  }
  return result;
}

/** Sets on `req` what the directive asks for (the CLI and the editor both start from this; their options win). */
export function applyDirective(req: SubmitRequest, d: Directive): SubmitRequest {
  for (const o of DIRECTIVE_OPTIONS) {
    const v = (d as Record<string, unknown>)[o.prop];
    if (v !== undefined) (req as unknown as Record<string, unknown>)[o.field] = v;
  }
  return req;
}
