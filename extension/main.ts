/** activate/deactivate only: builds the objects and registers them. */
import * as vscode from 'vscode';
import { Broker } from './brokerClient.ts';
import { RunLensProvider } from './codelens/runLens.ts';
import { DirectiveLanguageClient } from './lsp/languageClient.ts';
import { registerCancelJob } from './commands/cancelJob.ts';
import { registerDrainHost } from './commands/drainHost.ts';
import { registerMoveJob } from './commands/moveJob.ts';
import { registerAdminContext } from './adminContext.ts';
import { showError, type Ctx } from './commands/common.ts';
import { registerRefresh } from './commands/refresh.ts';
import { registerCache } from './commands/cache.ts';
import { registerRerunJob, registerRerunWithChanges } from './commands/rerunJob.ts';
import { registerRunFile } from './commands/runFile.ts';
import { registerRunWithOptions } from './commands/runWithOptions.ts';
import { registerShowOutput } from './commands/showOutput.ts';
import { registerSignIn } from './commands/signIn.ts';
import { registerJobsView } from './commands/jobsView.ts';
import { registerJobNotifier } from './jobNotifier.ts';
import { SETTINGS_SECTION, STATE, VIEWS } from './contributions.ts';
import { isFinal } from '../server/protocol/jobs.ts';
import { JobSync } from './jobSync.ts';
import { ConnectionNotice } from './connectionNotice.ts';
import { GpurunError } from '../server/protocol/errors.ts';
import { createLog } from './log.ts';
import { registerStatusBar } from './statusBar.ts';
import { JobTerminals } from './terminal/jobTerminal.ts';
import { HostsTree } from './views/hostsTree.ts';
import { registerIdleNotifier } from './idleNotifier.ts';
import { JobsTree } from './views/jobsTree.ts';
import { WorkspaceServers } from './workspaceServer.ts';
import { registerInteractive } from './commands/interactive.ts';
import { registerDebug } from './debug/gpuDebug.ts';
import { Forwards } from './interactive/forwards.ts';
import { findJobUrls } from './core/jobUrls.ts';

let active: { broker: Broker; sync: JobSync } | undefined;

/** What tests can read from the extension host (the same things the views show). */
export interface GpurunApi {
  jobs(): ReturnType<JobSync['jobs']['all']>;
}

export function activate(context: vscode.ExtensionContext): GpurunApi {
  const log = createLog();
  context.subscriptions.push(log);
  try {
    const broker = new Broker(context.extensionPath, context.secrets, log);
    const sync = new JobSync(broker, log);
    const terminals = new JobTerminals(broker, sync, log);
    const hosts = new HostsTree(broker, sync, log);
    const jobsTree = new JobsTree(sync, hosts);
    const workspaces = new WorkspaceServers(context.extensionPath, broker, terminals, log);
    context.subscriptions.push(broker, sync, terminals, hosts, jobsTree, workspaces);
    const ctx: Ctx = { context, broker, sync, terminals, hosts, workspaces, log };
    active = { broker, sync };

    context.subscriptions.push(
      vscode.window.createTreeView(VIEWS.jobs, { treeDataProvider: jobsTree, showCollapseAll: false }),
      vscode.window.createTreeView(VIEWS.hosts, { treeDataProvider: hosts }),
    );
    registerRunFile(ctx);
    registerRunWithOptions(ctx);
    registerCancelJob(ctx);
    registerMoveJob(ctx);
    registerDrainHost(ctx);
    registerAdminContext(context, broker, sync, log);
    registerShowOutput(ctx);
    registerRerunJob(ctx);
    registerRerunWithChanges(ctx);
    registerRefresh(ctx);
    registerCache(ctx);
    registerSignIn(ctx);
    registerJobsView(ctx);
    registerJobNotifier(ctx);
    registerIdleNotifier(ctx);
    registerStatusBar(context, sync);
    const forwards = new Forwards(broker, sync, log);
    context.subscriptions.push(forwards);
    registerInteractive(ctx, forwards);
    registerDebug(ctx, forwards);
    // A job that prints its own web address (TensorBoard, Jupyter, a demo server) gets an Open button.
    const tails = new Map<string, string>();
    terminals.onOutput = (id, text) => {
      const seen = (tails.get(id) ?? '') + text;
      tails.set(id, seen.slice(-300));
      for (const u of findJobUrls(seen)) if (!isFinal(sync.jobs.get(id)?.state ?? 'running')) forwards.offer(id, u);
    };

    const language = new DirectiveLanguageClient(context.extensionPath, broker, log);
    const lens = new RunLensProvider((uri) => language.estimate(uri));
    context.subscriptions.push(language, lens, vscode.languages.registerCodeLensProvider({ language: 'python' }, lens), language.onDidChangePool(() => lens.refresh()));
    void language.restart();

    // Errors of the event stream (broker down, token refused) are shown once, with the action that fixes them; a
    // broker that cannot be reached gets one notice, which closes when the connection is back.
    const notice = new ConnectionNotice();
    context.subscriptions.push(notice, sync.onDidChange(() => sync.state.kind === 'connected' && notice.close()));
    sync.onError = (err) => {
      if (err instanceof GpurunError && err.code === 'E_UNREACHABLE') {
        ctx.log.error(`connecting to the broker: ${err.stack ?? err.message}`);
        notice.show(err, !broker.url());
      } else void showError(ctx, err, 'connecting to the broker');
    };
    context.subscriptions.push(
      broker.onDidChange(() => {
        sync.restart();
        void language.restart();
      }),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration(`${SETTINGS_SECTION}.brokerUrl`) || e.affectsConfiguration(`${SETTINGS_SECTION}.localBrokerNode`)) broker.reset();
        if (e.affectsConfiguration(`${SETTINGS_SECTION}.codeLens`)) lens.refresh();
      }),
    );

    // Terminals open when the window last closed come back for jobs that still run (output from offset 0).
    terminals.onDidChange = (ids) => void context.workspaceState.update(STATE.openTerminals, ids);
    const reattach = context.workspaceState.get<string[]>(STATE.openTerminals) ?? [];
    if (reattach.length) {
      const once = sync.onDidChange(() => {
        if (sync.state.kind !== 'connected') return;
        once.dispose();
        for (const id of reattach) {
          const job = sync.jobs.get(id);
          if (job && !isFinal(job.state)) terminals.show(job, false);
        }
      });
      context.subscriptions.push(once);
    }

    sync.restart();
    void hosts.refresh();
    log.info(`GPU Run activated (VS Code ${vscode.version}, Node ${process.versions.node})`);
    return { jobs: () => sync.jobs.all() };
  } catch (err) {
    log.error(`activation failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    void vscode.window.showErrorMessage(`GPU Run failed to start: ${err instanceof Error ? err.message : String(err)}`, 'Show Log').then((p) => p && log.show());
    throw err;
  }
}

/** Stops the local broker this window started when no job of it is queued or running (jobs never depend on it). */
export async function deactivate(): Promise<void> {
  if (!active) return;
  const { broker, sync } = active;
  active = undefined;
  const c = sync.jobs.counts();
  await broker.stopLocalIfIdle(c.running + c.queued);
}
