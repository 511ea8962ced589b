/**
 * Where the run buttons go in a Python file: over the first `# gpurun:` directive line if there is one, else over
 * the `if __name__ == "__main__":` guard. Pure.
 */
import { parseDirectives, type DirectiveError, type Directive } from '../../server/protocol/directives.ts';

export interface EntryPoint {
  /** 0-based line the lens sits on. */
  line: number;
  /** Why this file is runnable. */
  kind: 'directive' | 'main-guard';
  directive: Directive;
  /** Directive errors (line/column 0-based); a file with errors still gets its lens, the run will refuse. */
  errors: DirectiveError[];
}

const MAIN_GUARD = /^if\s+__name__\s*==\s*(['"])__main__\1\s*:/;

/** The entry point of a Python source, or undefined when it is a module without one. */
export function findEntryPoint(source: string): EntryPoint | undefined {
  const parsed = parseDirectives(source);
  if (parsed.lines.length) return { line: parsed.lines[0], kind: 'directive', directive: parsed.directive, errors: parsed.errors };
  const lines = source.split(/\r?\n/);
  const guard = lines.findIndex((l) => MAIN_GUARD.test(l));
  if (guard >= 0) return { line: guard, kind: 'main-guard', directive: {}, errors: [] };
  return undefined;
}
