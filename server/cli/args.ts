/** A small argv parser: `--flag`, `--opt value`, `--opt=value`, repeated options, and `--` ending options. Pure. */
import { GpurunError } from '../protocol/errors.ts';
import { closest } from './suggest.ts';

export interface OptSpec {
  /** Options that take a value; the rest are flags. */
  values: string[];
  flags: string[];
  /** Options that may be given more than once (values collected in order). */
  repeat?: string[];
  /** Short aliases, e.g. { f: 'follow' }. */
  short?: Record<string, string>;
  /** Stop at the first positional: everything from there on is the command (used by `run`). */
  stopAtPositional?: boolean;
}

export interface Parsed {
  opts: Record<string, string | boolean | string[]>;
  rest: string[];
}

export function parseArgs(argv: string[], spec: OptSpec, cmd: string): Parsed {
  const opts: Parsed['opts'] = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      rest.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('-') && a !== '-') {
      let name: string;
      let inline: string | undefined;
      if (a.startsWith('--')) {
        const eq = a.indexOf('=');
        name = eq > 0 ? a.slice(2, eq) : a.slice(2);
        inline = eq > 0 ? a.slice(eq + 1) : undefined;
      } else {
        name = spec.short?.[a.slice(1)] ?? '';
        if (!name) throw unknownOption(cmd, a, spec);
      }
      if (spec.flags.includes(name)) {
        if (inline !== undefined) throw usage(cmd, `--${name} takes no value`);
        opts[name] = true;
      } else if (spec.values.includes(name)) {
        const v = inline ?? argv[++i];
        if (v === undefined) throw usage(cmd, `--${name} needs a value`);
        if (spec.repeat?.includes(name)) opts[name] = [...((opts[name] as string[]) ?? []), v];
        else opts[name] = v;
      } else throw unknownOption(cmd, `--${name}`, spec);
      continue;
    }
    if (spec.stopAtPositional) {
      // `--time 5 minutes -- echo hi`: a word before `--` is not the command when a `--` follows.
      const dd = argv.indexOf('--', i);
      if (dd > i) {
        const stray = argv.slice(i, dd);
        throw new GpurunError('E_BAD_REQUEST', `unexpected ${stray.length === 1 ? 'word' : 'words'} before "--": ${stray.map((w) => JSON.stringify(w)).join(' ')}`, {
          hint: `Options go before "--" and the command after it: gpurun ${cmd} [options] -- CMD [ARGS...]`,
        });
      }
      rest.push(...argv.slice(i));
      break;
    }
    rest.push(a);
  }
  return { opts, rest };
}

function unknownOption(cmd: string, given: string, spec: OptSpec): GpurunError {
  const known = [...spec.values, ...spec.flags].map((n) => `--${n}`);
  const near = closest(given.split('=')[0], known);
  return usage(cmd, `unknown option ${given}${near ? ` (did you mean ${near}?)` : ''}`);
}

export function usage(cmd: string, msg: string): GpurunError {
  return new GpurunError('E_BAD_REQUEST', msg, { hint: `See: gpurun ${cmd} --help` });
}
