/**
 * Working in a job from the editor, through the broker (no SSH from this machine):
 * - Open Terminal on GPU: an interactive job whose command is a shell in this terminal (as `gpurun shell`): it holds
 *   its GPUs while the terminal is open; exiting the shell or closing the terminal ends the job and frees them.
 * - Open Terminal in Job: a shell in a running job (its container, GPUs and /workspace), as `gpurun exec -it`.
 * - Forward Port…: a port of a running job on this machine's 127.0.0.1, opened in the browser.
 */
import * as vscode from 'vscode';
import { GpurunError } from '../../server/protocol/errors.ts';
import { holdCommand, holdRunCommand, SHELL_COMMAND } from '../../server/protocol/interactiveJob.ts';
import { isFinal, type Job } from '../../server/protocol/jobs.ts';
import { COMMANDS } from '../contributions.ts';
import { ExecTerminal, type ExecTarget } from '../terminal/execTerminal.ts';
import type { Forwards } from '../interactive/forwards.ts';
import { jobArg, register, settingsEnv, type Ctx } from './common.ts';

const POLL_MS = 500;

export function registerInteractive(ctx: Ctx, forwards: Forwards): void {
  register(ctx, COMMANDS.openTerminalOnGpu.id, async () => {
    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) throw new GpurunError('E_BAD_REQUEST', 'no folder is open', { hint: 'Open the folder the job should see as /workspace.' });
    let job: Job | undefined;
    const pty = new ExecTerminal(ctx.broker, ctx.log, async (say) => {
      const conn = await ctx.broker.connection();
      const env = await settingsEnv(folder.uri.fsPath);
      job = await conn.client.submit({ command: holdCommand(SHELL_COMMAND), workspace: folder.uri.fsPath, gpus: 1, name: 'terminal', ...(Object.keys(env).length ? { env } : {}) });
      ctx.sync.upsert(job);
      say(`job ${job.id} submitted: a shell on a GPU host; closing this terminal ends the job`);
      let said = '';
      while (job.state === 'queued' || job.state === 'starting') {
        if (job.reason && job.reason !== said) say(`${job.state}: ${(said = job.reason)}`);
        await new Promise((r) => setTimeout(r, POLL_MS));
        job = await conn.client.get(job.id);
      }
      if (isFinal(job.state)) throw new GpurunError('E_CONFLICT', `job ${job.id} ${job.state.replace('_', ' ')} before the terminal could attach: ${job.reason}`);
      say(`running on ${job.host} (${job.gpuIndices.length ? `GPU ${job.gpuIndices.join(',')}` : 'no GPU'})`);
      return { jobId: job.id, command: holdRunCommand(job.id, SHELL_COMMAND), log: true };
    });
    // Closed by the person: the job is cancelled (its GPUs are free at once), then the shell gets a hang-up.
    pty.onClosed = async () => {
      if (!job || isFinal(job.state)) return;
      const id = job.id;
      ctx.sync.cancelledHere.add(id);
      await ctx.broker.connection().then((c) => c.client.cancel(id)).then((j) => ctx.sync.upsert(j), (e: unknown) => ctx.log.warn(`cancelling ${id} after its terminal closed: ${String(e)}`));
    };
    vscode.window.createTerminal({ name: 'GPU shell', pty, iconPath: new vscode.ThemeIcon('terminal') }).show();
  });

  register(ctx, COMMANDS.openTerminalInJob.id, async (arg?: unknown) => {
    const job = await jobArg(ctx, arg, (j) => j.state === 'running', 'Job to open a terminal in');
    if (job.state !== 'running') throw new GpurunError('E_CONFLICT', `job ${job.id} is ${job.state.replace('_', ' ')}, not running`);
    const target: ExecTarget = { jobId: job.id, command: SHELL_COMMAND };
    const pty = new ExecTerminal(ctx.broker, ctx.log, async () => target);
    vscode.window.createTerminal({ name: `shell in ${job.id}`, pty, iconPath: new vscode.ThemeIcon('terminal') }).show();
  });

  register(ctx, COMMANDS.forwardPort.id, async (arg?: unknown) => {
    const job = await jobArg(ctx, arg, (j) => j.state === 'running', 'Job whose port to forward');
    const text = await vscode.window.showInputBox({
      title: `Forward a port of job ${job.id}`,
      prompt: 'The port the job listens on (e.g. 6006 for TensorBoard, 8888 for Jupyter)',
      value: forwards.lastPort(job.id)?.toString() ?? '',
      validateInput: (v) => (portOf(v) ? undefined : 'a port number from 1 to 65535'),
    });
    if (text === undefined) return;
    const port = portOf(text)!;
    const local = await forwards.local(job.id, port);
    const pick = await vscode.window.showInformationMessage(`Port ${port} of job ${job.id} is forwarded to 127.0.0.1:${local}.`, 'Open in Browser');
    if (pick) await forwards.openInBrowser(job.id, { port, path: '/' });
  });
}

/** A port number typed by a person (1 to 65535), or undefined. */
function portOf(text: string): number | undefined {
  const t = text.trim();
  const n = Number(t);
  return /^\d{1,5}$/.test(t) && n >= 1 && n <= 65535 ? n : undefined;
}
