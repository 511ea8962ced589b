/**
 * Run on GPU…: pick the script (or type a command), then GPUs (count and type from the live pool, with how many are
 * free now), the queue, the time limit, and a summary where memory, CPUs, image and env can be changed. The last
 * choice is remembered per workspace and offered first.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { GpurunError } from '../../server/protocol/errors.ts';
import { parseDirectives, parseDuration, type Directive } from '../../server/protocol/directives.ts';
import type { Queue } from '../../server/protocol/jobs.ts';
import { buildSubmit, gpuChoices, scriptCommand, splitCommandLine, type RunChoice } from '../core/runRequest.ts';
import { editRequest } from './editRequest.ts';
import { displayCommand, lensTitle } from '../core/format.ts';
import { parseRunConfigs, RUN_CONFIG_FILE, type RunConfig } from '../../server/protocol/runConfigs.ts';
import { COMMANDS, STATE } from '../contributions.ts';
import { Cancelled, register, submitAndShow, type Ctx } from './common.ts';
import { pythonCommand, workspaceOf } from './runFile.ts';

/** Folders whose .py files are libraries, not scripts to run. */
const LIBRARY_DIRS = '**/{node_modules,.venv,venv,env,.env,.conda,site-packages,dist-packages,__pycache__,.git,.tox,.nox,.mypy_cache,.pytest_cache,build,dist,.eggs,*.egg-info}/**';

/**
 * Step 1: a script, or a command typed into the same box. Whatever is typed is offered as "Run command: …" (always
 * shown, the filter does not hide it; after the scripts that match); the last command typed is offered too.
 */
type Picked = { script: string } | { commandLine: string; argv: string[] } | { config: string };

function pickScriptOrCommand(scripts: string[], lastCommand: string | undefined, configs: Record<string, RunConfig>): Promise<Picked | undefined> {
  type Item = vscode.QuickPickItem & { script?: string; commandLine?: string; config?: string };
  const qp = vscode.window.createQuickPick<Item>();
  qp.title = 'Run on GPU (1/5)';
  qp.placeholder = 'Script to run, or type a command (e.g. python3 -m pkg.train --lr 3e-4)';
  const base: Item[] = [
    ...Object.entries(configs).map(([name, c]) => ({ label: `$(gear) ${name}`, description: `${RUN_CONFIG_FILE}: ${c.command ? displayCommand(c.command) : 'no command'}`, config: name })),
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
        // Enter can come before the items for the typed text are shown: the text is then the command.
        const item = qp.selectedItems[0] ?? qp.activeItems[0] ?? (qp.value.trim() ? { label: '', commandLine: qp.value.trim() } : undefined);
        if (!item) return;
        if (item.script) return done({ script: item.script });
        if (item.config) return done({ config: item.config });
        const argv = splitCommandLine(item.commandLine ?? '');
        // Not a command line (an unclosed quote): its item says why; the picker stays open.
        if (typeof argv === 'string' || argv.length === 0) return;
        done({ commandLine: item.commandLine!, argv });
      }),
      qp.onDidHide(() => done(undefined)),
    ];
    let settled = false;
    function done(r: Picked | undefined): void {
      if (settled) return;
      settled = true;
      for (const s of subs) s.dispose();
      qp.dispose();
      resolve(r);
    }
    qp.show();
  });
}

/** The workspace's gpurun.json configs; none when there is no file; an error (shown) when it is malformed. */
async function readRunConfigs(workspace: string): Promise<Record<string, RunConfig>> {
  let text: string;
  try {
    text = await readFile(join(workspace, RUN_CONFIG_FILE), 'utf8');
  } catch {
    return {};
  }
  const r = parseRunConfigs(text);
  if (typeof r === 'string') throw new GpurunError('E_BAD_REQUEST', `${join(workspace, RUN_CONFIG_FILE)}: ${r}`, { hint: 'Fix the file (see the README, "Run configurations"), or remove it.' });
  return r;
}

/** The extras remembered from the last run. */
function pickExtra(last: RunChoice): Pick<RunChoice, 'memory' | 'cpus' | 'image'> {
  return { ...(last.memory ? { memory: last.memory } : {}), ...(last.cpus ? { cpus: last.cpus } : {}), ...(last.image ? { image: last.image } : {}) };
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
      const configs = await readRunConfigs(workspace);
      const picked = await pickScriptOrCommand([...new Set([...first, ...rels])], last.commandLine, configs);
      if (!picked) throw new Cancelled();
      if ('config' in picked) {
        // A saved configuration runs as it is (change it in gpurun.json, or afterwards with Rerun with Changes).
        const c = configs[picked.config];
        if (!c.command) throw new GpurunError('E_BAD_REQUEST', `the config "${picked.config}" of ${RUN_CONFIG_FILE} has no command`, { hint: 'Add "command": ["python3", "train.py"] to it.' });
        await submitAndShow(ctx, { ...c, command: c.command, workspace });
        return;
      }
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
    const base = buildSubmit({ command: command!, workspace, ...(directive ? { directive } : {}), choice: { ...choice, ...pickExtra(last) }, ...(last.env ? { env: last.env } : {}) });
    const req = await editRequest(base, 'Run on GPU (5/5): run, or change memory, CPUs, image or env first', ['memory', 'cpus', 'image', 'env']);
    if (!req) throw new Cancelled();
    if (req.memory !== undefined && req.memory !== directive?.memoryMiB) choice.memory = String(req.memory);
    if (req.cpus !== undefined && req.cpus !== directive?.cpus) choice.cpus = req.cpus;
    if (req.image !== undefined && req.image !== directive?.image) choice.image = req.image;
    if (req.env && Object.keys(req.env).length) choice.env = req.env;
    await ctx.context.workspaceState.update(STATE.lastRun, choice);
    await submitAndShow(ctx, req);
  });
}
