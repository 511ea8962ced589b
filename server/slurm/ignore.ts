/**
 * `.gpurun-ignore`: which workspace files are not staged onto a cluster. Pure. A subset of .gitignore: one pattern
 * per line, `#` comments, `*` (not across `/`), `?`, `**` (any folders), a trailing `/` for folders only, a pattern
 * holding a `/` anchored at the workspace root, one without matching a name at any depth. `.git` is always ignored.
 * Negation (`!pattern`) is not supported and is reported.
 */

export interface IgnoreRules {
  /** `rel` is the path from the workspace root with `/` separators. */
  ignores(rel: string, isDir: boolean): boolean;
  /** Lines that were not understood, with their 1-based number. */
  errors: string[];
}

function globToRegExp(glob: string): string {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      // "**/" = any folders (none included); a trailing "**" = anything below.
      if (glob[i + 2] === '/') {
        re += '(?:.*/)?';
        i += 2;
      } else {
        re += '.*';
        i += 1;
      }
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return re;
}

export function compileIgnore(text: string): IgnoreRules {
  const rules: Array<{ re: RegExp; dirOnly: boolean }> = [{ re: /^(?:.*\/)?\.git$/, dirOnly: false }];
  const errors: string[] = [];
  text.split('\n').forEach((raw, i) => {
    let line = raw.replace(/\r$/, '');
    if (!line.trim() || line.startsWith('#')) return;
    line = line.trimEnd();
    if (line.startsWith('!')) {
      errors.push(`line ${i + 1}: negation ("${line}") is not supported; the pattern is left out`);
      return;
    }
    const dirOnly = line.endsWith('/');
    if (dirOnly) line = line.slice(0, -1);
    const anchored = line.includes('/');
    if (line.startsWith('/')) line = line.slice(1);
    const body = globToRegExp(line);
    rules.push({ re: new RegExp(anchored ? `^${body}$` : `^(?:.*/)?${body}$`), dirOnly });
  });
  return {
    errors,
    ignores: (rel, isDir) => rules.some((r) => (!r.dirOnly || isDir) && r.re.test(rel)),
  };
}
