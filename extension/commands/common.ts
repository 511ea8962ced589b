/**
 * What every command shares: the objects it works with, the one wrapper that catches, logs the stack to the
 * "GPU Run" channel and shows the message with an action, and the job a command was invoked on.
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import * as vscode from 'vscode';
import { parseEnvFile } from '../../server/protocol/dotenv.ts';
import { GpurunError } from '../../server/protocol/errors.ts';
import type { Job, SubmitRequest } from '../../server/protocol/jobs.ts';
import type { Broker } from '../brokerClient.ts';
import { actionsFor, editorErrorText } from '../core/errors.ts';
import { jobScript } from '../core/format.ts';
import { COMMANDS, SETTINGS, SETTINGS_SECTION, VIEWS } from '../contributions.ts';
import type { JobSync } from '../jobSync.ts';
import type { Log } from '../log.ts';
import type { JobTerminals } from '../terminal/jobTerminal.ts';
import type { HostsTree } from '../views/hostsTree.ts';
import type { WorkspaceServers } from '../workspaceServer.ts';
import { resolveWorkspaceFrom } from '../core/workspaceFrom.ts';

export interface Ctx {
  context: vscode.ExtensionContext;
  broker: Broker;
  sync: JobSync;
  terminals: JobTerminals;
  hosts: HostsTree;
  workspaces: WorkspaceServers;
  log: Log;
}

/** Thrown when a person backs out of a picker: not an error. */
export class Cancelled extends Error {}

/** Error messages on screen now, by text: the same one is not shown twice at once. */
const shown = new Set<string>();

/** Shows an error with the action that fixes it; the stack goes to the log. */
export async function showError(ctx: Ctx, err: unknown, what: string): Promise<void> {
  ctx.log.error(`${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  const code = err instanceof GpurunError ? err.code : undefined;
  const embedded = !ctx.broker.url();
  const text = err instanceof GpurunError ? editorErrorText(err, embedded) : err instanceof Error ? err.message : String(err);
  if (shown.has(text)) return;
  shown.add(text);
  let pick: string | undefined;
  try {
    pick = await vscode.window.showErrorMessage(`GPU Run: ${text}`, ...actionsFor(code, embedded));
  } finally {
    shown.delete(text);
  }
  if (pick === 'Sign In') await vscode.commands.executeCommand(COMMANDS.signIn.id);
  else if (pick === 'Open Settings') await vscode.commands.executeCommand('workbench.action.openSettings', `${SETTINGS_SECTION}.${SETTINGS.brokerUrl.key}`);
  else if (pick === 'Show Log') ctx.log.show();
  else if (pick === 'Show Hosts') await vscode.commands.executeCommand(`${VIEWS.hosts}.focus`);
}

export function register(ctx: Ctx, id: string, fn: (...args: unknown[]) => Promise<unknown> | unknown): void {
  ctx.context.subscriptions.push(
    vscode.commands.registerCommand(id, async (...args: unknown[]) => {
      try {
        return await fn(...args);
      } catch (err) {
        if (err instanceof Cancelled) return;
        await showError(ctx, err, id);
      }
    }),
  );
}

/** The command was invoked on a row of the sidebar (an inline or context-menu action). */
export function fromTree(arg: unknown): boolean {
  return !!arg && typeof arg === 'object' && 'job' in arg;
}

/** The job a command is about: a tree node, a job id, or one the person picks from `filter`ed jobs. */
export async function jobArg(ctx: Ctx, arg: unknown, filter: (j: Job) => boolean, placeHolder: string): Promise<Job> {
  if (arg && typeof arg === 'object' && 'job' in arg) return (arg as { job: Job }).job;
  const conn = await ctx.broker.connection();
  if (typeof arg === 'string') return conn.client.get(arg);
  const jobs = ctx.sync.jobs.all().filter(filter).sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  if (!jobs.length) throw new GpurunError('E_NOT_FOUND', 'there is no job to pick');
  const pick = await vscode.window.showQuickPick(
    jobs.map((j) => ({ label: `${j.id} ${jobScript(j)}`, description: j.state, detail: j.command.join(' '), job: j })),
    { placeHolder },
  );
  if (!pick) throw new Cancelled();
  return pick.job;
}

/** Submits and opens the job's terminal; serves the workspace from here when the job takes it from the client. */
export async function submitAndShow(ctx: Ctx, req: SubmitRequest): Promise<Job> {
  const conn = await ctx.broker.connection();
  const setting = vscode.workspace.getConfiguration(SETTINGS_SECTION).get<string>(SETTINGS.workspaceFrom.key, SETTINGS.workspaceFrom.default);
  if (resolveWorkspaceFrom(setting, ctx.broker.url()) === 'client') req = { ...req, workspaceFrom: 'client' };
  if (conn.embedded) {
    // The local broker runs jobs with this environment, so the python3 of an activated venv is the one that runs.
    const env: Record<string, string> = { ...(req.env ?? {}) };
    for (const k of ['PATH', 'VIRTUAL_ENV', 'CONDA_PREFIX', 'PYTHONPATH']) if (process.env[k] !== undefined && env[k] === undefined) env[k] = process.env[k]!;
    req = { ...req, env };
  }
  req = { ...req, env: { ...(await settingsEnv(req.workspace)), ...(req.env ?? {}) } };
  if (!Object.keys(req.env!).length) delete req.env;
  const job = await conn.client.submit(req);
  ctx.log.info(`submitted ${job.id}: ${job.command.join(' ')} (${job.queue}, ${job.resources.gpus} GPU)`);
  ctx.sync.upsert(job);
  ctx.terminals.show(job);
  if (job.workspaceFrom === 'client') {
    await ctx.workspaces.serve(job, conn).catch(async (err: unknown) => {
      // The job cannot get its files without this window: it is not left to fail 30 s later.
      await conn.client.cancel(job.id).catch(() => {});
      throw err;
    });
  }
  return job;
}

/** The variables of the settings gpurun.envFile (a .env file) and gpurun.env (which wins), for every job. */
export async function settingsEnv(workspace: string): Promise<Record<string, string>> {
  const cfg = vscode.workspace.getConfiguration(SETTINGS_SECTION);
  const file = cfg.get<string>(SETTINGS.envFile.key, SETTINGS.envFile.default).trim();
  const env: Record<string, string> = {};
  if (file) {
    const path = isAbsolute(file) ? file : join(workspace, file);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      throw new GpurunError('E_CONFIG', `cannot read ${path}, the file of the setting gpurun.envFile: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint: 'Fix or clear the setting gpurun.envFile.' });
    }
    const r = parseEnvFile(text);
    if (r.errors.length) throw new GpurunError('E_CONFIG', `${path}:${r.errors[0].line}: ${r.errors[0].message}`, { hint: 'The file of gpurun.envFile has one NAME=VALUE per line; # starts a comment.' });
    Object.assign(env, r.env);
  }
  const fromSetting = cfg.get<Record<string, unknown>>(SETTINGS.env.key, SETTINGS.env.default) ?? {};
  for (const [k, v] of Object.entries(fromSetting)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== 'string') throw new GpurunError('E_CONFIG', `the setting gpurun.env has "${k}": names are letters, digits and _, values are strings`, { hint: 'Fix the setting gpurun.env.' });
    env[k] = v;
  }
  return env;
}
