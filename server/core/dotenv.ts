/**
 * The `--env-file` format (a `.env` file), parsed without expanding anything. Pure.
 * - one `NAME=VALUE` per line; an optional `export ` before NAME;
 * - blank lines and lines starting with `#` are skipped;
 * - VALUE is taken as written up to the end of the line, with surrounding spaces removed; a value in single quotes
 *   is literal, one in double quotes understands `\n`, `\t`, `\"` and `\\`; `$VAR` is never expanded.
 */
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface EnvFileResult {
  env: Record<string, string>;
  /** 1-based line number and what is wrong; nothing of a file with errors should be used. */
  errors: Array<{ line: number; message: string }>;
}

export function parseEnvFile(text: string): EnvFileResult {
  const env: Record<string, string> = {};
  const errors: EnvFileResult['errors'] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const body = line.startsWith('export ') ? line.slice(7).trimStart() : line;
    const eq = body.indexOf('=');
    if (eq <= 0) return void errors.push({ line: i + 1, message: 'expected NAME=VALUE' });
    const name = body.slice(0, eq).trim();
    if (!NAME.test(name)) return void errors.push({ line: i + 1, message: `"${name}" is not a variable name (letters, digits, _; not starting with a digit)` });
    let value = body.slice(eq + 1).trim();
    const q = value[0];
    if (q === '"' || q === "'") {
      if (value.length < 2 || value[value.length - 1] !== q) return void errors.push({ line: i + 1, message: `unclosed ${q} quote` });
      value = value.slice(1, -1);
      if (q === '"') value = value.replace(/\\([nt"\\])/g, (_, c: string) => ({ n: '\n', t: '\t', '"': '"', '\\': '\\' })[c]!);
    }
    env[name] = value;
  });
  return { env, errors };
}
