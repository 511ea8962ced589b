/**
 * How a host's row in the Hosts view is shown: its free GPUs, its state (or, while it drains, what its jobs do), and
 * the context value the menus pick Drain / Undrain by. Pure: views/hostsTree.ts maps this to a TreeItem.
 */
import { formatMemory } from '../../server/protocol/directives.ts';
import { drainWords, type HostInfo } from '../../server/protocol/jobs.ts';

export interface HostItemView {
  label: string;
  description: string;
  tooltip: string;
  /** A ThemeIcon id. */
  icon: string;
  /**
   * `host-up` (can be drained), `host-draining` (can be undrained), else `host-STATE`. package.json's menus show
   * Drain / Undrain by it, and only while `gpurun.isAdmin` is set.
   */
  contextValue: string;
}

/** The context value of a host row, by its state. */
export function hostContextValue(h: Pick<HostInfo, 'state'>): string {
  return `host-${h.state}`;
}

/** What a host's row shows: "3/4 GPUs free · up", or "… · draining: 2 jobs moving, 1 running". */
export function hostItem(h: HostInfo): HostItemView {
  const used = h.gpus.filter((g) => g.jobId).length;
  const state = h.drain ? drainWords(h.drain) : h.state;
  return {
    label: h.name,
    description: `${h.gpus.length - used}/${h.gpus.length} GPUs free · ${state}`,
    tooltip: `${h.name} (${h.runtime}, ${state})\nCPUs ${h.cpus - h.cpusUsed}/${h.cpus} free · memory ${formatMemory(h.memoryMiB - h.memoryUsedMiB)}/${formatMemory(h.memoryMiB)} free${h.lastError ? `\n${h.lastError}` : ''}`,
    icon: h.state === 'up' ? 'server' : h.state === 'draining' ? 'debug-pause' : 'debug-disconnect',
    contextValue: hostContextValue(h),
  };
}

/** One choice of Move Job…: `to` absent lets the broker pick. */
export interface MoveTarget {
  label: string;
  description: string;
  to?: string;
}

/**
 * Where Move Job… offers to move a job: any host (the broker picks), then each host that is up, except the one the
 * job runs on (a draining or down host takes no jobs).
 */
export function moveTargets(jobHost: string | null, hosts: HostInfo[]): MoveTarget[] {
  const up = hosts.filter((h) => h.state === 'up' && h.name !== jobHost);
  return [
    { label: 'any host', description: 'the broker picks' },
    ...up.map((h) => ({ label: h.name, description: hostItem(h).description, to: h.name })),
  ];
}
