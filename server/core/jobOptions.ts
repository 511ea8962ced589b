/**
 * The one schema of job options: what a job may ask for, in every form it is asked — a `gpurun run` flag, a
 * `# gpurun:` directive word, a field of `POST /v1/jobs`, a completion item of the language server. The CLI's flags
 * and `--help`, the directive parser, submit validation and the language server all read this table; none keeps a
 * list of its own. Pure.
 */
import { QUEUES } from '../protocol/jobs.ts';
import { formatDuration, formatMemory, parseDuration, parseMemory } from './units.ts';
import { MAX_RESTARTS } from './restartPolicy.ts';
import { editDistance } from './editDistance.ts';

/** Signals a job may ask to get for a checkpoint (as Slurm's --signal). */
export const CHECKPOINT_SIGNALS = ['SIGUSR1', 'SIGUSR2', 'SIGINT', 'SIGTERM', 'SIGHUP', 'SIGALRM', 'SIGQUIT'] as const;

/** Most exit codes one job may list in restart-on-exit. */
const MAX_EXIT_CODES = 32;

/** A parsed value, or the reason the text is not one (a message without the option's name). */
export type Parsed<T> = { value: T } | { error: string };

export type OptionType = 'integer' | 'name' | 'size' | 'duration' | 'enum' | 'image' | 'integer-list';

export interface JobOption {
  /** Directive key and CLI flag name (`gpu-type`: `# gpurun: gpu-type=A100`, `--gpu-type A100`). */
  key: string;
  /** Field of the submit request (`POST /v1/jobs`). */
  field: 'gpus' | 'gpuType' | 'cpus' | 'memory' | 'time' | 'queue' | 'image' | 'restarts' | 'restartOnExit' | 'backend' | 'name' | 'checkpointSignal';
  /** Property of a parsed directive (memory in MiB and time in seconds say so in the name). */
  prop: 'gpus' | 'gpuType' | 'cpus' | 'memoryMiB' | 'timeSec' | 'queue' | 'image' | 'restarts' | 'restartOnExit' | 'backend' | 'name' | 'checkpointSignal';
  type: OptionType;
  /** Unit of the parsed value (`MiB`, `s`), if it has one. */
  unit?: 'MiB' | 's';
  /** Valid range of an integer (each element of an integer list). */
  min?: number;
  max?: number;
  /** The allowed values of an enum. */
  values?: readonly string[];
  /** The default, as help shows it. */
  default: string;
  /** What the value means, one line (help text, hover, completion detail). */
  description: string;
  /** The value's placeholder in help (`N`, `SIZE`). */
  metavar: string;
  /** A valid example value (shown in hovers and in "write e.g." messages). */
  example: string;
  /** False for options that are a flag and an API field but not a directive key (a script does not name itself). */
  directive: boolean;
}

const GPU_NAME = /^[\w.-]{1,64}$/;
/** An image reference Docker cannot read as an option: it starts with a letter or digit (never `--privileged`). */
const IMAGE_REF = /^[A-Za-z0-9][\w.\-/:@]{0,255}$/;
const BACKEND_NAME = /^[A-Za-z0-9][\w.-]{0,63}$/;

/** Every job option, in the order help lists them. */
export const JOB_OPTIONS: readonly JobOption[] = [
  { key: 'gpus', field: 'gpus', prop: 'gpus', type: 'integer', min: 0, max: 1024, default: '1 if the pool has GPUs, else 0', description: 'GPUs, all on one host', metavar: 'N', example: '2', directive: true },
  { key: 'gpu-type', field: 'gpuType', prop: 'gpuType', type: 'name', default: 'any', description: 'GPU type: whole words of the GPU name (e.g. A100, L4, RTX 4090)', metavar: 'T', example: 'A100', directive: true },
  { key: 'cpus', field: 'cpus', prop: 'cpus', type: 'integer', min: 1, max: 4096, default: '1', description: 'CPUs', metavar: 'N', example: '8', directive: true },
  { key: 'memory', field: 'memory', prop: 'memoryMiB', type: 'size', unit: 'MiB', default: '1G', description: 'memory, e.g. 16G', metavar: 'SIZE', example: '16G', directive: true },
  { key: 'time', field: 'time', prop: 'timeSec', type: 'duration', unit: 's', default: "the queue's", description: 'time limit, as in Slurm: 30 (a bare number is minutes), 45:00, 1:30:00, 2-12:00 (days-hours:min), or 90s, 30m, 2h', metavar: 'DURATION', example: '2h', directive: true },
  { key: 'queue', field: 'queue', prop: 'queue', type: 'enum', values: QUEUES, default: 'online', description: 'online (interactive, first) or offline (batch)', metavar: 'Q', example: 'offline', directive: true },
  { key: 'image', field: 'image', prop: 'image', type: 'image', default: "the broker's", description: 'container image (for container hosts)', metavar: 'IMG', example: 'python:3.12', directive: true },
  { key: 'restarts', field: 'restarts', prop: 'restarts', type: 'integer', min: 0, max: MAX_RESTARTS, default: "the queue's (usually 0)", description: 'restart it up to N times after a fault that is not its own (host lost, GPU fault, container gone, preempted, node failure)', metavar: 'N', example: '3', directive: true },
  { key: 'restart-on-exit', field: 'restartOnExit', prop: 'restartOnExit', type: 'integer-list', min: 1, max: 255, default: 'none', description: 'also restart it when it exits with one of these codes, e.g. 75,143 (counts as a restart)', metavar: 'C,C', example: '75,143', directive: true },
  { key: 'checkpoint-signal', field: 'checkpointSignal', prop: 'checkpointSignal', type: 'enum', values: CHECKPOINT_SIGNALS, default: 'none (the job cannot be moved)', description: 'the job checkpoints on this signal (SIGUSR1 usually): it writes its state to the folder GPURUN_CHECKPOINT_DIR names and exits 85, so it can be moved to another host and resumed', metavar: 'SIG', example: 'SIGUSR1', directive: true },
  { key: 'backend', field: 'backend', prop: 'backend', type: 'name', default: "the broker's", description: 'where it runs: "hosts" (the host pool) or a Slurm cluster\'s name', metavar: 'NAME', example: 'hosts', directive: true },
  { key: 'name', field: 'name', prop: 'name', type: 'name', default: "the script's name", description: 'label shown in lists', metavar: 'NAME', example: 'train', directive: false },
];

/** The options a `# gpurun:` line may set. */
export const DIRECTIVE_OPTIONS: readonly JobOption[] = JOB_OPTIONS.filter((o) => o.directive);

const BY_KEY = new Map(JOB_OPTIONS.map((o) => [o.key, o]));
const BY_FIELD = new Map(JOB_OPTIONS.map((o) => [o.field, o]));

export function optionByKey(key: string): JobOption | undefined {
  return BY_KEY.get(key);
}

export function optionByField(field: string): JobOption | undefined {
  return BY_FIELD.get(field as JobOption['field']);
}

export type OptionValue = number | string | number[];

/** The valid values in words: "from 0 to 1024", "one of online, offline"; undefined when there is no short answer. */
export function validRange(o: JobOption): string | undefined {
  if (o.type === 'integer') return `a whole number from ${o.min} to ${o.max}`;
  if (o.type === 'integer-list') return `exit codes from ${o.min} to ${o.max}, comma-separated`;
  if (o.type === 'enum') return `one of ${o.values!.join(', ')}`;
  if (o.type === 'size') return 'a size such as 512M or 16G';
  if (o.type === 'duration') return 'a duration such as 90s, 30m, 2h or 1:30:00';
  return undefined;
}

function int(o: JobOption, text: string): Parsed<number> {
  if (!/^\d+$/.test(text)) return { error: `must be a whole number, got "${text}"` };
  const n = Number(text);
  if (n < o.min!) return { error: `must be at least ${o.min}` };
  if (n > o.max!) return { error: `must be at most ${o.max}` };
  return { value: n };
}

/**
 * Parses the text form of an option (a directive value, a flag's argument). Messages leave out the option's name:
 * callers prefix it as their surface shows it (`gpus: …` in a directive, `--gpus …` on the command line).
 */
export function parseOptionText(o: JobOption, text: string): Parsed<OptionValue> {
  switch (o.type) {
    case 'integer':
      return int(o, text);
    case 'integer-list': {
      const parts = text.split(',');
      if (parts.length > MAX_EXIT_CODES || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) >= o.min! && Number(p) <= o.max!)) {
        return { error: `must be exit codes from ${o.min} to ${o.max} separated by commas, e.g. ${o.example}; got "${text}"` };
      }
      return { value: [...new Set(parts.map(Number))] };
    }
    case 'name':
      if (o.field === 'gpuType' && !GPU_NAME.test(text)) return { error: `must be a GPU name such as A100 or L4, got "${text}"` };
      if (o.field === 'backend' && !BACKEND_NAME.test(text)) return { error: `must be the name of a backend: "hosts" or a cluster, got "${text}"` };
      if (o.field === 'name' && (text.length === 0 || text.length > 128 || /[\0-\x1f]/.test(text))) return { error: 'must be 1 to 128 printable characters' };
      return { value: text };
    case 'size': {
      const m = parseMemory(text);
      return typeof m === 'string' ? { error: m } : { value: m };
    }
    case 'duration': {
      const t = parseDuration(text);
      return typeof t === 'string' ? { error: t } : { value: t };
    }
    case 'enum':
      return o.values!.includes(text) ? { value: text } : { error: `must be one of ${o.values!.join(', ')}, got "${text}"` };
    case 'image':
      return IMAGE_REF.test(text) ? { value: text } : { error: `must be an image reference such as python:3.12, got "${text}"` };
  }
}

/**
 * Checks the value of an API field (JSON: numbers stay numbers; sizes and durations may be text). Messages leave out
 * the field name, as parseOptionText's.
 */
export function parseOptionJson(o: JobOption, v: unknown): Parsed<OptionValue> {
  switch (o.type) {
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v) && v >= o.min! && v <= o.max! ? { value: v } : { error: `must be a whole number from ${o.min} to ${o.max}` };
    case 'integer-list':
      if (!Array.isArray(v) || v.length > MAX_EXIT_CODES || v.some((c) => typeof c !== 'number' || !Number.isInteger(c) || c < o.min! || c > o.max!)) return { error: `must be a list of exit codes from ${o.min} to ${o.max}` };
      return { value: [...new Set(v as number[])] };
    case 'name':
    case 'image':
    case 'enum': {
      if (typeof v === 'string') {
        const r = parseOptionText(o, v);
        if ('value' in r) return r;
      }
      if (o.field === 'gpuType') return { error: 'must be a GPU name such as A100 or L4' };
      if (o.field === 'image') return { error: 'must be an image reference such as python:3.12, starting with a letter or digit' };
      if (o.field === 'backend') return { error: 'must be the name of a backend: "hosts" or a cluster' };
      if (o.type === 'enum') return { error: `must be one of ${o.values!.join(', ')}` };
      return { error: 'must be 1 to 128 printable characters' };
    }
    case 'size': {
      const m = typeof v === 'string' || typeof v === 'number' ? parseMemory(v) : 'must be a size such as "16G"';
      return typeof m === 'string' ? { error: m } : { value: m };
    }
    case 'duration': {
      const t = typeof v === 'string' || typeof v === 'number' ? parseDuration(v) : 'must be a duration such as "2h"';
      return typeof t === 'string' ? { error: t } : { value: t };
    }
  }
}

/** A parsed value in its text form again (`memoryMiB` 16384 → "16G", `restartOnExit` [75, 143] → "75,143"). */
export function formatOptionValue(o: JobOption, v: OptionValue): string {
  if (o.type === 'size') return formatMemory(v as number);
  if (o.type === 'duration') return v === 0 ? '0' : formatDuration(v as number);
  if (Array.isArray(v)) return v.join(',');
  return String(v);
}

/** The options part of `gpurun run --help`: one aligned line per option, with its default. */
export function optionsHelp(width = 24): string {
  return JOB_OPTIONS.map((o) => {
    const left = `  --${o.key} ${o.metavar}`;
    return `${left.padEnd(width - 1)} ${o.description} (default: ${o.default})`;
  }).join('\n');
}

/** The closest of `candidates` to `word` (case-insensitive), if it is close enough to be a likely typo. */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestD = Infinity;
  let bestPrefix = -1;
  for (const c of candidates) {
    const lc = c.toLowerCase();
    const dist = lc === w ? 0 : lc.startsWith(w) || w.startsWith(lc) ? 1 : editDistance(w, lc);
    // Ties go to the candidate that starts like the word (a typo is more often late in a word than early).
    let prefix = 0;
    while (prefix < w.length && w[prefix] === lc[prefix]) prefix++;
    if (dist < bestD || (dist === bestD && prefix > bestPrefix)) [best, bestD, bestPrefix] = [c, dist, prefix];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(w.length / 3)) ? best : undefined;
}
