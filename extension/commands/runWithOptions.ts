/**
 * Run on GPU…: pick the script (or type a command), then GPUs (count and type from the live pool, with how many are
 * free now), the queue and the time limit. The last choice is remembered per workspace and offered first.
 */
import { join } from 'node:path';
import * as vscode from 'vscode';
import { GpurunError } from '../../server/protocol/errors.ts';
import { parseDirectives, parseDuration, type Directive } from '../../server/protocol/directives.ts';
import type { Queue } from '../../server/protocol/jobs.ts';
import { buildSubmit, gpuChoices, scriptCommand, splitCommandLine, type RunChoice } from '../core/runRequest.ts';
import { lensTitle } from '../core/format.ts';
import { COMMANDS, STATE } from '../contributions.ts';
import { Cancelled, register, submitAndShow, type Ctx } from './common.ts';
import { pythonCommand, workspaceOf } from './runFile.ts';

const TYPE_COMMAND = '$(terminal) Type a command…';

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
      const files = await vscode.workspace.findFiles(new vscode.RelativePattern(folder, '**/*.py'), '{**/node_modules/**,**/.venv/**,**/venv/**,**/site-packages/**}', 500);
      const rels = files.map((f) => vscode.workspace.asRelativePath(f, false)).sort();
      const active = vscode.window.activeTextEditor?.document;
      const first = [last.commandLine ? `$(history) ${last.commandLine}` : undefined, last.script, active?.languageId === 'python' ? vscode.workspace.asRelativePath(active.uri, false) : undefined].filter((x): x is string => !!x);
      const pick = await vscode.window.showQuickPick([...new Set([...first, ...rels, TYPE_COMMAND])], { placeHolder: 'Script to run (or type a command)', title: 'Run on GPU (1/4)' });
      if (!pick) throw new Cancelled();
      if (pick === TYPE_COMMAND || pick.startsWith('$(history) ')) {
        const line = await vscode.window.showInputBox({
          title: 'Run on GPU (1/4)',
          prompt: 'Command to run in the workspace (no shell: quote words with spaces)',
          value: pick === TYPE_COMMAND ? (last.commandLine ?? '') : pick.slice('$(history) '.length),
          validateInput: (v) => {
            const argv = splitCommandLine(v);
            return typeof argv === 'string' ? argv : argv.length ? undefined : 'Type a command';
          },
        });
        if (line === undefined) throw new Cancelled();
        command = splitCommandLine(line) as string[];
        choice.commandLine = line;
      } else script = pick;
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
    const gpuPick = await vscode.window.showQuickPick([...fromScript, ...gpuItems], { title: 'Run on GPU (2/4): GPUs', placeHolder: 'How many GPUs, of which type' });
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
    const q = await vscode.window.showQuickPick(queues, { title: 'Run on GPU (3/4): queue' });
    if (!q) throw new Cancelled();
    choice.queue = q.label;

    // 4. Time limit.
    const time = await vscode.window.showInputBox({
      title: 'Run on GPU (4/4): time limit',
      prompt: 'e.g. 30m, 2h, 1:30:00; empty: the queue\'s default',
      value: last.time ?? '',
      validateInput: (v) => {
        if (!v.trim()) return undefined;
        const s = parseDuration(v);
        return typeof s === 'string' ? s : undefined;
      },
    });
    if (time === undefined) throw new Cancelled();
    if (time.trim()) choice.time = time.trim();

    await ctx.context.workspaceState.update(STATE.lastRun, choice);
    await submitAndShow(ctx, buildSubmit({ command: command!, workspace, ...(directive ? { directive } : {}), choice }));
  });
}
