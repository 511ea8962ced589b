/** `gpurun run --config NAME`: a named run configuration from the workspace's gpurun.json. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GpurunError } from '../protocol/errors.ts';
import { parseRunConfigs, RUN_CONFIG_FILE, type RunConfig } from '../core/runConfigs.ts';
import { closest } from './suggest.ts';

export function loadRunConfig(workspace: string, name: string): RunConfig {
  const path = join(workspace, RUN_CONFIG_FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new GpurunError('E_BAD_REQUEST', `--config ${name}: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, {
      hint: `Run configurations live in ${RUN_CONFIG_FILE} at the top of the workspace: { "configs": { "${name}": { "command": ["python3", "train.py"], "gpus": 1 } } }`,
    });
  }
  const configs = parseRunConfigs(text);
  if (typeof configs === 'string') throw new GpurunError('E_BAD_REQUEST', `${path}: ${configs}`, { hint: 'See the README, "Run configurations".' });
  const c = configs[name];
  if (!c) {
    const names = Object.keys(configs);
    const near = closest(name, names);
    throw new GpurunError('E_BAD_REQUEST', `${path} has no config "${name}"${near ? ` (did you mean "${near}"?)` : ''}`, { hint: names.length ? `Its configs: ${names.join(', ')}.` : 'It has no configs yet.' });
  }
  return c;
}
