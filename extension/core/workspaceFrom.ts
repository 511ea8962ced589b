/**
 * Who serves a job's workspace to the GPU host (the `gpurun.workspaceFrom` setting), and what the extension reads from
 * the `gpurun serve-workspace` child it runs when this window serves it. Pure.
 */
import type { WorkspaceFrom } from '../../server/protocol/jobs.ts';

/** The setting's values: `auto` decides from the broker in use. */
export type WorkspaceFromSetting = 'auto' | WorkspaceFrom;

/**
 * `auto`: a broker on this machine (the local default, or a `gpurun.brokerUrl` on a loopback address) reads the files
 * itself; a broker elsewhere usually cannot, so the client serves them. An unknown value counts as `auto`. (A remote
 * broker reached through a local port forward looks local: set `client` for it.)
 */
export function resolveWorkspaceFrom(setting: string | undefined, brokerUrl: string): WorkspaceFrom {
  if (setting === 'broker' || setting === 'client') return setting;
  return onThisMachine(brokerUrl) ? 'broker' : 'client';
}

/** Whether the broker URL names this machine: empty (the local broker), a Unix socket, or a loopback host. */
function onThisMachine(brokerUrl: string): boolean {
  const u = brokerUrl.trim();
  if (!u || u.startsWith('unix:') || u.startsWith('/')) return true;
  let host: string;
  try {
    host = new URL(u).hostname.toLowerCase();
  } catch {
    return false;
  }
  return host === 'localhost' || host.endsWith('.localhost') || /^127\.\d+\.\d+\.\d+$/.test(host) || host === '[::1]' || host === '::1';
}

/**
 * Argv (after the Node executable) and environment of the `gpurun serve-workspace` child. The broker address and the
 * token travel in the environment only: an argv shows in `ps` to every user of the machine.
 */
export function serveWorkspaceSpawn(
  cli: string,
  jobId: string,
  workspace: string,
  broker: { address: string; token?: string; fingerprint?: string },
  baseEnv: Record<string, string | undefined>,
): { args: string[]; env: Record<string, string | undefined> } {
  const env: Record<string, string | undefined> = { ...baseEnv, GPURUN_BROKER: broker.address };
  if (broker.token) env.GPURUN_TOKEN = broker.token;
  else delete env.GPURUN_TOKEN;
  if (broker.fingerprint) env.GPURUN_BROKER_FINGERPRINT = broker.fingerprint;
  else delete env.GPURUN_BROKER_FINGERPRINT;
  return { args: [cli, 'serve-workspace', jobId, '--workspace', workspace], env };
}

/** The host from the child's `gpurun: serving DIR to host H[ (read-only)]` line; undefined for any other line. */
export function servingHost(line: string): { host: string; readOnly: boolean } | undefined {
  const m = /^gpurun: serving .+ to host (\S+)( \(read-only\))?$/.exec(line.trimEnd());
  return m ? { host: m[1], readOnly: !!m[2] } : undefined;
}
