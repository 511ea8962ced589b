/** The one "GPU Run" log output channel. */
import * as vscode from 'vscode';
import { LOG_CHANNEL } from './contributions.ts';

export type Log = vscode.LogOutputChannel;

export function createLog(): Log {
  return vscode.window.createOutputChannel(LOG_CHANNEL, { log: true });
}
