/**
 * Debug on GPU: a debug configuration type `gpurun` for launch.json and the Debug on GPU CodeLens. F5 submits the
 * program as a job under debugpy (core/debugLaunch.ts), waits for its ready line, forwards debugpy's port through
 * the broker (interactive/forwards.ts) and attaches VS Code's own debug client to it: debugpy speaks the Debug Adapter
 * Protocol on that port, so no Python extension is needed. Sources map between the job's folder (/workspace in a
 * container) and the local one. Ctrl+F5 (Run Without Debugging) submits the program as a plain job. Ending the debug
 * session ends the job.
 */
import { readFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, relative } from 'node:path';
import * as vscode from 'vscode';
import { GpurunError } from '../../server/protocol/errors.ts';
import { parseDirectives } from '../../server/protocol/directives.ts';
import { isFinal, type Job } from '../../server/protocol/jobs.ts';
import { COMMANDS } from '../contributions.ts';
import { buildSubmit, scriptCommand } from '../core/runRequest.ts';
import { DEBUG_PORT, debugpyCommand, debugState } from '../core/debugLaunch.ts';
import type { Forwards } from '../interactive/forwards.ts';
import { pythonCommand } from '../commands/runFile.ts';
import { register, showError, submitAndShow, type Ctx } from '../commands/common.ts';

export const DEBUG_TYPE = 'gpurun';

/** A `gpurun` launch configuration, as launch.json has it. */
interface GpuLaunch extends vscode.DebugConfiguration {
  program?: string;
  args?: string[];
  gpus?: number;
  gpuType?: string;
  python?: string;
  port?: number;
  justMyCode?: boolean;
  noDebug?: boolean;
}

export function registerDebug(ctx: Ctx, forwards: Forwards): void {
  const jobsOfSessions = new Map<string, string>();
  ctx.context.subscriptions.push(
    vscode.debug.registerDebugConfigurationProvider(DEBUG_TYPE, {
      provideDebugConfigurations: () => [defaultConfig()],
      resolveDebugConfiguration: (_folder, config) => (!config.type && !config.request && !config.name ? defaultConfig() : config),
      resolveDebugConfigurationWithSubstitutedVariables: async (folder, config) => {
        try {
          return await launch(ctx, forwards, folder, config as GpuLaunch);
        } catch (err) {
          await showError(ctx, err, 'Debug on GPU');
          return undefined;
        }
      },
    }),
    vscode.debug.registerDebugAdapterDescriptorFactory(DEBUG_TYPE, {
      createDebugAdapterDescriptor: (session) => {
        const c = session.configuration as GpuLaunch & { gpurunJob: string; gpurunLocalPort: number };
        jobsOfSessions.set(session.id, c.gpurunJob);
        return new vscode.DebugAdapterServer(c.gpurunLocalPort, '127.0.0.1');
      },
    }),
    // The debug session ended (stopped, or the program finished): a job still running is cancelled.
    vscode.debug.onDidTerminateDebugSession(async (s) => {
      const id = jobsOfSessions.get(s.id);
      if (!id) return;
      jobsOfSessions.delete(s.id);
      await new Promise((r) => setTimeout(r, 1000));
      if (isFinal(ctx.sync.jobs.get(id)?.state ?? 'running')) return;
      ctx.sync.cancelledHere.add(id);
      await (await ctx.broker.connection()).client.cancel(id).catch((e: unknown) => ctx.log.warn(`cancelling ${id} after its debug session: ${String(e)}`));
    }),
  );
  register(ctx, COMMANDS.debugFile.id, async (uri?: unknown) => {
    const target = uri instanceof vscode.Uri ? uri : vscode.window.activeTextEditor?.document.uri;
    if (!target) throw new GpurunError('E_BAD_REQUEST', 'no file is open', { hint: 'Open the script to debug.' });
    const folder = vscode.workspace.getWorkspaceFolder(target);
    await vscode.debug.startDebugging(folder, { type: DEBUG_TYPE, request: 'launch', name: `Debug ${basename(target.fsPath)} on GPU`, program: target.fsPath });
  });
}

function defaultConfig(): GpuLaunch {
  return { type: DEBUG_TYPE, request: 'launch', name: 'Debug on GPU', program: '${file}', gpus: 1 };
}

async function launch(ctx: Ctx, forwards: Forwards, folder: vscode.WorkspaceFolder | undefined, config: GpuLaunch): Promise<vscode.DebugConfiguration | undefined> {
  if (!config.program) throw new GpurunError('E_BAD_REQUEST', 'the launch configuration has no "program"', { hint: 'e.g. "program": "${file}"' });
  const program = config.program;
  const workspace = folder?.uri.fsPath ?? dirname(program);
  const rel = isAbsolute(program) ? relative(workspace, program) : program;
  if (rel.startsWith('..') || isAbsolute(rel)) throw new GpurunError('E_BAD_REQUEST', `${program} is outside the workspace ${workspace}`, { hint: 'The job sees the workspace folder only: debug a file inside it.' });
  const doc = vscode.workspace.textDocuments.find((d) => d.uri.fsPath === (isAbsolute(program) ? program : `${workspace}/${program}`));
  if (doc?.isDirty) await doc.save();
  const text = await readFile(isAbsolute(program) ? program : `${workspace}/${program}`, 'utf8').catch(() => '');
  const { directive } = parseDirectives(text);
  const python = config.python || pythonCommand();
  const args = Array.isArray(config.args) ? config.args.map(String) : [];
  const choice = config.gpus !== undefined ? { gpus: Number(config.gpus), ...(config.gpuType ? { gpuType: config.gpuType } : {}) } : undefined;
  if (config.noDebug) {
    // Run Without Debugging: the program as a plain job, its output in its terminal.
    await submitAndShow(ctx, buildSubmit({ command: scriptCommand(python, rel, args), workspace, directive, ...(choice ? { choice } : {}) }));
    return undefined;
  }
  const port = config.port ?? DEBUG_PORT;
  const job = await submitAndShow(ctx, buildSubmit({ command: debugpyCommand(python, rel, args, port), workspace, directive, ...(choice ? { choice } : {}), name: `debug ${basename(rel)}` }));
  const ready = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Debug on GPU: job ${job.id}`, cancellable: true },
    async (progress, cancel) => {
      progress.report({ message: 'waiting for the job to start debugpy…' });
      const ac = new AbortController();
      cancel.onCancellationRequested(() => ac.abort());
      return waitReady(ctx, job, ac.signal);
    },
  );
  if (!ready) {
    await (await ctx.broker.connection()).client.cancel(job.id).catch(() => {});
    return undefined;
  }
  const local = await forwards.local(job.id, ready.port);
  ctx.log.info(`debugging job ${job.id}: debugpy on port ${ready.port} there, 127.0.0.1:${local} here, ${ready.cwd} ↔ ${workspace}`);
  return {
    ...config,
    request: 'attach',
    gpurunJob: job.id,
    gpurunLocalPort: local,
    pathMappings: [{ localRoot: workspace, remoteRoot: ready.cwd }],
    justMyCode: config.justMyCode ?? true,
  };
}

/** Follows the job's output until debugpy's ready line; undefined when cancelled; an error when the job ends first. */
async function waitReady(ctx: Ctx, job: Job, signal: AbortSignal): Promise<{ port: number; cwd: string } | undefined> {
  const conn = await ctx.broker.connection();
  let text = '';
  try {
    for await (const { data } of conn.client.logs(job.id, 0, { follow: true, signal })) {
      text = (text + Buffer.from(data).toString('utf8')).slice(-64 * 1024);
      const st = debugState(text);
      if (st && 'ready' in st) return st.ready;
      if (st && 'missing' in st) throw new GpurunError('E_CONFIG', st.missing, { hint: 'Debug on GPU runs the program under debugpy in the job.' });
    }
  } catch (err) {
    if (signal.aborted) return undefined;
    throw err;
  }
  if (signal.aborted) return undefined;
  const end = await conn.client.get(job.id);
  throw new GpurunError('E_CONFLICT', `job ${job.id} ${end.state.replace('_', ' ')} before debugpy was ready: ${end.reason}`, { hint: 'Its output is in its terminal.' });
}
