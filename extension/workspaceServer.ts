/**
 * Serves the workspace of this window's client-served jobs (`workspaceFrom: "client"`): one `gpurun serve-workspace
 * ID` child per job, the CLI bundled in the .vsix run by the same Node as the local broker. It ends by itself when
 * the job ends; all are stopped when the extension deactivates. What the child says goes to the log; its "serving …
 * to host H" line and a failure go to the job's terminal.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import * as vscode from 'vscode';
import type { Job } from '../server/protocol/jobs.ts';
import type { Broker, Connection } from './brokerClient.ts';
import { serveWorkspaceSpawn, servingHost } from './core/workspaceFrom.ts';
import type { Log } from './log.ts';
import type { JobTerminals } from './terminal/jobTerminal.ts';

export class WorkspaceServers implements vscode.Disposable {
  private readonly children = new Map<string, ChildProcess>();
  private readonly extensionPath: string;
  private readonly broker: Broker;
  private readonly terminals: JobTerminals;
  private readonly log: Log;

  constructor(extensionPath: string, broker: Broker, terminals: JobTerminals, log: Log) {
    this.extensionPath = extensionPath;
    this.broker = broker;
    this.terminals = terminals;
    this.log = log;
  }

  /** Starts serving `job`'s workspace (its `workspace` folder) through the broker of `conn`. */
  async serve(job: Job, conn: Connection): Promise<void> {
    if (this.children.has(job.id)) return;
    const node = await this.broker.node();
    const { args, env } = serveWorkspaceSpawn(join(this.extensionPath, 'dist', 'cli.js'), job.id, job.workspace, { address: conn.address, ...(conn.client.opts.token ? { token: conn.client.opts.token } : {}), ...(conn.client.opts.fingerprint ? { fingerprint: conn.client.opts.fingerprint } : {}) }, process.env);
    this.log.info(`${job.id}: serving its workspace: ${node.path} ${args.join(' ')}`);
    const child = spawn(node.path, args, { env: { ...env, ...node.env }, stdio: ['ignore', 'ignore', 'pipe'] });
    this.children.set(job.id, child);
    let last = '';
    createInterface({ input: child.stderr! }).on('line', (line) => {
      this.log.info(`${job.id}: serve-workspace: ${line}`);
      if (/^gpurun: (error|unexpected error):/.test(line)) last = line.replace(/^gpurun: (unexpected )?error: /, '');
      const s = servingHost(line);
      if (s) this.tell(job.id, `serving the workspace to host ${s.host}${s.readOnly ? ' (read-only)' : ''}`);
    });
    child.on('error', (err) => {
      last = err.message;
      this.log.error(`${job.id}: could not start serve-workspace: ${err.stack ?? err.message}`);
    });
    child.on('close', (code, signal) => {
      this.children.delete(job.id);
      if (code === 0) {
        this.log.info(`${job.id}: stopped serving its workspace (the job has ended)`);
        return;
      }
      this.log.error(`${job.id}: serve-workspace ended with ${signal ?? `exit code ${code}`}${last ? `: ${last}` : ''}`);
      if (signal !== 'SIGTERM') this.tell(job.id, `could not serve the workspace: ${last || `exit code ${code}`}`, true);
    });
  }

  /** In the job's terminal when it is open, else as a status bar message. */
  private tell(jobId: string, text: string, error = false): void {
    if (this.terminals.say(jobId, text, error)) return;
    if (error) void vscode.window.showErrorMessage(`GPU Run: job ${jobId}: ${text}`);
    else vscode.window.setStatusBarMessage(`GPU Run: job ${jobId}: ${text}`, 10_000);
  }

  dispose(): void {
    for (const [id, child] of this.children) {
      this.log.info(`${id}: stopping serve-workspace (the window is closing)`);
      child.kill('SIGTERM');
    }
    this.children.clear();
  }
}
