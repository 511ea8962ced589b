/**
 * The one notification that says the broker cannot be reached. The extension reconnects by itself, so the notice is
 * a progress notification that closes when the connection is back (an error message would stay on screen after
 * the problem has gone), and a second failure while it is up does not add another.
 */
import * as vscode from 'vscode';
import { editorErrorText } from './core/errors.ts';

export class ConnectionNotice implements vscode.Disposable {
  private done: (() => void) | undefined;
  private text = '';

  show(err: { code?: string; message: string; hint?: string }, embedded: boolean): void {
    const text = `GPU Run: ${editorErrorText(err, embedded)} Retrying…`;
    if (this.done && this.text === text) return;
    this.close();
    this.text = text;
    const closed = new Promise<void>((r) => (this.done = r));
    void vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: text, cancellable: false }, () => closed);
  }

  /** Connected again (or giving up on this notice): it goes away. */
  close(): void {
    this.done?.();
    this.done = undefined;
    this.text = '';
  }

  dispose(): void {
    this.close();
  }
}
