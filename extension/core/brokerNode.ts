/**
 * Which executable runs the local broker (it needs node:sqlite, Node ≥ 22.5). In code-server the extension host is
 * plain Node; in desktop VS Code it is Electron, which runs as Node with ELECTRON_RUN_AS_NODE=1. A setting names
 * another Node. Pure: decides from versions; the caller checks the candidates.
 */
export const MIN_BROKER_NODE = [22, 5] as const;

export function nodeVersionOk(version: string): boolean {
  const [maj, min] = version.replace(/^v/, '').split('.').map(Number);
  return maj > MIN_BROKER_NODE[0] || (maj === MIN_BROKER_NODE[0] && min >= MIN_BROKER_NODE[1]);
}

export interface NodeCandidate {
  path: string;
  /** Node version it runs, e.g. "24.21.0"; undefined when unknown. */
  version?: string;
  /** Extra environment it needs (Electron: ELECTRON_RUN_AS_NODE=1). */
  env?: Record<string, string>;
}

/**
 * The host's own runtime (process.execPath, Electron-aware), then the configured one: the first new enough wins.
 * A configured path with an unknown version is trusted. Returns undefined when none qualifies.
 */
export function pickBrokerNode(host: { execPath: string; nodeVersion: string; electron: boolean }, configured: string | undefined): NodeCandidate | undefined {
  if (configured) return { path: configured };
  if (nodeVersionOk(host.nodeVersion)) return { path: host.execPath, version: host.nodeVersion, ...(host.electron ? { env: { ELECTRON_RUN_AS_NODE: '1' } } : {}) };
  return undefined;
}
