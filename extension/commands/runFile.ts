/** Run Current File on GPU (also the CodeLens and the editor-title button): the script with its directive's resources. */
import { dirname, relative } from 'node:path';
import * as vscode from 'vscode';
import { GpurunError } from '../../server/protocol/errors.ts';
import { parseDirectives } from '../../server/protocol/directives.ts';
import { buildSubmit, scriptCommand } from '../core/runRequest.ts';
import { COMMANDS, SETTINGS, SETTINGS_SECTION } from '../contributions.ts';
import { register, submitAndShow, type Ctx } from './common.ts';

/**
 * The active editor's file. The extension host can hear of an editor that was just opened a moment after a command
 * arrives (seen under load), so with none active it waits briefly for one before saying no file is open.
 */
function activeFileUri(waitMs = 1500): Promise<vscode.Uri | undefined> {
  const now = vscode.window.activeTextEditor?.document.uri;
  if (now) return Promise.resolve(now);
  return new Promise((resolve) => {
    const done = (uri: vscode.Uri | undefined) => {
      sub.dispose();
      clearTimeout(timer);
      resolve(uri);
    };
    const sub = vscode.window.onDidChangeActiveTextEditor((e) => e && done(e.document.uri));
    const timer = setTimeout(() => done(vscode.window.activeTextEditor?.document.uri), waitMs);
  });
}

/** The document of `uri` (or the active editor), saved: the job runs the file on disk. */
export async function scriptDocument(uri: unknown): Promise<vscode.TextDocument> {
  const target = uri instanceof vscode.Uri ? uri : await activeFileUri();
  if (!target) throw new GpurunError('E_BAD_REQUEST', 'no file is open', { hint: 'Open the script to run, or use Run on GPU… to pick one.' });
  if (target.scheme !== 'file') throw new GpurunError('E_BAD_REQUEST', `${target.toString()} is not a file on this machine`);
  const doc = await vscode.workspace.openTextDocument(target);
  if (doc.isDirty) await doc.save();
  return doc;
}

/** The folder the job runs in (its workspace) and the script's path relative to it. */
export function workspaceOf(uri: vscode.Uri): { workspace: string; rel: string } {
  const folder = vscode.workspace.getWorkspaceFolder(uri);
  const workspace = folder ? folder.uri.fsPath : dirname(uri.fsPath);
  return { workspace, rel: relative(workspace, uri.fsPath) };
}

export function pythonCommand(): string {
  return vscode.workspace.getConfiguration(SETTINGS_SECTION).get<string>(SETTINGS.pythonCommand.key, SETTINGS.pythonCommand.default) || 'python3';
}

export function registerRunFile(ctx: Ctx): void {
  register(ctx, COMMANDS.runCurrentFile.id, async (uri?: unknown) => {
    const doc = await scriptDocument(uri);
    const { directive, errors } = parseDirectives(doc.getText());
    if (errors.length) {
      const e = errors[0];
      throw new GpurunError('E_BAD_REQUEST', `${vscode.workspace.asRelativePath(doc.uri)}:${e.line + 1}:${e.column + 1}: ${e.message}`, { hint: 'Fix the "# gpurun:" line, or remove it.' });
    }
    const { workspace, rel } = workspaceOf(doc.uri);
    await submitAndShow(ctx, buildSubmit({ command: scriptCommand(pythonCommand(), rel), workspace, directive }));
  });
}
