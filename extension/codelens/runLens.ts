/**
 * Run buttons over Python entry points (an `if __name__ == "__main__":` guard or a `# gpurun:` line): `▶ Run on GPU
 * (2×A100, offline, ~now)` with the directive's resources and the language server's estimate, and `Run with
 * options…`. The directive's diagnostics come from the language server (lsp/languageClient.ts).
 */
import * as vscode from 'vscode';
import { findEntryPoint } from '../core/entryPoints.ts';
import { lensTitle } from '../core/format.ts';
import { COMMANDS, SETTINGS, SETTINGS_SECTION } from '../contributions.ts';

export class RunLensProvider implements vscode.CodeLensProvider {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.changed.event;
  private readonly estimate: (uri: vscode.Uri) => Promise<string | undefined>;

  /** `estimate`: when the job would start ("~now"), from the live pool; undefined when unknown. */
  constructor(estimate: (uri: vscode.Uri) => Promise<string | undefined> = async () => undefined) {
    this.estimate = estimate;
  }

  refresh(): void {
    this.changed.fire();
  }

  async provideCodeLenses(doc: vscode.TextDocument): Promise<vscode.CodeLens[]> {
    if (!vscode.workspace.getConfiguration(SETTINGS_SECTION).get<boolean>(SETTINGS.codeLensEnabled.key, true)) return [];
    const ep = findEntryPoint(doc.getText());
    if (!ep) return [];
    const range = new vscode.Range(ep.line, 0, ep.line, 0);
    const title = ep.errors.length ? '▶ Run on GPU (fix the # gpurun: line first)' : lensTitle(ep.directive, ep.kind === 'directive' ? await this.estimate(doc.uri) : undefined);
    return [
      new vscode.CodeLens(range, { command: COMMANDS.runCurrentFile.id, title, tooltip: 'Submit this script as a job and show its output', arguments: [doc.uri] }),
      new vscode.CodeLens(range, { command: COMMANDS.runWithOptions.id, title: 'Run with options…', tooltip: 'Pick GPUs, queue and time limit', arguments: [doc.uri] }),
    ];
  }

  dispose(): void {
    this.changed.dispose();
  }
}
