/**
 * One Pseudoterminal per job: its output from offset 0, live. Buffers until open(); `\n` → `\r\n`; after a dropped
 * connection or a broker restart it resumes from the last byte offset (no gap, no repeat). Says the queue position
 * while queued, the host and GPUs at start, the exit code or reason at the end. Closing it does not cancel the job;
 * Ctrl+C asks.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import * as vscode from 'vscode';
import { GpurunError } from '../../server/protocol/errors.ts';
import { isFinal, type Job } from '../../server/protocol/jobs.ts';
import { JobNarrator, QUIET_QUEUE_MS, TerminalEncoder, statusLine } from '../core/terminalText.ts';
import { terminalName } from '../core/format.ts';
import type { Broker } from '../brokerClient.ts';
import type { JobSync } from '../jobSync.ts';
import type { Log } from '../log.ts';
import { SETTINGS, SETTINGS_SECTION } from '../contributions.ts';

export class JobTerminal implements vscode.Pseudoterminal {
  private readonly writeEmitter = new vscode.EventEmitter<string>();
  readonly onDidWrite = this.writeEmitter.event;
  private readonly closeEmitter = new vscode.EventEmitter<number | void>();
  readonly onDidClose = this.closeEmitter.event;
  /** Text written before open(); undefined once open. */
  private pending: string[] | undefined = [];
  private readonly ac = new AbortController();
  private readonly narrator = new JobNarrator();
  private readonly encoder = new TerminalEncoder();
  private sub: vscode.Disposable | undefined;
  private outputStarted = false;
  private quietTimer: NodeJS.Timeout | undefined;
  /** All output and the end line have been shown. */
  ended = false;
  /** Bytes of output written so far: where a reconnect resumes. */
  offset = 0;
  readonly jobId: string;
  private job: Job;
  private readonly broker: Broker;
  private readonly sync: JobSync;
  private readonly log: Log;
  onClosed: () => void = () => {};
  /** Output as it comes (text), e.g. to find the web addresses the job prints. */
  onOutput: (text: string) => void = () => {};

  constructor(job: Job, broker: Broker, sync: JobSync, log: Log) {
    this.job = job;
    this.jobId = job.id;
    this.broker = broker;
    this.sync = sync;
    this.log = log;
  }

  get name(): string {
    return terminalName(this.job);
  }

  private write(text: string): void {
    if (!text) return;
    if (this.pending) this.pending.push(text);
    else this.writeEmitter.fire(text);
  }

  open(): void {
    const buffered = this.pending ?? [];
    this.pending = undefined;
    for (const t of buffered) this.writeEmitter.fire(t);
  }

  /** Starts following at once (output is buffered until the terminal opens). */
  start(): void {
    this.write(statusLine(`job ${this.job.id}: ${this.job.command.join(' ')}`));
    this.narrate(this.sync.jobs.get(this.jobId) ?? this.job);
    // A job that has not started a moment after it was submitted: say that it waits (and where in the queue).
    const wait = Date.parse(this.job.createdAt) + QUIET_QUEUE_MS + 100 - Date.now();
    this.quietTimer = setTimeout(() => !this.outputStarted && this.narrate(this.sync.jobs.get(this.jobId) ?? this.job), Math.max(0, wait));
    this.sub = this.sync.onDidChange((j) => {
      if (j?.id === this.jobId && !this.outputStarted) this.narrate(j);
    });
    void this.follow();
  }

  /** Queue and start lines come from job events until output flows; the end line only after the output. */
  private narrate(job: Job, ended = false): void {
    this.job = job;
    if (isFinal(job.state) && !ended) return;
    this.write(this.narrator.update(job));
  }

  private async follow(): Promise<void> {
    const signal = this.ac.signal;
    let lost = false;
    for (;;) {
      try {
        const conn = await this.broker.connection();
        for await (const { data, next } of conn.client.logs(this.jobId, this.offset, { follow: true, signal })) {
          if (!this.outputStarted) {
            this.outputStarted = true;
            // Say where it runs before its first line.
            this.narrate(await conn.client.get(this.jobId).catch(() => this.job));
          }
          if (lost) {
            this.write(statusLine(`reconnected; resuming at byte ${this.offset}`));
            lost = false;
          }
          this.write(this.encoder.write(data));
          this.onOutput(Buffer.from(data).toString('utf8'));
          this.offset = next;
        }
        this.write(this.encoder.end());
        await this.finish(conn);
        this.ended = true;
        return;
      } catch (err) {
        if (signal.aborted) return;
        if (!(err instanceof GpurunError && err.code === 'E_UNREACHABLE')) {
          this.log.error(`output of ${this.jobId}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
          this.write(statusLine(`cannot show the output: ${err instanceof Error ? err.message : String(err)}`, '\x1b[1;31m'));
          return;
        }
        if (!lost) {
          lost = true;
          this.log.warn(`lost the broker while following ${this.jobId} at byte ${this.offset}`);
          this.write(statusLine(`lost the broker at byte ${this.offset}; reconnecting…`));
        }
        await sleep(500, undefined, { signal }).catch(() => {});
        await this.broker.connection().then((c) => c.revive()).catch(() => {});
      }
    }
  }

  /** The output has ended: the job has (or is about to be) recorded final; print how it ended. */
  private async finish(conn: { client: { get(id: string): Promise<Job> } }): Promise<void> {
    let job = this.sync.jobs.get(this.jobId) ?? this.job;
    for (let i = 0; !isFinal(job.state) && i < 100 && !this.ac.signal.aborted; i++) {
      job = await conn.client.get(this.jobId).catch(() => job);
      if (!isFinal(job.state)) await sleep(100);
    }
    this.narrate(job, true);
  }

  /** A gpurun status line of this window's own (e.g. who serves the workspace); red with `error`. */
  say(text: string, error = false): void {
    this.write(error ? statusLine(text, '\x1b[1;31m') : statusLine(text));
  }

  handleInput(data: string): void {
    if (data !== '\x03') return;
    void (async () => {
      const job = this.sync.jobs.get(this.jobId) ?? this.job;
      if (isFinal(job.state)) return;
      // Choices say what they do; the safe one is first (what Enter picks), and Escape keeps the job too. (A modal
      // dialog makes its first button the Enter default only when it is not the close affordance, and then adds a
      // third "Cancel" button, the ambiguity this avoids.)
      const keep = { label: '$(play) Keep it running', description: 'closing this terminal also leaves the job running' };
      const stop = { label: '$(debug-stop) Stop the job', description: `cancel ${this.jobId}: its processes are stopped` };
      const pick = await vscode.window.showQuickPick([keep, stop], { title: `Stop job ${this.jobId} (${job.name})?`, placeHolder: 'Enter or Escape keeps it running' });
      if (pick !== stop) return;
      try {
        const conn = await this.broker.connection();
        this.sync.cancelledHere.add(this.jobId);
        await conn.client.cancel(this.jobId);
        this.write(statusLine(`cancelling job ${this.jobId}…`));
      } catch (err) {
        this.write(statusLine(`cancel failed: ${err instanceof Error ? err.message : String(err)}`, '\x1b[1;31m'));
      }
    })();
  }

  /** The terminal was closed: stop following; the job goes on. */
  close(): void {
    clearTimeout(this.quietTimer);
    this.ac.abort();
    this.sub?.dispose();
    this.onClosed();
  }
}

/** The terminals of this window, one per job. */
export class JobTerminals implements vscode.Disposable {
  private readonly open = new Map<string, { pty: JobTerminal; terminal: vscode.Terminal }>();
  private readonly broker: Broker;
  private readonly sync: JobSync;
  private readonly log: Log;
  /** Called when the set of open job terminals changes (to remember them across reloads). */
  onDidChange: (ids: string[]) => void = () => {};
  /** Output of a job whose terminal is open, as it comes. */
  onOutput: (jobId: string, text: string) => void = () => {};

  constructor(broker: Broker, sync: JobSync, log: Log) {
    this.broker = broker;
    this.sync = sync;
    this.log = log;
  }

  /** The job's terminal is the one in view (the active terminal of the panel). */
  inView(jobId: string): boolean {
    const have = this.open.get(jobId);
    return !!have && vscode.window.activeTerminal === have.terminal;
  }

  /**
   * Shows the job's terminal, creating it (output from offset 0) if there is none. With gpurun.reuseTerminals on, the
   * terminals of jobs that have ended are closed first: a new job takes their place instead of adding a tab.
   */
  show(job: Job, focus = true): vscode.Terminal {
    const have = this.open.get(job.id);
    if (have) {
      have.terminal.show(!focus);
      return have.terminal;
    }
    if (vscode.workspace.getConfiguration(SETTINGS_SECTION).get<boolean>(SETTINGS.reuseTerminals.key, SETTINGS.reuseTerminals.default)) {
      for (const [id, t] of this.open) {
        const j = this.sync.jobs.get(id);
        if (j && isFinal(j.state) && t.pty.ended) t.terminal.dispose();
      }
    }
    const pty = new JobTerminal(job, this.broker, this.sync, this.log);
    const terminal = vscode.window.createTerminal({ name: pty.name, pty, iconPath: new vscode.ThemeIcon('server-process') });
    this.open.set(job.id, { pty, terminal });
    pty.onClosed = () => {
      this.open.delete(job.id);
      this.onDidChange([...this.open.keys()]);
    };
    pty.onOutput = (text) => this.onOutput(job.id, text);
    pty.start();
    terminal.show(!focus);
    this.onDidChange([...this.open.keys()]);
    return terminal;
  }

  /** Writes a status line into the job's terminal; false when it has none open. */
  say(jobId: string, text: string, error = false): boolean {
    const have = this.open.get(jobId);
    have?.pty.say(text, error);
    return !!have;
  }

  dispose(): void {
    // The window is closing: keep the remembered list, so a reopened window reattaches these terminals.
    this.onDidChange = () => {};
    for (const { terminal } of this.open.values()) terminal.dispose();
    this.open.clear();
  }
}
