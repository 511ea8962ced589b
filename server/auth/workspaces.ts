/**
 * The broker's side of workspace authority: which folders are the broker's own (never a workspace), and the check
 * the broker calls at submit and again at start (core/workspaceAuthority.ts decides; this file gives it the real
 * file system and the config). The embedded single-user broker checks nothing: its one user owns it all.
 */
import { realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { BrokerConfig } from '../config.ts';
import { authorizeWorkspace, type WorkspacePolicy } from '../core/workspaceAuthority.ts';

/** The data folder, the config's folder, the folders of every SSH key and known_hosts file, `~/.ssh`, staging areas. */
export function brokerOwnDirs(config: BrokerConfig): string[] {
  const dirs = new Set<string>([config.dataDir, config.configDir, join(homedir(), '.ssh')]);
  const target = (t: { identityFile?: string; knownHosts: string }) => {
    if (t.identityFile) dirs.add(dirname(t.identityFile));
    dirs.add(dirname(t.knownHosts));
  };
  for (const h of config.hosts) if (h.type === 'ssh') target(h);
  for (const c of config.clusters) {
    if (c.login !== 'local') target(c.login);
    dirs.add(c.stagingDir);
  }
  return [...dirs];
}

/** What a user may name: `(user, path) → real path`, or throws. Undefined for the embedded broker (no check). */
export type WorkspaceGate = (user: string, path: string) => string;

export function workspaceGate(config: BrokerConfig): WorkspaceGate | undefined {
  if (!config.team) return undefined;
  const policy: WorkspacePolicy = { roots: config.workspaceRoots, protectedDirs: brokerOwnDirs(config) };
  return (user, path) => authorizeWorkspace(user, path, policy, (p) => realpathSync.native(p));
}
