/**
 * Run buttons over Python entry points (an `if __name__ == "__main__":` guard or a `# gpurun:` line): `▶ Run on GPU
 * (2×A100, offline)` with the directive's resources, and `Run with options…`. A malformed directive shows the parser's
 * message as a diagnostic on the bad word.
 */
import * as vscode from 'vscode';
import { findEntryPoint } from '../core/entryPoints.ts';
import { lensTitle } from '../core/format.ts';
import { COMMANDS, SETTINGS, SETTINGS_SECTION } from '../contributions.ts';

export class RunLensProvider implements vscode.CodeLensProvider {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.changed.event;

  refresh(): void {
    this.changed.fire();
  }

  provideCodeLenses(doc: vscode.TextDocument): vscode.CodeLens[] {
    if (!vscode.workspace.getConfiguration(SETTINGS_SECTION).get<boolean>(SETTINGS.codeLensEnabled.key, true)) return [];
    const ep = findEntryPoint(doc.getText());
    if (!ep) return [];
    const range = new vscode.Range(ep.line, 0, ep.line, 0);
    const title = ep.errors.length ? '▶ Run on GPU (fix the # gpurun: line first)' : lensTitle(ep.directive);
    return [
      new vscode.CodeLens(range, { command: COMMANDS.runCurrentFile.id, title, tooltip: 'Submit this script as a job and show its output', arguments: [doc.uri] }),
      new vscode.CodeLens(range, { command: COMMANDS.runWithOptions.id, title: 'Run with options…', tooltip: 'Pick GPUs, queue and time limit', arguments: [doc.uri] }),
    ];
  }

  dispose(): void {
    this.changed.dispose();
  }
}

/** Keeps the "gpurun" diagnostics of open Python files in step with their `# gpurun:` lines. */
export function registerDirectiveDiagnostics(context: vscode.ExtensionContext): void {
  const diags = vscode.languages.createDiagnosticCollection('gpurun');
  context.subscriptions.push(diags);
  const check = (doc: vscode.TextDocument) => {
    if (doc.languageId !== 'python') return;
    const ep = findEntryPoint(doc.getText());
    diags.set(
      doc.uri,
      (ep?.errors ?? []).map((e) => {
        const d = new vscode.Diagnostic(new vscode.Range(e.line, e.column, e.line, e.column + e.length), e.message, vscode.DiagnosticSeverity.Error);
        d.source = 'gpurun';
        return d;
      }),
    );
  };
  for (const doc of vscode.workspace.textDocuments) check(doc);
  context.subscriptions.push(
    vscode.workspace.onDidOpenTextDocument(check),
    vscode.workspace.onDidChangeTextDocument((e) => check(e.document)),
    vscode.workspace.onDidCloseTextDocument((doc) => diags.delete(doc.uri)),
  );
}
