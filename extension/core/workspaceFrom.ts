/**
 * Who serves a job's workspace to the GPU host (the `gpurun.workspaceFrom` setting), and what the extension reads from
 * the `gpurun serve-workspace` child it runs when this window serves it. Pure.
 */
import type { WorkspaceFrom } from '../../server/protocol/jobs.ts';

/** The setting's values: `auto` decides from the broker in use. */
export type WorkspaceFromSetting = 'auto' | WorkspaceFrom;

/**
 * `auto`: a team broker (`gpurun.brokerUrl` set) usually runs on another machine and cannot read this one's files, so
 * the client serves them; the local broker (embedded default) reads them itself. An unknown value counts as `auto`.
 */
export function resolveWorkspaceFrom(setting: string | undefined, brokerUrl: string): WorkspaceFrom {
  if (setting === 'broker' || setting === 'client') return setting;
  return brokerUrl.trim() ? 'client' : 'broker';
}

/**
 * Argv (after the Node executable) and environment of the `gpurun serve-workspace` child. The broker address and the
 * token travel in the environment only: an argv shows in `ps` to every user of the machine.
 */
export function serveWorkspaceSpawn(
  cli: string,
  jobId: string,
  workspace: string,
  broker: { address: string; token?: string },
  baseEnv: Record<string, string | undefined>,
): { args: string[]; env: Record<string, string | undefined> } {
  const env: Record<string, string | undefined> = { ...baseEnv, GPURUN_BROKER: broker.address };
  if (broker.token) env.GPURUN_TOKEN = broker.token;
  else delete env.GPURUN_TOKEN;
  return { args: [cli, 'serve-workspace', jobId, '--workspace', workspace], env };
}

/** The host from the child's `gpurun: serving DIR to host H[ (read-only)]` line; undefined for any other line. */
export function servingHost(line: string): { host: string; readOnly: boolean } | undefined {
  const m = /^gpurun: serving .+ to host (\S+)( \(read-only\))?$/.exec(line.trimEnd());
  return m ? { host: m[1], readOnly: !!m[2] } : undefined;
}
