/** The lines of the request editor (Run on GPU…'s last step, Rerun with Changes): how each shows, what a typed value means. Pure. */
import { formatDuration, formatMemory, parseDuration, parseMemory } from '../../server/protocol/directives.ts';
import { QUEUES, type SubmitRequest } from '../../server/protocol/jobs.ts';
import { parseEnvPairs, splitCommandLine } from './runRequest.ts';
import { displayCommand } from './format.ts';

export type EditField = 'command' | 'gpus' | 'queue' | 'time' | 'memory' | 'cpus' | 'image' | 'env';

export const DEFAULT = "the broker's default";

const LABELS: Record<EditField, string> = { command: 'Command', gpus: 'GPUs', queue: 'Queue', time: 'Time', memory: 'Memory', cpus: 'CPUs', image: 'Image', env: 'Env' };

/** A field's line in the request editor: `CPUs: 4`. */
export function fieldLine(req: SubmitRequest, f: EditField): string {
  return `${LABELS[f]}: ${show(req, f)}`;
}

export function show(req: SubmitRequest, f: EditField): string {
  switch (f) {
    case 'command': return displayCommand(req.command);
    case 'gpus': return req.gpus === undefined ? DEFAULT : `${req.gpus}${req.gpuType ? ` × ${req.gpuType}` : ''}`;
    case 'queue': return req.queue ?? 'online';
    case 'time': return req.time === undefined ? "the queue's default" : typeof req.time === 'number' ? formatDuration(req.time) : req.time;
    case 'memory': return req.memory === undefined ? DEFAULT : typeof req.memory === 'number' ? formatMemory(req.memory) : req.memory;
    case 'cpus': return req.cpus === undefined ? DEFAULT : String(req.cpus);
    case 'image': return req.image ?? DEFAULT;
    case 'env': return req.env && Object.keys(req.env).length ? Object.entries(req.env).map(([k, v]) => `${k}=${v}`).join(' ') : 'none';
  }
}

/** What a typed value means for a field: the new request, or why it is not a value. Pure. */
export function setField(req: SubmitRequest, f: EditField, text: string): SubmitRequest | string {
  const t = text.trim();
  const r: SubmitRequest = { ...req };
  const clear = (k: keyof SubmitRequest) => {
    delete r[k];
    return r;
  };
  switch (f) {
    case 'command': {
      const argv = splitCommandLine(t);
      if (typeof argv === 'string') return argv;
      if (!argv.length) return 'Type a command';
      return { ...r, command: argv };
    }
    case 'gpus': {
      if (!t) return clear('gpus'), clear('gpuType');
      const m = /^(\d+)(?:\s*[x×]\s*([\w.-]+))?$/.exec(t);
      if (!m) return 'a number of GPUs, optionally with a type: 2, 2×A100';
      r.gpus = Number(m[1]);
      if (m[2]) r.gpuType = m[2];
      else delete r.gpuType;
      return r;
    }
    case 'queue':
      if (!t) return clear('queue');
      return (QUEUES as readonly string[]).includes(t) ? { ...r, queue: t as SubmitRequest['queue'] } : `one of ${QUEUES.join(', ')}`;
    case 'time':
      if (!t) return clear('time');
      return typeof parseDuration(t) === 'string' ? (parseDuration(t) as string) : { ...r, time: t };
    case 'memory':
      if (!t) return clear('memory');
      return typeof parseMemory(t) === 'string' ? (parseMemory(t) as string) : { ...r, memory: t };
    case 'cpus':
      if (!t) return clear('cpus');
      return /^[1-9]\d*$/.test(t) ? { ...r, cpus: Number(t) } : 'a whole number of CPUs, 1 or more';
    case 'image':
      if (!t) return clear('image');
      return /^[\w.\-/:@]{1,256}$/.test(t) ? { ...r, image: t } : 'an image reference such as python:3.12';
    case 'env': {
      if (!t) return clear('env');
      const env = parseEnvPairs(t);
      return typeof env === 'string' ? env : { ...r, env };
    }
  }
}

export const PROMPTS: Record<EditField, string> = {
  command: 'the command (no shell: quote words with spaces)',
  gpus: 'GPUs: 0, 1, 2×A100; empty: the default',
  queue: 'online or offline',
  time: 'e.g. 30m, 2h, 1:30:00, 2-12:00; a bare number is minutes (Slurm); empty: the queue\'s default',
  memory: 'e.g. 16G, 512M; empty: the default',
  cpus: 'a whole number; empty: the default',
  image: 'a container image present on the hosts, e.g. local/python:3; empty: the default',
  env: 'NAME=VALUE pairs separated by spaces (quote values with spaces); empty: none',
};

