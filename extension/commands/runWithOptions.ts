/**
 * Run on GPU…: pick the script (or type a command), then GPUs (count and type from the live pool, with how many are
 * free now), the queue, the time limit, and a summary where memory, CPUs, image and env can be changed. The last
 * choice is remembered per workspace and offered first.
 */
import { join } from 'node:path';
import * as vscode from 'vscode';
import { GpurunError } from '../../server/protocol/errors.ts';
import { parseDirectives, parseDuration, parseMemory, type Directive } from '../../server/protocol/directives.ts';
import type { Queue } from '../../server/protocol/jobs.ts';
import { buildSubmit, gpuChoices, parseEnvPairs, scriptCommand, splitCommandLine, type RunChoice } from '../core/runRequest.ts';
import { lensTitle } from '../core/format.ts';
import { COMMANDS, STATE } from '../contributions.ts';
import { Cancelled, register, submitAndShow, type Ctx } from './common.ts';
import { pythonCommand, workspaceOf } from './runFile.ts';

/** Folders whose .py files are libraries, not scripts to run. */
const LIBRARY_DIRS = '**/{node_modules,.venv,venv,env,.env,.conda,site-packages,dist-packages,__pycache__,.git,.tox,.nox,.mypy_cache,.pytest_cache,build,dist,.eggs,*.egg-info}/**';

/**
 * Step 1: a script, or a command typed into the same box. Whatever is typed is offered as "Run command: …" (always
 * shown, the filter does not hide it; after the scripts that match); the last command typed is offered too.
 */
function pickScriptOrCommand(scripts: string[], lastCommand: string | undefined): Promise<{ script: string } | { commandLine: string; argv: string[] } | undefined> {
  type Item = vscode.QuickPickItem & { script?: string; commandLine?: string };
  const qp = vscode.window.createQuickPick<Item>();
  qp.title = 'Run on GPU (1/5)';
  qp.placeholder = 'Script to run, or type a command (e.g. python3 -m pkg.train --lr 3e-4)';
  const base: Item[] = [
    ...(lastCommand ? [{ label: `$(history) ${lastCommand}`, description: 'the last command', commandLine: lastCommand }] : []),
    ...scripts.map((s) => ({ label: s, script: s })),
  ];
  const update = () => {
    const v = qp.value.trim();
    const typed: Item[] = v ? [{ label: `$(terminal) Run command: ${v}`, description: typeof splitCommandLine(v) === 'string' ? (splitCommandLine(v) as string) : 'no shell: quote words with spaces', commandLine: v, alwaysShow: true }] : [];
    // Last: a typed script name still picks the script with Enter; text that matches none runs as a command.
    qp.items = [...base, ...typed];
  };
  update();
  return new Promise((resolve) => {
    const subs = [
      qp.onDidChangeValue(update),
      qp.onDidAccept(() => {
        const item = qp.selectedItems[0] ?? qp.activeItems[0];
        if (!item) return;
        if (item.script) return done({ script: item.script });
        const argv = splitCommandLine(item.commandLine ?? '');
        // Not a command line (an unclosed quote): its item says why; the picker stays open.
        if (typeof argv === 'string' || argv.length === 0) return;
        done({ commandLine: item.commandLine!, argv });
      }),
      qp.onDidHide(() => done(undefined)),
    ];
    let settled = false;
    function done(r: { script: string } | { commandLine: string; argv: string[] } | undefined): void {
      if (settled) return;
      settled = true;
      for (const s of subs) s.dispose();
      qp.dispose();
      resolve(r);
    }
    qp.show();
  });
}

type Extra = Pick<RunChoice, 'memory' | 'cpus' | 'image' | 'env'>;

/** Step 5: a summary with "Run" first; picking a line asks for that value and comes back here. */
async function moreOptions(last: RunChoice, directive: Directive | undefined): Promise<Extra | undefined> {
  const x: Extra = { ...(last.memory ? { memory: last.memory } : {}), ...(last.cpus ? { cpus: last.cpus } : {}), ...(last.image ? { image: last.image } : {}), ...(last.env ? { env: last.env } : {}) };
  for (;;) {
    const envText = x.env ? Object.entries(x.env).map(([k, v]) => `${k}=${v}`).join(' ') : '';
    type Item = vscode.QuickPickItem & { key: 'run' | 'memory' | 'cpus' | 'image' | 'env' };
    const items: Item[] = [
      { key: 'run', label: '$(play) Run', description: 'with the settings below' },
      { key: 'memory', label: `Memory: ${x.memory ?? (directive?.memoryMiB ? `${directive.memoryMiB}M (script)` : 'the broker\'s default')}` },
      { key: 'cpus', label: `CPUs: ${x.cpus ?? directive?.cpus ?? 'the broker\'s default'}` },
      { key: 'image', label: `Image: ${x.image ?? directive?.image ?? 'the broker\'s default'}` },
      { key: 'env', label: `Env: ${envText || 'none'}`, description: 'plus the settings gpurun.env and gpurun.envFile' },
    ];
    const pick = await vscode.window.showQuickPick(items, { title: 'Run on GPU (5/5): run, or change memory, CPUs, image or env first' });
    if (!pick) return undefined;
    if (pick.key === 'run') return x;
    const ask = (prompt: string, value: string, check: (v: string) => string | undefined) =>
      vscode.window.showInputBox({ title: `Run on GPU: ${pick.key}`, prompt, value, validateInput: (v) => (v.trim() ? check(v.trim()) : undefined) });
    if (pick.key === 'memory') {
      const v = await ask('e.g. 16G, 512M; empty: the default', x.memory ?? '', (t) => (typeof parseMemory(t) === 'string' ? (parseMemory(t) as string) : undefined));
      if (v !== undefined) v.trim() ? (x.memory = v.trim()) : delete x.memory;
    } else if (pick.key === 'cpus') {
      const v = await ask('a whole number; empty: the default', x.cpus ? String(x.cpus) : '', (t) => (/^[1-9]\d*$/.test(t) ? undefined : 'a whole number of CPUs, 1 or more'));
      if (v !== undefined) v.trim() ? (x.cpus = Number(v.trim())) : delete x.cpus;
    } else if (pick.key === 'image') {
      const v = await ask('a container image present on the hosts, e.g. local/python:3; empty: the default', x.image ?? '', (t) => (/^[\w.\-/:@]{1,256}$/.test(t) ? undefined : 'an image reference such as python:3.12'));
      if (v !== undefined) v.trim() ? (x.image = v.trim()) : delete x.image;
    } else {
      const v = await ask('NAME=VALUE pairs separated by spaces (quote values with spaces); empty: none', envText, (t) => (typeof parseEnvPairs(t) === 'string' ? (parseEnvPairs(t) as string) : undefined));
      if (v !== undefined) {
        const env = parseEnvPairs(v.trim());
        if (typeof env !== 'string' && Object.keys(env).length) x.env = env;
        else delete x.env;
      }
    }
  }
}

export function registerRunWithOptions(ctx: Ctx): void {
  register(ctx, COMMANDS.runWithOptions.id, async (uri?: unknown) => {
    const last = ctx.context.workspaceState.get<RunChoice>(STATE.lastRun) ?? {};
    const folder = (uri instanceof vscode.Uri ? vscode.workspace.getWorkspaceFolder(uri) : undefined) ?? vscode.workspace.workspaceFolders?.[0];
    if (!folder) throw new GpurunError('E_BAD_REQUEST', 'no folder is open', { hint: 'Open the folder of your project first: it is the job\'s workspace.' });
    const workspace = folder.uri.fsPath;

    // 1. What to run.
    const choice: RunChoice = {};
    let command: string[];
    let script = uri instanceof vscode.Uri ? workspaceOf(uri).rel : undefined;
    if (!script) {
      const files = await vscode.workspace.findFiles(new vscode.RelativePattern(folder, '**/*.py'), LIBRARY_DIRS, 200);
      const rels = files.map((f) => vscode.workspace.asRelativePath(f, false)).sort();
      const active = vscode.window.activeTextEditor?.document;
      const first = [last.script, active?.languageId === 'python' ? vscode.workspace.asRelativePath(active.uri, false) : undefined].filter((x): x is string => !!x);
      const picked = await pickScriptOrCommand([...new Set([...first, ...rels])], last.commandLine);
      if (!picked) throw new Cancelled();
      if ('commandLine' in picked) {
        command = picked.argv;
        choice.commandLine = picked.commandLine;
      } else script = picked.script;
    }
    let directive: Directive | undefined;
    if (script) {
      choice.script = script;
      command = scriptCommand(pythonCommand(), script);
      const doc = await vscode.workspace.openTextDocument(vscode.Uri.file(join(workspace, script)));
      if (doc.isDirty) await doc.save();
      const parsed = parseDirectives(doc.getText());
      if (parsed.errors.length) {
        const e = parsed.errors[0];
        throw new GpurunError('E_BAD_REQUEST', `${script}:${e.line + 1}:${e.column + 1}: ${e.message}`, { hint: 'Fix the "# gpurun:" line, or remove it.' });
      }
      if (parsed.lines.length) directive = parsed.directive;
    }

    // 2. GPUs, from the live pool.
    const conn = await ctx.broker.connection();
    const hosts = await conn.client.hosts();
    type GpuItem = { label: string; description: string; gpus?: number; gpuType?: string };
    const gpuItems: GpuItem[] = gpuChoices(hosts);
    const fromScript: GpuItem[] = directive ? [{ label: `As the script says ${lensTitle(directive).replace('▶ Run on GPU ', '')}`, description: '# gpurun: line' }] : [];
    const lastIdx = gpuItems.findIndex((c) => c.gpus === last.gpus && (c.gpuType ?? '') === (last.gpuType ?? ''));
    if (lastIdx > 0) gpuItems.unshift(...gpuItems.splice(lastIdx, 1));
    const gpuPick = await vscode.window.showQuickPick([...fromScript, ...gpuItems], { title: 'Run on GPU (2/5): GPUs', placeHolder: 'How many GPUs, of which type' });
    if (!gpuPick) throw new Cancelled();
    if (gpuPick.gpus !== undefined) {
      choice.gpus = gpuPick.gpus;
      if (gpuPick.gpuType) choice.gpuType = gpuPick.gpuType;
    }

    // 3. Queue.
    const queues: Array<{ label: Queue; description: string }> = [
      { label: 'online', description: 'interactive: scheduled first' },
      { label: 'offline', description: 'batch: runs when online jobs leave room' },
    ];
    if ((last.queue ?? directive?.queue) === 'offline') queues.reverse();
    const q = await vscode.window.showQuickPick(queues, { title: 'Run on GPU (3/5): queue' });
    if (!q) throw new Cancelled();
    choice.queue = q.label;

    // 4. Time limit.
    const time = await vscode.window.showInputBox({
      title: 'Run on GPU (4/5): time limit',
      prompt: 'e.g. 30m, 2h, 1:30:00, 2-12:00 (days-hours:min); a bare number is minutes, as in Slurm; empty: the queue\'s default',
      value: last.time ?? '',
      validateInput: (v) => {
        if (!v.trim()) return undefined;
        const s = parseDuration(v);
        return typeof s === 'string' ? s : undefined;
      },
    });
    if (time === undefined) throw new Cancelled();
    if (time.trim()) choice.time = time.trim();

    // 5. Memory, CPUs, image, env: a summary to run from at once (Enter), or to change first.
    const extra = await moreOptions(last, directive);
    if (!extra) throw new Cancelled();
    Object.assign(choice, extra);

    await ctx.context.workspaceState.update(STATE.lastRun, choice);
    const req = buildSubmit({ command: command!, workspace, ...(directive ? { directive } : {}), choice, ...(choice.env ? { env: choice.env } : {}) });
    await submitAndShow(ctx, req);
  });
}
