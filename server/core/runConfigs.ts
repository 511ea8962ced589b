/**
 * Named run configurations of a workspace: a `gpurun.json` at its top,
 *   { "configs": { "train": { "command": ["python3", "train.py"], "gpus": 2, "time": "2h", "env": { "SEED": "1" } } } }
 * Each config holds fields of a job request (see SubmitRequest) except the workspace. `gpurun run --config NAME` and
 * the editor's Run on GPU… use them; options and a command given there win. Pure: the caller reads the file.
 */
import type { SubmitRequest } from '../protocol/jobs.ts';

export const RUN_CONFIG_FILE = 'gpurun.json';

/** A saved job: the request fields it sets (the command may be left for the caller to give). */
export type RunConfig = Omit<SubmitRequest, 'workspace' | 'command' | 'workspaceFrom'> & { command?: string[] };

const FIELDS: Record<string, 'string' | 'number' | 'size' | 'argv' | 'env'> = {
  command: 'argv', gpus: 'number', gpuType: 'string', cpus: 'number', memory: 'size', time: 'size', queue: 'string', image: 'string', env: 'env', name: 'string', backend: 'string',
};

/** The configs of a gpurun.json text, or the first thing wrong with it (the broker validates values at submit). */
export function parseRunConfigs(text: string): Record<string, RunConfig> | string {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return `not JSON: ${(e as Error).message}`;
  }
  const configs = (doc as { configs?: unknown })?.configs;
  if (typeof doc !== 'object' || doc === null || typeof configs !== 'object' || configs === null || Array.isArray(configs)) return 'expected { "configs": { "NAME": { … }, … } }';
  const out: Record<string, RunConfig> = {};
  for (const [name, c] of Object.entries(configs)) {
    if (!/^[\w.-]{1,64}$/.test(name)) return `configs: "${name}" is not a config name (letters, digits, . _ -)`;
    if (typeof c !== 'object' || c === null || Array.isArray(c)) return `configs.${name}: must be an object of job settings`;
    for (const [k, v] of Object.entries(c)) {
      const kind = FIELDS[k];
      if (!kind) return `configs.${name}.${k}: unknown setting; known: ${Object.keys(FIELDS).join(', ')}`;
      const ok =
        kind === 'string' ? typeof v === 'string' :
        kind === 'number' ? typeof v === 'number' && Number.isInteger(v) && v >= 0 :
        kind === 'size' ? typeof v === 'string' || typeof v === 'number' :
        kind === 'argv' ? Array.isArray(v) && v.length > 0 && v.every((a) => typeof a === 'string') :
        typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
      if (!ok) return `configs.${name}.${k}: must be ${{ string: 'a string', number: 'a whole number', size: 'a string such as "2h" or "16G"', argv: 'a non-empty array of strings (argv)', env: 'an object of NAME: "value" strings' }[kind]}`;
    }
    out[name] = c as RunConfig;
  }
  return out;
}
