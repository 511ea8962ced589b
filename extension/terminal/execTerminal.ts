/**
 * A terminal that is a process in a job, through the broker's exec upgrade (no SSH from this machine): a PTY end to
 * end (keys, Ctrl+C, window size), attached again after a dropped connection (server/protocol/execClient.ts).
 * Used by Open Terminal in Job (a shell in a running job) and Open Terminal on GPU (an interactive job whose
 * command is the shell: closing the terminal ends the job and frees its GPUs).
 */
import { StringDecoder } from 'node:string_decoder';
import * as vscode from 'vscode';
import { ExecStream } from '../../server/protocol/execClient.ts';
import type { ExecRequest } from '../../server/protocol/interactive.ts';
import type { Broker } from '../brokerClient.ts';
import type { Log } from '../log.ts';
import { statusLine } from '../core/terminalText.ts';

/** What the terminal runs: found when it opens (an interactive job first waits to start). */
export interface ExecTarget {
  jobId: string;
  command: string[];
  /** Its output goes into the job's log too (the command of an interactive job). */
  log?: boolean;
}

export class ExecTerminal implements vscode.Pseudoterminal {
  private readonly writeEmitter = new vscode.EventEmitter<string>();
  readonly onDidWrite = this.writeEmitter.event;
  private readonly closeEmitter = new vscode.EventEmitter<number | void>();
  readonly onDidClose = this.closeEmitter.event;
  private stream: ExecStream | undefined;
  private size = { rows: 24, cols: 80 };
  private closed = false;
  private readonly broker: Broker;
  private readonly log: Log;
  private readonly prepare: (say: (text: string) => void) => Promise<ExecTarget>;
  /** Called once when the person closes the terminal; the process is hung up when what it returns has settled. */
  onClosed: (target: ExecTarget | undefined) => Promise<unknown> | void = () => {};
  private target: ExecTarget | undefined;

  constructor(broker: Broker, log: Log, prepare: (say: (text: string) => void) => Promise<ExecTarget>) {
    this.broker = broker;
    this.log = log;
    this.prepare = prepare;
  }

  private say(text: string, error = false): void {
    this.writeEmitter.fire(error ? statusLine(text, '\x1b[1;31m') : statusLine(text));
  }

  open(dims: vscode.TerminalDimensions | undefined): void {
    if (dims) this.size = { rows: dims.rows, cols: dims.columns };
    void this.run();
  }

  private async run(): Promise<void> {
    try {
      const target = (this.target = await this.prepare((t) => this.say(t)));
      if (this.closed) {
        await this.onClosed(target);
        return;
      }
      const conn = await this.broker.connection();
      const out = new StringDecoder('utf8');
      const err = new StringDecoder('utf8');
      const req: ExecRequest = { command: target.command, tty: true, rows: this.size.rows, cols: this.size.cols, term: 'xterm-256color', ...(target.log ? { log: true } : {}) };
      const stream = (this.stream = new ExecStream(conn.client, target.jobId, req, {
        stdout: (d) => void this.writeEmitter.fire(out.write(d)),
        stderr: (d) => void this.writeEmitter.fire(err.write(d)),
        notice: (text) => this.say(text),
      }));
      const end = await stream.run();
      if (this.closed || !end) return;
      this.say(end.code !== null ? `exited with code ${end.code}` : `ended by signal ${end.signal}`);
      // The process ended by itself: the terminal goes away without asking for a hang-up or a cancel.
      this.closed = true;
      this.closeEmitter.fire(end.code ?? 1);
    } catch (e) {
      if (this.closed) return;
      this.log.error(`terminal in a job: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      this.say(e instanceof Error ? e.message : String(e), true);
    }
  }

  handleInput(data: string): void {
    this.stream?.write(Buffer.from(data, 'utf8'));
  }

  setDimensions(dims: vscode.TerminalDimensions): void {
    this.size = { rows: dims.rows, cols: dims.columns };
    this.stream?.resize(dims.rows, dims.columns);
  }

  /** Closed by the person: the process is hung up (a closed terminal), not left for a reattach. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    void Promise.resolve(this.onClosed(this.target)).finally(() => this.stream?.hangup());
  }
}
