/**
 * Validation of `POST /v1/jobs` bodies. Pure. Anything wrong is an E_BAD_REQUEST naming the field; nothing is stored.
 */
import { GpurunError } from '../protocol/errors.ts';
import { QUEUES, type Queue, type Resources } from '../protocol/jobs.ts';
import { formatDuration, parseDuration, parseMemory } from './units.ts';
import { MAX_RESTARTS } from './restartPolicy.ts';
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
  /** As asked (Slurm backend, issue 5); the broker checks that it exists and picks the default. */
  backend?: string;
  /** Set when the submitting client serves the workspace itself. */
  workspaceFrom?: 'client';
  /** As asked; absent = the queue's default. */
  restarts?: number;
  restartOnExit?: number[];
}

const FIELDS = ['command', 'workspace', 'gpus', 'gpuType', 'cpus', 'memory', 'time', 'queue', 'image', 'env', 'name', 'backend', 'workspaceFrom', 'restarts', 'restartOnExit'];
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_ARGS = 4096;
const MAX_ARG_BYTES = 128 * 1024;

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

  const gpus = b.gpus === undefined ? d.gpus : b.gpus;
  if (typeof gpus !== 'number' || !Number.isInteger(gpus) || gpus < 0 || gpus > 1024) bad('gpus', 'must be a whole number from 0 to 1024');
  let gpuType: string | undefined;
  if (b.gpuType !== undefined && b.gpuType !== '') {
    if (typeof b.gpuType !== 'string' || !/^[\w.-]{1,64}$/.test(b.gpuType)) bad('gpuType', 'must be a GPU name such as A100 or L4');
    gpuType = b.gpuType;
  }
  const cpus = b.cpus === undefined ? d.cpus : b.cpus;
  if (typeof cpus !== 'number' || !Number.isInteger(cpus) || cpus < 1 || cpus > 4096) bad('cpus', 'must be a whole number from 1 to 4096');
  let memoryMiB = d.memoryMiB;
  if (b.memory !== undefined) {
    const m = typeof b.memory === 'string' || typeof b.memory === 'number' ? parseMemory(b.memory) : 'must be a size such as "16G"';
    if (typeof m === 'string') bad('memory', m);
    memoryMiB = m;
  }

  const queue = b.queue === undefined ? 'online' : b.queue;
  if (typeof queue !== 'string' || !(QUEUES as readonly string[]).includes(queue)) bad('queue', `must be one of ${QUEUES.join(', ')}`);
  const q = d.queues[queue as Queue];
  let timeLimitSec = q.defaultTimeSec;
  if (b.time !== undefined) {
    const t = typeof b.time === 'string' || typeof b.time === 'number' ? parseDuration(b.time) : 'must be a duration such as "2h"';
    if (typeof t === 'string') bad('time', t);
    timeLimitSec = t;
  }
  if (q.maxTimeSec > 0 && (timeLimitSec === 0 || timeLimitSec > q.maxTimeSec)) {
    bad('time', `the ${queue} queue allows at most ${formatDuration(q.maxTimeSec)}${timeLimitSec ? `, asked for ${formatDuration(timeLimitSec)}` : ' and needs a time limit'}`, `Pass --time ${formatDuration(q.maxTimeSec)} or less.`);
  }

  let image = d.image;
  if (b.image !== undefined) {
    if (!validImage(b.image)) bad('image', 'must be an image reference such as python:3.12 (letters, digits and . _ - / : @, starting with a letter or digit)');
    image = b.image;
  }

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

  let name = defaultName(cmd as string[]);
  if (b.name !== undefined) {
    if (typeof b.name !== 'string' || b.name.length === 0 || b.name.length > 128 || /[\0-\x1f]/.test(b.name)) bad('name', 'must be 1 to 128 printable characters');
    name = b.name;
  }

  // Slurm backend (issue 5).
  if (b.backend !== undefined && (typeof b.backend !== 'string' || !/^[A-Za-z0-9][\w.-]{0,63}$/.test(b.backend))) bad('backend', 'must be the name of a backend: "hosts" or a cluster');
  const backend = b.backend as string | undefined;

  if (b.workspaceFrom !== undefined && b.workspaceFrom !== 'broker' && b.workspaceFrom !== 'client') bad('workspaceFrom', 'must be "broker" or "client"');
  const fromClient = b.workspaceFrom === 'client';

  if (b.restarts !== undefined && (typeof b.restarts !== 'number' || !Number.isInteger(b.restarts) || b.restarts < 0 || b.restarts > MAX_RESTARTS)) {
    bad('restarts', `must be a whole number from 0 to ${MAX_RESTARTS}`);
  }
  let restartOnExit: number[] | undefined;
  if (b.restartOnExit !== undefined) {
    const r = b.restartOnExit;
    if (!Array.isArray(r) || r.length > 32 || !r.every((c) => typeof c === 'number' && Number.isInteger(c) && c >= 1 && c <= 255)) {
      bad('restartOnExit', 'must be a list of exit codes from 1 to 255', 'e.g. --restart-on-exit 75,143');
    }
    restartOnExit = [...new Set(r as number[])];
  }

  const resources: Resources = { gpus, cpus, memoryMiB, timeLimitSec, ...(gpuType ? { gpuType } : {}) };
  return { command: cmd as string[], workspace: b.workspace, name, resources, queue: queue as Queue, ...(image ? { image } : {}), env, ...(backend ? { backend } : {}), ...(fromClient ? { workspaceFrom: 'client' as const } : {}), ...(b.restarts !== undefined ? { restarts: b.restarts as number } : {}), ...(restartOnExit?.length ? { restartOnExit } : {}) };
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
