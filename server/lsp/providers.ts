/**
 * The language features of `# gpurun:` lines: completion, hover, diagnostics, quick fixes and the run estimate.
 * Pure: each takes the document's text and the pool as last seen (or none) and returns LSP-shaped data; the server
 * (server.ts) only moves it over the connection. The schema's checks never depend on the pool; the pool's checks
 * use the last snapshot also while the broker is unreachable, so a dropped connection adds one warning and changes
 * nothing else.
 */
import type { CodeAction, CompletionItem, Diagnostic, Hover, Position, Range } from 'vscode-languageserver';
import { checkWord, directiveLines, directivePrefix, parseDirectives, type DirectiveLine, type DirectiveWord } from '../core/directives.ts';
import { DIRECTIVE_OPTIONS, didYouMean, parseOptionText, validRange, type JobOption } from '../core/jobOptions.ts';
import { formatDuration, formatMemory } from '../core/units.ts';
import type { PoolSnapshot } from '../protocol/pool.ts';
import { gpuMatches } from '../core/scheduler.ts';
import { askOf, estimate, fitSummary, fitsNow, gpuTypes, neverFits, queuedAhead, queueOf, type Ask } from './fit.ts';

/** The pool as the server last saw it. */
export interface PoolView {
  snapshot?: PoolSnapshot;
  /** Whether the broker answered the last time it was asked. */
  online: boolean;
  /** When the snapshot was taken (ms since the epoch, this machine's clock). */
  takenAt?: number;
  /** Why the broker did not answer, when it was not a network failure (e.g. the token was refused). */
  problem?: string;
}

/** Kinds of LSP enums, as numbers (the protocol's values), so this file needs no runtime import. */
const SEVERITY = { error: 1, warning: 2, information: 3, hint: 4 } as const;
const KIND = { property: 10, value: 12, enumMember: 20 } as const;

/** What a quick fix does: replace the diagnostic's range with `newText`. Travels in Diagnostic.data. */
export interface FixData {
  title: string;
  newText: string;
}

export const SOURCE = 'gpurun';

function range(line: number, start: number, end: number): Range {
  return { start: { line, character: start }, end: { line, character: end } };
}

function wordRange(w: DirectiveWord): Range {
  return range(w.line, w.column, w.column + w.text.length);
}

function valueRange(w: DirectiveWord): Range {
  return range(w.line, w.eq + 1, w.column + w.text.length);
}

function fmtTime(sec: number): string {
  return formatDuration(sec);
}

// ---- completion ------------------------------------------------------------------------------------------------

/** Completion at `pos`: keys on a `# gpurun:` line, or the values of the key before the `=`. */
export function completions(text: string, pos: Position, view: PoolView): CompletionItem[] {
  const lineText = lineAt(text, pos.line);
  const prefix = directivePrefix(lineText);
  if (prefix === undefined || pos.character < prefix) return [];
  let start = pos.character;
  while (start > prefix && !/\s/.test(lineText[start - 1])) start--;
  let end = pos.character;
  while (end < lineText.length && !/\s/.test(lineText[end])) end++;
  const word = lineText.slice(start, pos.character);
  const eq = word.indexOf('=');
  if (eq < 0) {
    const used = new Set(directiveLines(text).filter((l) => l.line === pos.line).flatMap((l) => l.words.map((w) => w.key)));
    return DIRECTIVE_OPTIONS.filter((o) => !used.has(o.key) || lineText.slice(start, end).startsWith(o.key)).map((o, i) => ({
      label: o.key,
      kind: KIND.property,
      detail: o.description,
      documentation: optionDoc(o),
      insertText: `${o.key}=`,
      sortText: String(i).padStart(2, '0'),
      textEdit: { range: range(pos.line, start, pos.character), newText: `${o.key}=` },
    }));
  }
  const key = word.slice(0, eq);
  const o = DIRECTIVE_OPTIONS.find((x) => x.key === key);
  if (!o) return [];
  const edit = range(pos.line, start + eq + 1, end);
  const ask = view.snapshot ? askOf(parseDirectives(text).directive, view.snapshot) : undefined;
  return valueItems(o, view.snapshot, ask).map((it, i) => ({ ...it, kind: it.kind ?? KIND.value, sortText: String(i).padStart(3, '0'), filterText: it.label, textEdit: { range: edit, newText: it.label } }));
}

function valueItems(o: JobOption, pool: PoolSnapshot | undefined, ask: Ask | undefined): CompletionItem[] {
  const plain = (values: string[], detail?: (v: string) => string | undefined): CompletionItem[] =>
    values.map((v) => {
      const d = detail?.(v);
      return { label: v, ...(d ? { labelDetails: { detail: ` — ${d}` }, detail: d } : {}) };
    });
  switch (o.key) {
    case 'gpu-type':
      if (!pool) return [];
      return gpuTypes(pool).map((t) => ({ label: t.type, labelDetails: { detail: ` — ${t.free} of ${t.total} free` }, detail: `${t.free} of ${t.total} free; up to ${t.largest} on one host`, documentation: t.names.join(', '), kind: KIND.enumMember }));
    case 'gpus': {
      if (!pool || !ask) return plain(['0', '1', '2', '4', '8']);
      const max = pool.hosts.reduce((m, h) => Math.max(m, h.gpus.filter((g) => !ask.gpuType || gpuMatches(g.name, ask.gpuType)).length), 0);
      return Array.from({ length: max + 1 }, (_, n) => String(n)).map((n) => {
        const hosts = fitsNow(pool, { ...ask, gpus: Number(n) });
        const d = hosts.length ? `fits now on ${hosts.join(', ')}` : 'fits, none free now';
        return { label: n, labelDetails: { detail: ` — ${d}` }, detail: d };
      });
    }
    case 'queue':
      return o.values!.map((q) => {
        const pq = pool ? queueOf(pool, q as 'online') : undefined;
        const cluster = ask?.cluster ? pool?.clusters.find((c) => c.name === ask.cluster) : undefined;
        const d = pq
          ? `${pq.maxTimeSec ? `max time ${fmtTime(pq.maxTimeSec)}` : 'no time cap'}${pq.defaultTimeSec ? `, default ${fmtTime(pq.defaultTimeSec)}` : ''}; ${pq.queued} queued${cluster ? `; Slurm partition ${cluster.partitions[q as 'online']}` : ''}`
          : undefined;
        return { label: q, kind: KIND.enumMember, ...(d ? { labelDetails: { detail: ` — ${d}` }, detail: d } : {}) };
      });
    case 'time': {
      const pq = pool && ask ? queueOf(pool, ask.queue) : undefined;
      const vals = ['30m', '1h', '2h', '8h', '1d'].filter((v) => !pq?.maxTimeSec || parsedNumber(o, v) <= pq.maxTimeSec);
      const out = plain(vals);
      if (pq?.maxTimeSec) out.unshift({ label: fmtTime(pq.maxTimeSec), labelDetails: { detail: ` — the ${pq.name} queue's maximum` }, detail: `the ${pq.name} queue's maximum` });
      return out;
    }
    case 'image':
      return plain(pool?.images ?? [], (img) => {
        const on = pool!.hosts.filter((h) => h.images?.includes(img)).map((h) => h.name);
        const dflt = img === pool!.defaultImage;
        return [dflt ? "the broker's default" : '', on.length ? `on ${on.join(', ')}` : ''].filter(Boolean).join('; ') || undefined;
      });
    case 'backend':
      if (!pool) return [];
      return pool.backends.map((b) => {
        const c = pool.clusters.find((x) => x.name === b);
        const d = c ? `Slurm cluster: partitions ${c.partitions.online} (online), ${c.partitions.offline} (offline); gres ${c.gres}` : `the host pool: ${pool.hosts.length} host${pool.hosts.length === 1 ? '' : 's'}`;
        return { label: b, kind: KIND.enumMember, labelDetails: { detail: ` — ${d}${b === pool.defaultBackend ? ' (default)' : ''}` }, detail: d };
      });
    case 'cpus': {
      const max = pool ? pool.hosts.reduce((m, h) => Math.max(m, h.cpus), 0) : 0;
      return plain(['1', '2', '4', '8', '16', '32', '64'].filter((v) => !max || Number(v) <= max));
    }
    case 'memory': {
      const max = pool ? pool.hosts.reduce((m, h) => Math.max(m, h.memoryMiB), 0) : 0;
      return plain(['1G', '4G', '8G', '16G', '32G', '64G', '128G'].filter((v) => !max || parsedNumber(o, v) <= max));
    }
    default:
      return plain([o.example]);
  }
}

/** The number a valid text form stands for (MiB, seconds); Infinity when it is not valid. */
function parsedNumber(o: JobOption, text: string): number {
  const r = parseOptionText(o, text);
  return 'value' in r && typeof r.value === 'number' ? r.value : Infinity;
}

function optionDoc(o: JobOption): { kind: 'markdown'; value: string } {
  const r = validRange(o);
  return { kind: 'markdown', value: `**${o.key}**: ${o.description}.${r ? `\n\nValid: ${r}.` : ''}\n\nDefault: ${o.default}. Example: \`${o.key}=${o.example}\`. CLI: \`--${o.key}\`; API field \`${o.field}\`.` };
}

// ---- hover -----------------------------------------------------------------------------------------------------

/** Hover on a key or value: what it means; and for the line as a whole, where the request fits now. */
export function hover(text: string, pos: Position, view: PoolView): Hover | null {
  const dl = directiveLines(text).find((l) => l.line === pos.line);
  if (!dl) return null;
  const w = dl.words.find((x) => pos.character >= x.column && pos.character <= x.column + x.text.length);
  const parts: string[] = [];
  if (w?.option) {
    const o = w.option;
    parts.push(optionDoc(o).value);
    if (w.value) {
      const r = parseOptionText(o, w.value);
      if ('value' in r && (o.type === 'size' || o.type === 'duration')) parts.push(`\`${w.value}\` = ${r.value as number} ${o.unit === 'MiB' ? 'MiB' : 'seconds'}${o.type === 'duration' && r.value === 0 ? ' (no limit)' : ''}`);
      if (o.key === 'gpu-type' && view.snapshot) {
        const hosts = view.snapshot.hosts.filter((h) => h.gpus.some((g) => gpuMatches(g.name, w.value)));
        parts.push(hosts.length ? `On ${hosts.map((h) => h.name).join(', ')}.` : 'No host has it.');
      }
    }
  }
  const line = lineSummary(text, view);
  if (line) parts.push(line);
  if (!parts.length) return null;
  return { contents: { kind: 'markdown', value: parts.join('\n\n---\n\n') }, ...(w ? { range: wordRange(w) } : {}) };
}

/** "fits now on gpu1, gpu4; 2 jobs queued ahead in offline; max time 7d", with the snapshot's age when offline. */
export function lineSummary(text: string, view: PoolView, now = Date.now()): string | undefined {
  if (!view.snapshot) return view.online ? undefined : 'The broker is unreachable and no pool was seen yet.';
  const ask = askOf(parseDirectives(text).directive, view.snapshot);
  const s = fitSummary(view.snapshot, ask, fmtTime);
  return view.online ? s : `${s} (pool as of ${age(now - (view.takenAt ?? now))} ago; the broker is unreachable)`;
}

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return formatDuration(s);
}

// ---- diagnostics -----------------------------------------------------------------------------------------------

/** Every diagnostic of the document: the schema's checks, then the pool's, then (offline) one warning. */
export function diagnostics(text: string, view: PoolView, now = Date.now()): Diagnostic[] {
  const lines = directiveLines(text);
  if (lines.length === 0) return [];
  const out: Diagnostic[] = [];
  let schemaErrors = 0;
  for (const dl of lines) {
    for (const w of dl.words) {
      const d = schemaDiagnostic(w);
      if (d) {
        out.push(d);
        if (d.severity === SEVERITY.error) schemaErrors++;
      }
    }
  }
  const pool = view.snapshot;
  if (pool && schemaErrors === 0) out.push(...poolDiagnostics(text, lines, pool));
  if (!view.online) {
    const first = lines[0];
    const why = view.problem ? `The broker refused the pool (${view.problem})` : 'The broker is unreachable';
    const msg = pool
      ? `${why}: pool checks use the snapshot of ${age(now - (view.takenAt ?? now))} ago.`
      : `${why} and no pool was seen yet: only the options themselves are checked.`;
    out.push({ range: range(first.line, 0, first.bodyColumn), severity: SEVERITY.warning, source: SOURCE, message: msg, code: 'offline' });
  }
  return out;
}

function fix(d: Omit<Diagnostic, 'source'>, f?: FixData): Diagnostic {
  return { ...d, source: SOURCE, ...(f ? { data: f } : {}) };
}

function schemaDiagnostic(w: DirectiveWord): Diagnostic | undefined {
  const message = checkWord(w);
  if (!message) return undefined;
  const base = { range: wordRange(w), severity: SEVERITY.error, code: 'option' };
  if (w.eq > w.column && !w.option) {
    const near = didYouMean(w.key, DIRECTIVE_OPTIONS.map((o) => o.key));
    if (near) return fix({ ...base, message: `unknown key "${w.key}"; did you mean "${near}"?` }, { title: `Change to ${near}=${w.value}`, newText: `${near}=${w.value}` });
    return fix({ ...base, message });
  }
  const o = w.option;
  if (!o || w.value === '') return fix({ ...base, message });
  const r = validRange(o);
  const full = r && !message.includes(r) && !/must be one of/.test(message) ? `${message}; valid: ${r}` : message;
  const nearest = nearestValue(o, w.value);
  return fix({ ...base, message: full }, nearest !== undefined ? { title: `Change to ${o.key}=${nearest}`, newText: `${o.key}=${nearest}` } : undefined);
}

/** The valid value closest to a bad one: a clamped number, the nearest enum value. */
function nearestValue(o: JobOption, text: string): string | undefined {
  if (o.type === 'integer' && /^\d+$/.test(text)) return String(Math.min(o.max!, Math.max(o.min!, Number(text))));
  if (o.type === 'enum') return didYouMean(text, o.values!);
  return undefined;
}

function poolDiagnostics(text: string, lines: DirectiveLine[], pool: PoolSnapshot): Diagnostic[] {
  const out: Diagnostic[] = [];
  const words = lines.flatMap((l) => l.words);
  // Later lines win for the same key, as in the parser.
  const last = (key: string) => [...words].reverse().find((w) => w.key === key);
  const ask = askOf(parseDirectives(text).directive, pool);
  const whole = range(lines[0].line, lines[0].bodyColumn, lineAt(text, lines[0].line).length);

  const typeWord = last('gpu-type');
  if (typeWord && !ask.cluster) {
    const types = gpuTypes(pool).map((t) => t.type);
    const exact = types.find((t) => t.toLowerCase() === typeWord.value.toLowerCase());
    if (exact && exact !== typeWord.value) {
      out.push(fix({ range: valueRange(typeWord), severity: SEVERITY.information, code: 'gpu-type-case', message: `"${typeWord.value}" matches ${exact}; the pool writes it ${exact}` }, { title: `Change to ${exact}`, newText: exact }));
    }
  }
  const never = neverFits(pool, ask);
  if (never) {
    const w = last(never.key);
    if (never.key === 'gpu-type' && w) {
      const near = didYouMean(w.value, gpuTypes(pool).map((t) => t.type));
      out.push(fix({ range: valueRange(w), severity: SEVERITY.error, code: 'never-fits', message: never.message }, near ? { title: `Change to ${near}`, newText: near } : undefined));
    } else if (w) {
      const most = never.key === 'memory' ? formatMemory(never.most) : String(never.most);
      out.push(fix({ range: wordRange(w), severity: SEVERITY.error, code: 'never-fits', message: never.message }, never.most > 0 || never.key === 'gpus' ? { title: `Change to ${never.key}=${most}`, newText: `${never.key}=${most}` } : undefined));
    } else out.push(fix({ range: whole, severity: SEVERITY.error, code: 'never-fits', message: never.message }));
  }
  const q = queueOf(pool, ask.queue);
  const timeWord = last('time');
  if (q?.maxTimeSec && timeWord && ask.timeSec !== undefined && (ask.timeSec === 0 || ask.timeSec > q.maxTimeSec)) {
    const max = fmtTime(q.maxTimeSec);
    const message = ask.timeSec === 0 ? `the ${ask.queue} queue needs a time limit of at most ${max}` : `time ${fmtTime(ask.timeSec)} is over the ${ask.queue} queue's maximum of ${max}`;
    out.push(fix({ range: wordRange(timeWord), severity: SEVERITY.error, code: 'over-queue-max', message }, { title: `Change to time=${max}`, newText: `time=${max}` }));
  }
  if (!never && !ask.cluster && fitsNow(pool, ask).length === 0) {
    const pos = queuedAhead(pool, ask.queue) + 1;
    out.push(fix({ range: whole, severity: SEVERITY.information, code: 'nothing-free', message: `Nothing free right now for this request: it would be #${pos} in the ${ask.queue} queue.` }));
  }
  return out;
}

// ---- quick fixes and the run estimate --------------------------------------------------------------------------

/** Quick fixes for the given diagnostics (those carrying FixData). */
export function codeActions(uri: string, diags: Diagnostic[]): CodeAction[] {
  return diags
    .filter((d) => d.source === SOURCE && d.data && typeof (d.data as FixData).newText === 'string')
    .map((d) => {
      const f = d.data as FixData;
      return { title: f.title, kind: 'quickfix', diagnostics: [d], isPreferred: true, edit: { changes: { [uri]: [{ range: d.range, newText: f.newText }] } } };
    });
}

/** The estimate for the run button: "~now", "~queued #3", "never fits"; undefined offline, on errors, or without directives. */
export function runEstimate(text: string, view: PoolView): string | undefined {
  if (!view.online || !view.snapshot) return undefined;
  const p = parseDirectives(text);
  if (p.errors.length) return undefined;
  return estimate(view.snapshot, askOf(p.directive, view.snapshot));
}

function lineAt(text: string, line: number): string {
  let start = 0;
  for (let i = 0; i < line; i++) {
    const nl = text.indexOf('\n', start);
    if (nl < 0) return '';
    start = nl + 1;
  }
  const end = text.indexOf('\n', start);
  return text.slice(start, end < 0 ? text.length : end).replace(/\r$/, '');
}
