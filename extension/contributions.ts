/**
 * Every command id, view id and setting name of the extension, typed, in one place. package.json's `contributes`
 * must say the same (a unit test compares them).
 */
import type { WorkspaceFromSetting } from './core/workspaceFrom.ts';

export const COMMANDS = {
  runCurrentFile: { id: 'gpurun.runCurrentFile', title: 'Run Current File on GPU', icon: '$(play)' },
  runWithOptions: { id: 'gpurun.runWithOptions', title: 'Run on GPU…', icon: '$(run-all)' },
  cancelJob: { id: 'gpurun.cancelJob', title: 'Cancel Job', icon: '$(debug-stop)' },
  showOutput: { id: 'gpurun.showOutput', title: 'Show Job Output', icon: '$(output)' },
  rerunJob: { id: 'gpurun.rerunJob', title: 'Rerun Job', icon: '$(debug-restart)' },
  rerunWithChanges: { id: 'gpurun.rerunWithChanges', title: 'Rerun with Changes…', icon: '$(edit)' },
  refresh: { id: 'gpurun.refresh', title: 'Refresh', icon: '$(refresh)' },
  signIn: { id: 'gpurun.signIn', title: 'Sign In', icon: '$(sign-in)' },
  signOut: { id: 'gpurun.signOut', title: 'Sign Out', icon: '$(sign-out)' },
  showLog: { id: 'gpurun.showLog', title: 'Show Log', icon: '$(list-flat)' },
  filterJobs: { id: 'gpurun.filterJobs', title: 'Filter Jobs…', icon: '$(filter)' },
  clearFinished: { id: 'gpurun.clearFinished', title: 'Clear Finished Jobs', icon: '$(clear-all)' },
  openTerminalOnGpu: { id: 'gpurun.openTerminalOnGpu', title: 'Open Terminal on GPU', icon: '$(terminal)' },
  openTerminalInJob: { id: 'gpurun.openTerminalInJob', title: 'Open Terminal in Job', icon: '$(terminal)' },
  forwardPort: { id: 'gpurun.forwardPort', title: 'Forward Port…', icon: '$(plug)' },
  debugFile: { id: 'gpurun.debugFile', title: 'Debug Current File on GPU', icon: '$(debug-alt)' },
  showCache: { id: 'gpurun.showCache', title: 'Cache', icon: '$(database)' },
  drainHost: { id: 'gpurun.drainHost', title: 'Drain Host', icon: '$(debug-pause)' },
  undrainHost: { id: 'gpurun.undrainHost', title: 'Undrain Host', icon: '$(debug-continue)' },
  moveJob: { id: 'gpurun.moveJob', title: 'Move Job…', icon: '$(arrow-swap)' },
} as const;

export type CommandKey = keyof typeof COMMANDS;
export const CATEGORY = 'GPU Run';

export const VIEWS = {
  container: 'gpurun',
  jobs: 'gpurun.jobs',
  hosts: 'gpurun.hosts',
} as const;

/** Context keys the extension sets for package.json's `when` clauses. */
export const CONTEXT_KEYS = {
  /** The signed-in user is a broker admin (GET /v1/whoami): the Hosts view offers Drain / Undrain. */
  isAdmin: 'gpurun.isAdmin',
} as const;

/** The command that opens the sidebar (VS Code makes one per view container). */
export const OPEN_SIDEBAR = `workbench.view.extension.${VIEWS.container}`;

/** Setting names under the `gpurun.` section, with their types. */
export interface Settings {
  /** Team broker address (http://host:8750); empty = the local broker started by the extension. */
  brokerUrl: string;
  /** The Python the run buttons use. */
  pythonCommand: string;
  /** Node ≥ 22.5 that runs the local broker; empty = VS Code's own runtime. */
  localBrokerNode: string;
  /** Show the run buttons over Python entry points. */
  codeLensEnabled: boolean;
  /** Who serves the workspace to the GPU host; `auto` = `client` with a brokerUrl, else `broker` (core/workspaceFrom). */
  workspaceFrom: WorkspaceFromSetting;
  /** Variables set in every job run from this editor (NAME → value). */
  env: Record<string, string>;
  /** A .env file (workspace-relative or absolute) whose variables every job gets; `env` wins. Empty: none. */
  envFile: string;
  /** When a job ends: a notification when its terminal is not in view (`whenHidden`), `always`, or `never`. */
  notifyOnEnd: 'whenHidden' | 'always' | 'never';
  /** A new job's terminal replaces the terminals of jobs that have ended, instead of adding a tab. */
  reuseTerminals: boolean;
  /** How long a running job's GPUs sit at 0 % before the sidebar and a notification say so ("10m"; "off": never). */
  idleGpuWarning: string;
  /** SHA-256 fingerprint of an https team broker's self-signed certificate; empty = trust on first use (a prompt). */
  brokerFingerprint: string;
}

export const SETTINGS: { readonly [K in keyof Settings]: { key: string; default: Settings[K] } } = {
  brokerUrl: { key: 'brokerUrl', default: '' },
  pythonCommand: { key: 'pythonCommand', default: 'python3' },
  localBrokerNode: { key: 'localBrokerNode', default: '' },
  codeLensEnabled: { key: 'codeLens.enabled', default: true },
  workspaceFrom: { key: 'workspaceFrom', default: 'auto' },
  env: { key: 'env', default: {} },
  envFile: { key: 'envFile', default: '' },
  notifyOnEnd: { key: 'notifyOnEnd', default: 'whenHidden' },
  reuseTerminals: { key: 'reuseTerminals', default: true },
  idleGpuWarning: { key: 'idleGpuWarning', default: '10m' },
  brokerFingerprint: { key: 'brokerFingerprint', default: '' },
};

export const SETTINGS_SECTION = 'gpurun';
export const LOG_CHANNEL = 'GPU Run';
/** SecretStorage key of the token for a broker URL. */
export const tokenKey = (url: string): string => `gpurun.token:${url}`;
/** workspaceState keys. */
export const STATE = {
  lastRun: 'gpurun.lastRun',
  openTerminals: 'gpurun.openTerminals',
  clearedBefore: 'gpurun.clearedBefore',
} as const;
