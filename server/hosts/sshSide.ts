/**
 * Wiring of the SSH side for main.ts: the SSH hosts, their runtimes (docker, ssh-process), and the periodic orphan
 * sweep of both. Empty (no connections, no timers) when the config has no host of type "ssh".
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import type { BrokerConfig } from '../config.ts';
import type { Runtime } from '../core/runtime.ts';
import type { Logger } from '../logger.ts';
import { SshHosts } from './sshHosts.ts';
import type { SshHostConfig } from './sshConfig.ts';
import { Mounts } from './mount.ts';
import { DockerRuntime } from '../runtimes/docker.ts';
import { SshProcessRuntime } from '../runtimes/sshProcess.ts';
import { ClientWorkspaces } from './clientWorkspaces.ts';
import type { QuarantineKeeper } from './health.ts';

const SWEEP_MS = 60_000;
/** A failed sweep of a host is tried again after SWEEP_RETRY_MS, up to SWEEP_TRIES tries in all per round. */
const SWEEP_RETRY_MS = 5_000;
const SWEEP_TRIES = 3;

export interface SshSide {
  ssh: SshHosts | undefined;
  runtimes: Record<string, Runtime>;
  /** Client-served workspace streams (`GET /v1/jobs/ID/workspace`); undefined without SSH hosts. */
  clientWorkspaces: ClientWorkspaces | undefined;
  /** Starts removing containers, run directories and mounts of this broker that belong to no live job (now, then every minute). */
  startSweeps(isLive: (jobId: string) => boolean): void;
  close(): void;
}

/** Identifies this broker's containers on shared hosts: the machine and the data folder. */
export function brokerId(dataDir: string): string {
  return createHash('sha256').update(`${hostname()}:${dataDir}`).digest('hex').slice(0, 12);
}

/** `quarantines`: where GPU quarantines are kept across restarts (the broker's store). */
export function createSshSide(config: BrokerConfig, log: Logger, quarantines?: QuarantineKeeper): SshSide {
  const sshConfigs = config.hosts.filter((h): h is SshHostConfig => h.type === 'ssh');
  if (sshConfigs.length === 0) return { ssh: undefined, runtimes: {}, clientWorkspaces: undefined, startSweeps() {}, close() {} };
  const hlog = log.child({ part: 'hosts' });
  const ssh = new SshHosts(sshConfigs, { hostLostAfterMs: config.hostLostAfterMs, log: (msg, fields) => hlog.warn(msg, fields), ...(quarantines ? { quarantines } : {}) });
  ssh.startHealth();
  const clientWorkspaces = new ClientWorkspaces();
  const mounts = new Mounts();
  ssh.workspaceNote = (host) => mounts.snapshotState(host);
  const common = { hosts: ssh, mounts, brokerId: brokerId(config.dataDir), clients: clientWorkspaces };
  const dlog = log.child({ part: 'docker' });
  const docker = new DockerRuntime({ ...common, ...(config.defaults.image ? { defaultImage: config.defaults.image } : {}), pidsLimit: config.containers.pidsLimit, cache: config.cache, log: (msg, fields) => dlog.info(msg, fields) });
  const plog = log.child({ part: 'ssh-process' });
  const processes = new SshProcessRuntime({ ...common, log: (msg, fields) => plog.info(msg, fields) });
  const sweepers = { docker: { rt: docker, log: dlog }, process: { rt: processes, log: plog } };
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const retries = new Set<NodeJS.Timeout>();
  return {
    ssh,
    runtimes: { [docker.kind]: docker, [processes.kind]: processes },
    clientWorkspaces,
    startSweeps(isLive) {
      // A sweep that fails (the host not reachable yet after a restart) is tried again soon, a few times, rather
      // than leaving a crash's orphans until the next round.
      const sweepHost = (h: (typeof sshConfigs)[number], tries: number) => {
        const { rt, log: rlog } = sweepers[h.runtime];
        rt.sweep(h.name, isLive).then(
          (removed) => removed.length && rlog.info('removed orphans', { host: h.name, removed }),
          (err) => {
            rlog.warn('orphan sweep failed', { host: h.name, err: (err as Error).message, ...(tries < SWEEP_TRIES ? { retryInMs: SWEEP_RETRY_MS } : {}) });
            if (tries >= SWEEP_TRIES || closed) return;
            const t: NodeJS.Timeout = setTimeout(() => {
              retries.delete(t);
              sweepHost(h, tries + 1);
            }, SWEEP_RETRY_MS).unref();
            retries.add(t);
          },
        );
      };
      const sweep = () => {
        for (const h of sshConfigs) sweepHost(h, 1);
      };
      sweep();
      timer = setInterval(sweep, SWEEP_MS);
      timer.unref();
    },
    close() {
      closed = true;
      clearInterval(timer);
      for (const t of retries) clearTimeout(t);
      ssh.close();
    },
  };
}
