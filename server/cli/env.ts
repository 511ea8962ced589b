/** The variables `gpurun run` sets in a job: `--env-file FILE` (in order), then `--env NAME=VALUE` / `--env NAME`. */
import { readFileSync } from 'node:fs';
import { GpurunError } from '../protocol/errors.ts';
import { parseEnvFile } from '../core/dotenv.ts';
import { usage } from './args.ts';

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function jobEnv(files: string[], pairs: string[], shell: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch (e) {
      throw new GpurunError('E_BAD_REQUEST', `cannot read the env file ${f}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint: 'Pass --env-file the path of a .env file (NAME=VALUE lines).' });
    }
    const r = parseEnvFile(text);
    if (r.errors.length) {
      const e = r.errors[0];
      throw new GpurunError('E_BAD_REQUEST', `${f}:${e.line}: ${e.message}`, { hint: 'An env file has one NAME=VALUE per line; # starts a comment (see gpurun run --help).' });
    }
    Object.assign(env, r.env);
  }
  for (const kv of pairs) {
    const eq = kv.indexOf('=');
    const name = eq < 0 ? kv : kv.slice(0, eq);
    if (!NAME.test(name)) throw usage('run', `--env needs NAME=VALUE or NAME, got "${kv}"`);
    if (eq >= 0) env[name] = kv.slice(eq + 1);
    else if (shell[name] !== undefined) env[name] = shell[name]!;
    else throw usage('run', `--env ${name}: ${name} is not set in this shell`);
  }
  return env;
}
