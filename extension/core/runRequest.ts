/**
 * What a run button submits: the script's command, the directive's resources, and the options a person picked. The
 * GPU choices offered in "Run on GPU…" come from the live pool. Pure.
 */
import { applyDirective, type Directive } from '../../server/protocol/directives.ts';
import type { HostInfo, Queue, SubmitRequest } from '../../server/protocol/jobs.ts';

/** What "Run on GPU…" remembers per workspace. */
export interface RunChoice {
  /** Workspace-relative script, or undefined when a command was typed. */
  script?: string;
  /** A typed command line, split into argv (see splitCommandLine). */
  commandLine?: string;
  gpus?: number;
  gpuType?: string;
  queue?: Queue;
  /** As typed, e.g. "2h"; empty = the queue's default. */
  time?: string;
  /** As typed, e.g. "16G". */
  memory?: string;
  cpus?: number;
  image?: string;
  env?: Record<string, string>;
}

/** The argv that runs a workspace-relative Python script. */
export function scriptCommand(python: string, relPath: string, args: string[] = []): string[] {
  return [python, relPath, ...args];
}

/** The request for a script and its directive; picked options (when given) win over the directive. */
export function buildSubmit(opts: {
  command: string[];
  workspace: string;
  directive?: Directive;
  choice?: Pick<RunChoice, 'gpus' | 'gpuType' | 'queue' | 'time' | 'memory' | 'cpus' | 'image'>;
  env?: Record<string, string>;
  name?: string;
}): SubmitRequest {
  const req = applyDirective({ command: opts.command, workspace: opts.workspace }, opts.directive ?? {});
  const c = opts.choice;
  if (c) {
    if (c.gpus !== undefined) {
      req.gpus = c.gpus;
      if (c.gpuType) req.gpuType = c.gpuType;
      else delete req.gpuType;
    }
    if (c.queue) req.queue = c.queue;
    if (c.time) req.time = c.time;
    if (c.memory) req.memory = c.memory;
    if (c.cpus) req.cpus = c.cpus;
    if (c.image) req.image = c.image;
  }
  if (opts.env && Object.keys(opts.env).length) req.env = opts.env;
  if (opts.name) req.name = opts.name;
  return req;
}

export interface GpuChoice {
  label: string;
  description: string;
  gpus: number;
  gpuType?: string;
}

/**
 * GPU options from the pool: for each GPU type, 1…N where N is the most GPUs of that type one host has, each with how
 * many of that type are free now; plus "Any GPU" counts and "No GPU".
 */
export function gpuChoices(hosts: HostInfo[]): GpuChoice[] {
  const byType = new Map<string, { maxOnHost: number; free: number; total: number }>();
  let maxAny = 0, freeAny = 0, totalAny = 0;
  for (const h of hosts) {
    if (h.state !== 'up') continue;
    const perType = new Map<string, number>();
    for (const g of h.gpus) {
      const t = shortGpuName(g.name);
      perType.set(t, (perType.get(t) ?? 0) + 1);
      const e = byType.get(t) ?? { maxOnHost: 0, free: 0, total: 0 };
      e.total++;
      if (!g.jobId) e.free++;
      byType.set(t, e);
    }
    for (const [t, n] of perType) byType.get(t)!.maxOnHost = Math.max(byType.get(t)!.maxOnHost, n);
    maxAny = Math.max(maxAny, h.gpus.length);
    totalAny += h.gpus.length;
    freeAny += h.gpus.filter((g) => !g.jobId).length;
  }
  const out: GpuChoice[] = [];
  const types = [...byType.keys()].sort();
  for (const t of types) {
    const e = byType.get(t)!;
    for (let n = 1; n <= e.maxOnHost; n++) out.push({ label: `${n}×${t}`, description: `${e.free} of ${e.total} ${t} free now`, gpus: n, gpuType: t });
  }
  if (types.length > 1) for (let n = 1; n <= maxAny; n++) out.push({ label: `${n} GPU${n === 1 ? '' : 's'} (any type)`, description: `${freeAny} of ${totalAny} free now`, gpus: n });
  out.push({ label: 'No GPU', description: 'CPU only', gpus: 0 });
  return out;
}

/**
 * "NVIDIA A100-SXM4-80GB" → "A100", "NVIDIA GeForce RTX 4090" → "RTX 4090": the model, which the broker matches as a
 * substring of the GPU name. A family word alone (RTX, TITAN) keeps the model number after it.
 */
export function shortGpuName(name: string): string {
  const words = name.replace(/^NVIDIA\s+/i, '').replace(/^(GeForce|Tesla|Quadro)\s+/i, '').split(/[\s-]+/).filter(Boolean);
  if (words.length > 1 && /^[A-Za-z]+$/.test(words[0])) return `${words[0]} ${words[1]}`;
  return words[0] || name;
}

/**
 * Splits a typed command line into argv: whitespace separates words, single and double quotes group, backslash
 * escapes. Returns an error message for an unclosed quote. No expansion of any kind.
 */
export function splitCommandLine(line: string): string[] | string {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quote) {
      if (ch === quote) quote = null;
      else if (ch === '\\' && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      inWord = true;
    } else if (ch === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (quote) return `unclosed ${quote} quote`;
  if (inWord) out.push(cur);
  return out;
}

/** "A=1 B='two words'" → { A: '1', B: 'two words' } (words as splitCommandLine splits them); an error message if not. */
export function parseEnvPairs(text: string): Record<string, string> | string {
  const words = splitCommandLine(text);
  if (typeof words === 'string') return words;
  const env: Record<string, string> = {};
  for (const w of words) {
    const eq = w.indexOf('=');
    const name = eq < 0 ? w : w.slice(0, eq);
    if (eq < 0 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return `"${w}" is not NAME=VALUE`;
    env[name] = w.slice(eq + 1);
  }
  return env;
}
