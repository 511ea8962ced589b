/**
 * Run buttons over Python entry points (an `if __name__ == "__main__":` guard or a `# gpurun:` line): `▶ Run on GPU
 * (2×A100, offline, ~now)` with the directive's resources and the language server's estimate, and `Run with
 * options…`, and `Debug on GPU` (debug/gpuDebug.ts). The directive's diagnostics come from the language server (lsp/languageClient.ts).
 */
import * as vscode from 'vscode';
import { findEntryPoint } from '../core/entryPoints.ts';
import { lensTitle } from '../core/format.ts';
import { COMMANDS, SETTINGS, SETTINGS_SECTION } from '../contributions.ts';

/**
 * How long after an edit the run buttons must have been asked for the document as it now is. VS Code drops its
 * pending update of a file's CodeLenses when the editor loses focus (a user who types `gpus=16` and goes to the
 * Problems view at once), and would show the old button until the editor is focused again; past these delays the
 * buttons are refreshed (a refresh runs whether or not the editor has focus).
 */
const STALE_LENS_CHECKS_MS = [750, 3000];

export class RunLensProvider implements vscode.CodeLensProvider, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.changed.event;
  private readonly estimate: (uri: vscode.Uri) => Promise<string | undefined>;
  /** Per document (uri), the version whose buttons VS Code was last given. */
  private readonly provided = new Map<string, number>();
  private readonly checks = new Map<string, NodeJS.Timeout[]>();
  private readonly subs: vscode.Disposable[] = [];

  /** `estimate`: when the job would start ("~now"), from the live pool; undefined when unknown. */
  constructor(estimate: (uri: vscode.Uri) => Promise<string | undefined> = async () => undefined) {
    this.estimate = estimate;
    this.subs.push(
      vscode.workspace.onDidChangeTextDocument((e) => e.contentChanges.length && e.document.languageId === 'python' && this.checkLater(e.document)),
      vscode.workspace.onDidCloseTextDocument((d) => this.forget(d.uri.toString())),
    );
  }

  /** After an edit: refreshes the buttons if VS Code has not asked for them for this version of the document. */
  private checkLater(doc: vscode.TextDocument): void {
    const key = doc.uri.toString();
    for (const t of this.checks.get(key) ?? []) clearTimeout(t);
    const version = doc.version;
    this.checks.set(
      key,
      STALE_LENS_CHECKS_MS.map((ms) => setTimeout(() => doc.version === version && this.provided.get(key) !== version && this.refresh(), ms)),
    );
  }

  private forget(key: string): void {
    for (const t of this.checks.get(key) ?? []) clearTimeout(t);
    this.checks.delete(key);
    this.provided.delete(key);
  }

  refresh(): void {
    this.changed.fire();
  }

  async provideCodeLenses(doc: vscode.TextDocument, token?: vscode.CancellationToken): Promise<vscode.CodeLens[]> {
    const version = doc.version;
    const given = (lenses: vscode.CodeLens[]) => {
      if (!token?.isCancellationRequested) this.provided.set(doc.uri.toString(), version);
      return lenses;
    };
    if (!vscode.workspace.getConfiguration(SETTINGS_SECTION).get<boolean>(SETTINGS.codeLensEnabled.key, true)) return given([]);
    const ep = findEntryPoint(doc.getText());
    if (!ep) return given([]);
    const range = new vscode.Range(ep.line, 0, ep.line, 0);
    const title = ep.errors.length ? '▶ Run on GPU (fix the # gpurun: line first)' : lensTitle(ep.directive, ep.kind === 'directive' ? await this.estimate(doc.uri) : undefined);
    return given([
      new vscode.CodeLens(range, { command: COMMANDS.runCurrentFile.id, title, tooltip: 'Submit this script as a job and show its output', arguments: [doc.uri] }),
      new vscode.CodeLens(range, { command: COMMANDS.runWithOptions.id, title: 'Run with options…', tooltip: 'Pick GPUs, queue and time limit', arguments: [doc.uri] }),
      new vscode.CodeLens(range, { command: COMMANDS.debugFile.id, title: 'Debug on GPU', tooltip: 'Run this script in a job under debugpy and attach the debugger (breakpoints, variables)', arguments: [doc.uri] }),
    ]);
  }

  dispose(): void {
    for (const key of [...this.checks.keys()]) this.forget(key);
    for (const s of this.subs) s.dispose();
    this.changed.dispose();
  }
}
