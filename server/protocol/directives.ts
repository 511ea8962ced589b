/**
 * The `# gpurun:` script directive parser and the size/duration units, re-exported for the VS Code extension (which
 * imports nothing from server/ but protocol/). Both are pure; the implementation stays in server/core.
 */
export { parseDirectives, applyDirective, DIRECTIVE_SCAN_LINES, type Directive, type DirectiveError, type DirectiveResult } from '../core/directives.ts';
export { parseDuration, parseMemory, formatDuration, formatMemory } from '../core/units.ts';
