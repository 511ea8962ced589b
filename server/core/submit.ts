/**
 * Validation of `POST /v1/jobs` bodies. Pure. Anything wrong is an E_BAD_REQUEST naming the field; nothing is stored.
 */
import { GpurunError } from '../protocol/errors.ts';
import { QUEUES, type Queue, type Resources } from '../protocol/jobs.ts';
import { JOB_OPTIONS, optionByField, parseOptionJson, type JobOption, type OptionValue } from './jobOptions.ts';
import { formatDuration } from './units.ts';
import { reservedEnvName } from './jobEnv.ts';

export interface SubmitDefaults {
  gpus: number;
  cpus: number;
  memoryMiB: number;
  image?: string;
  queues: Record<Queue, { maxTimeSec: number; defaultTimeSec: number }>;
}

export interface ValidSubmit {
  command: string[];
  workspace: string;
  name: string;
  resources: Resources;
  queue: Queue;
  image?: string;
  env: Record<string, string>;
  /** As asked (the host pool or a Slurm cluster); the broker checks that it exists and picks the default. */
  backend?: string;
  /** Set when the submitting client serves the workspace itself. */
  workspaceFrom?: 'client';
  /** As asked; absent = the queue's default. */
  restarts?: number;
  restartOnExit?: number[];
}

/** The job options (jobOptions.ts) and the fields that are not options of a job's resources. */
const FIELDS = ['command', 'workspace', ...JOB_OPTIONS.map((o) => o.field), 'env', 'workspaceFrom'];
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_ARGS = 4096;
const MAX_ARG_BYTES = 128 * 1024;

/** The field's value checked by the schema, or undefined when the body leaves it out. */
function option(b: Record<string, unknown>, field: JobOption['field']): OptionValue | undefined {
  if (b[field] === undefined) return undefined;
  const r = parseOptionJson(optionByField(field)!, b[field]);
  if ('error' in r) bad(field, r.error);
  return r.value;
}

function bad(field: string, message: string, hint?: string): never {
  throw new GpurunError('E_BAD_REQUEST', `${field}: ${message}`, hint ? { hint } : {});
}

export function validateSubmit(body: unknown, d: SubmitDefaults): ValidSubmit {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) bad('body', 'must be a JSON object');
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (!FIELDS.includes(k)) bad(k, `unknown field; known fields: ${FIELDS.join(', ')}`);

  const cmd = b.command;
  if (!Array.isArray(cmd) || cmd.length === 0) bad('command', 'must be a non-empty array of strings (argv)', 'Put the command after "--": gpurun run -- python3 train.py');
  if (cmd.length > MAX_ARGS) bad('command', `has more than ${MAX_ARGS} arguments`);
  cmd.forEach((a, i) => {
    if (typeof a !== 'string') bad(`command[${i}]`, 'must be a string');
    if (a.includes('\0')) bad(`command[${i}]`, 'must not contain a NUL byte');
    if (Buffer.byteLength(a) > MAX_ARG_BYTES) bad(`command[${i}]`, `is longer than ${MAX_ARG_BYTES} bytes`);
  });
  if (cmd[0] === '') bad('command[0]', 'must name a program');

  if (typeof b.workspace !== 'string' || !b.workspace.startsWith('/') || b.workspace.includes('\0')) bad('workspace', 'must be an absolute path');

  const gpus = b.gpus === undefined ? d.gpus : (option(b, 'gpus') as number);
  const gpuType = b.gpuType === '' ? undefined : (option(b, 'gpuType') as string | undefined);
  const cpus = b.cpus === undefined ? d.cpus : (option(b, 'cpus') as number);
  const memoryMiB = (option(b, 'memory') as number | undefined) ?? d.memoryMiB;

  const queue = (option(b, 'queue') as Queue | undefined) ?? 'online';
  const q = d.queues[queue];
  const timeLimitSec = (option(b, 'time') as number | undefined) ?? q.defaultTimeSec;
  if (q.maxTimeSec > 0 && (timeLimitSec === 0 || timeLimitSec > q.maxTimeSec)) {
    bad('time', `the ${queue} queue allows at most ${formatDuration(q.maxTimeSec)}${timeLimitSec ? `, asked for ${formatDuration(timeLimitSec)}` : ' and needs a time limit'}`, timeHint(queue as Queue, timeLimitSec, d.queues));
  }

  const image = (option(b, 'image') as string | undefined) ?? d.image;
  const restarts = option(b, 'restarts') as number | undefined;
  const restartOnExit = option(b, 'restartOnExit') as number[] | undefined;

  const env: Record<string, string> = {};
  if (b.env !== undefined) {
    if (typeof b.env !== 'object' || b.env === null || Array.isArray(b.env)) bad('env', 'must be an object of NAME: value strings');
    for (const [k, v] of Object.entries(b.env)) {
      if (!ENV_NAME.test(k)) bad(`env.${k}`, 'is not a valid variable name (letters, digits, _; not starting with a digit)');
      if (reservedEnvName(k)) bad(`env.${k}`, 'is set by gpurun for every job (GPU visibility and GPURUN_* variables are the broker\'s)', 'Leave it out: the job sees exactly its GPUs in CUDA_VISIBLE_DEVICES, and GPURUN_GPUS holds the host\'s numbers.');
      if (typeof v !== 'string' || v.includes('\0')) bad(`env.${k}`, 'must be a string without NUL bytes');
      env[k] = v;
    }
  }

  // The job says it checkpoints on this signal; it reads the name back from its own environment (the broker's variable).
  const checkpointSignal = option(b, 'checkpointSignal') as string | undefined;
  if (checkpointSignal) env.GPURUN_CHECKPOINT_SIGNAL = checkpointSignal;

  const name = (option(b, 'name') as string | undefined) ?? defaultName(cmd as string[]);
  const backend = option(b, 'backend') as string | undefined;

  if (b.workspaceFrom !== undefined && b.workspaceFrom !== 'broker' && b.workspaceFrom !== 'client') bad('workspaceFrom', 'must be "broker" or "client"');
  const fromClient = b.workspaceFrom === 'client';

  const resources: Resources = { gpus, cpus, memoryMiB, timeLimitSec, ...(gpuType ? { gpuType } : {}) };
  return { command: cmd as string[], workspace: b.workspace, name, resources, queue, ...(image ? { image } : {}), env, ...(restarts !== undefined ? { restarts } : {}), ...(restartOnExit?.length ? { restartOnExit } : {}), ...(backend ? { backend } : {}), ...(fromClient ? { workspaceFrom: 'client' as const } : {}) };
}

/** Pass a shorter time, or (when another queue allows this much) name that queue and its limit. */
function timeHint(queue: Queue, asked: number, queues: SubmitDefaults['queues']): string {
  const max = queues[queue].maxTimeSec;
  const other = (QUEUES as readonly Queue[]).find((o) => o !== queue && (queues[o].maxTimeSec === 0 || (asked > 0 && queues[o].maxTimeSec >= asked)));
  const limit = other ? (queues[other].maxTimeSec ? `up to ${formatDuration(queues[other].maxTimeSec)}` : 'with no limit') : '';
  return `Pass --time ${formatDuration(max)} or less${other ? `, or --queue ${other} (it allows ${limit}; it runs when ${other === 'offline' ? 'online jobs leave room' : 'its turn comes'})` : ''}.`;
}

/**
 * Whether `image` is an image reference Docker cannot read as anything else: it starts with a letter or digit (so
 * never an option like `--privileged`) and has only the characters of `[registry[:port]/]name[:tag][@digest]`.
 */
export function validImage(image: unknown): image is string {
  return typeof image === 'string' && /^[A-Za-z0-9][\w.\-/:@]{0,255}$/.test(image);
}

/** The script a command runs (`python3 -u train.py` → "train.py"), else the program's base name. */
export function defaultName(command: string[]): string {
  const script = command.slice(1).find((a) => !a.startsWith('-') && /\.\w{1,4}$/.test(a));
  const pick = script ?? command[0];
  return pick.slice(pick.lastIndexOf('/') + 1).slice(0, 128) || 'job';
}
