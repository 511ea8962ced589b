/**
 * What the two SSH-host runtimes share (runtimes/docker.ts, runtimes/sshProcess.ts): the job's workspace is mounted on
 * the host (hosts/mount.ts, either transport, or relayed to a client that serves it), the job's output is followed
 * over an SSH channel into the broker's log file from the byte the file already has (no gap and no repeat across a
 * broker restart), the mount is watched while the job runs, and on every way out the job's remains and its mount are
 * removed. A subclass says how its jobs start, end, stop and are removed; `wait()` is the same for both.
 */
import { closeSync, openSync, statSync, writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { GpurunError } from '../protocol/errors.ts';
import { CLIENT_WORKSPACE_WAIT_MS } from '../protocol/jobs.ts';
import type { ExitInfo, Lost, Runtime, StartSpec } from '../core/runtime.ts';
import type { SshHostConfig } from '../hosts/sshConfig.ts';
import type { RemoteExec } from '../hosts/ssh.ts';
import { mountPoint, type Mounts } from '../hosts/mount.ts';
import type { ClientWorkspaces } from '../hosts/clientWorkspaces.ts';

/** What the runtimes need from the SSH side of the registry. */
export interface SshHostLookup {
  config(host: string): SshHostConfig;
  exec(host: string): RemoteExec;
}

/** The part of a runtime ref that wait() needs: where the job runs, its mount, and the broker's log file for it. */
export interface MountedRef extends Record<string, unknown> {
  host: string;
  mnt: string;
  transport: 'direct' | 'relay';
  /** The broker's log file for the job (output is appended there). */
  logPath: string;
  /** Byte of the log file where this attempt's output begins (set by the host pool; absent = 0). */
  logOffset?: number;
}

/** How to follow a job's output: the command that prints it from some byte on, and how much of what it prints to drop. */
export interface FollowCommand {
  argv: string[];
  /** Bytes at the start of the command's output that the log file already has. */
  skip: number;
  /** Whether the command's stderr is part of the job's output (docker logs) or its own complaints (tail). */
  stderrIsOutput: boolean;
}

/** The state of a job on its host: still running, ended (how), or gone without a trace of how it ended. */
export type HostJobState = 'running' | ExitInfo | Lost;

export type RuntimeLog = (msg: string, fields?: Record<string, unknown>) => void;

export interface MountedRuntimeOptions {
  hosts: SshHostLookup;
  mounts: Mounts;
  brokerId: string;
  log: RuntimeLog;
  clients?: ClientWorkspaces;
}

/** The variables a job on an SSH host gets: its own and gpurun's, never the broker's environment. */
export function hostJobEnv(spec: StartSpec): Record<string, string> {
  const out: Record<string, string> = { ...spec.job.env };
  for (const k of ['PYTHONUNBUFFERED', 'CUDA_DEVICE_ORDER', 'GPURUN_JOB_ID']) if (spec.env[k] !== undefined) out[k] = spec.env[k];
  return out;
}

const CHECK_MS = 3_000;
/** A follow that ends sooner than this while the job still runs is not started again at once (no busy loop). */
const FOLLOW_MIN_MS = 1_000;

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

export abstract class MountedRuntime implements Runtime {
  abstract readonly kind: string;
  readonly mountsWorkspace = true;
  protected readonly hosts: SshHostLookup;
  protected readonly mounts: Mounts;
  protected readonly brokerId: string;
  protected readonly log: RuntimeLog;
  private readonly clients: ClientWorkspaces | undefined;

  constructor(opts: MountedRuntimeOptions) {
    this.hosts = opts.hosts;
    this.mounts = opts.mounts;
    this.brokerId = opts.brokerId;
    this.log = opts.log;
    this.clients = opts.clients;
  }

  abstract start(spec: StartSpec): Promise<MountedRef>;
  abstract stop(ref: Record<string, unknown>, graceMs: number): Promise<void>;
  /** The command that follows the job's output to its end, given how many bytes the log file has. */
  protected abstract followCommand(ref: MountedRef, logSize: number): FollowCommand;
  /** Where the job stands now. Rejects when the host cannot tell (unreachable): wait() tries again. */
  protected abstract state(ssh: RemoteExec, ref: MountedRef): Promise<HostJobState>;
  /** Stops the job at once (its workspace is gone), with a short grace. */
  protected abstract stopNow(ssh: RemoteExec, ref: MountedRef): Promise<void>;
  /** Removes what the job left on the host besides its mount (container, run directory, stray processes). */
  protected abstract remove(ssh: RemoteExec, ref: MountedRef): Promise<void>;

  /**
   * Mounts the job's workspace at its mount point on the host: by the host's transport, or relayed to the client
   * that serves it (`workspaceFrom: "client"`). Returns the mount point and the transport used.
   */
  protected async mountWorkspace(ssh: RemoteExec, cfg: SshHostConfig, job: StartSpec['job']): Promise<{ mnt: string; transport: 'direct' | 'relay' }> {
    const mnt = mountPoint(cfg.workDir, job.id);
    const clients = this.clients;
    if (job.workspaceFrom === 'client' && !clients) throw new GpurunError('E_CONFIG', 'this broker cannot relay client-served workspaces');
    const source = job.workspaceFrom === 'client' ? { fromClient: () => clients!.take(job.id, CLIENT_WORKSPACE_WAIT_MS) } : undefined;
    await this.mounts.mount(ssh, cfg.mount, job.workspace, mnt, (msg) => this.log(msg, { job: job.id }), source, job.owner);
    return { mnt, transport: source ? 'relay' : cfg.mount.transport };
  }

  /**
   * Follows the job to its end. Survives lost connections (it tries again until the host answers) and a broker
   * restart (the log file's size is the offset to resume from). Always cleans up: the job's remains, its mount.
   */
  async wait(ref: Record<string, unknown>, signal: AbortSignal): Promise<ExitInfo | Lost> {
    const r = ref as MountedRef;
    let workspaceLost: string | null = null;
    for (;;) {
      if (signal.aborted) throw signal.reason;
      try {
        const ssh = this.hosts.exec(r.host);
        const began = Date.now();
        const lost = await this.followOnce(ssh, r, signal);
        if (signal.aborted) throw signal.reason;
        if (lost && !workspaceLost) {
          workspaceLost = lost;
          this.log('workspace lost: stopping the job', { ...this.describe(r), why: lost });
          await this.stopNow(ssh, r);
        }
        const st = await this.state(ssh, r);
        if (st === 'running') {
          // The output stream broke (connection), the job still runs: follow again.
          if (Date.now() - began < FOLLOW_MIN_MS) await sleep(FOLLOW_MIN_MS, undefined, { signal }).catch(() => {});
          continue;
        }
        await this.cleanup(ssh, r);
        if (workspaceLost && !('lost' in st)) return { ...st, failure: `workspace_lost: ${workspaceLost}` };
        return st;
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        this.log('lost touch with a job on its host; trying again', { ...this.describe(r), err: (e as Error).message });
        await sleep(2_000, undefined, { signal }).catch(() => {});
      }
    }
  }

  /** The ref's fields for log lines (no paths of the developer's machine). */
  protected describe(r: MountedRef): Record<string, unknown> {
    const { logPath: _log, ...rest } = r;
    return rest;
  }

  /**
   * Appends the follow command's output to the log file from the byte the file ends at, until the stream ends.
   * Meanwhile checks the mount; returns why the workspace was lost, if it was (the caller stops the job).
   */
  private async followOnce(ssh: RemoteExec, r: MountedRef, signal: AbortSignal): Promise<string | null> {
    const f = this.followCommand(r, Math.max(0, fileSize(r.logPath) - (r.logOffset ?? 0)));
    let skip = f.skip;
    const fd = openSync(r.logPath, 'a');
    let lostWhy: string | null = null;
    try {
      const ch = await ssh.spawn(f.argv);
      let complaint = '';
      try {
        const closed = new Promise<void>((resolve) => ch.on('close', () => resolve()));
        const onData = (d: Buffer) => {
          if (skip >= d.length) {
            skip -= d.length;
            return;
          }
          writeSync(fd, skip ? d.subarray(skip) : d);
          skip = 0;
        };
        ch.on('data', onData);
        if (f.stderrIsOutput) ch.stderr.on('data', onData);
        else ch.stderr.on('data', (d: Buffer) => (complaint = (complaint + d.toString('utf8')).slice(-1000)));
        const abort = () => ch.close();
        signal.addEventListener('abort', abort);
        lostWhy = await this.watchMount(ssh, r, closed);
        signal.removeEventListener('abort', abort);
      } finally {
        if (lostWhy) ch.close();
      }
      if (complaint.trim()) this.log('following the output: the host said', { ...this.describe(r), stderr: complaint.trim() });
      return lostWhy;
    } finally {
      closeSync(fd);
    }
  }

  /** Until `closed` resolves: checks the mount every few seconds; resolves with why it was lost, or null. */
  private async watchMount(ssh: RemoteExec, r: MountedRef, closed: Promise<void>): Promise<string | null> {
    const relay = this.mounts.relay(r.mnt);
    let misses = 0;
    for (;;) {
      const ev = await Promise.race([
        closed.then(() => 'closed' as const),
        relay?.ended ? relay.ended.then((why) => ({ why })) : new Promise<never>(() => {}),
        sleep(CHECK_MS).then(() => 'check' as const),
      ]);
      if (ev === 'closed') return null;
      if (typeof ev === 'object') return ev.why;
      const ok = await this.mounts.alive(ssh, r.mnt).catch(() => true /* the host, not the mount, is unreachable */);
      misses = ok ? 0 : misses + 1;
      if (misses >= 2) {
        return r.transport === 'relay' && !relay ? 'the SFTP relay of this mount ended with the broker process that served it' : `the mount ${r.mnt} on ${r.host} is gone or does not answer`;
      }
    }
  }

  protected async cleanup(ssh: RemoteExec, r: MountedRef): Promise<void> {
    await this.remove(ssh, r);
    await this.unmount(ssh, r.mnt);
  }

  protected async unmount(ssh: RemoteExec, mnt: string): Promise<void> {
    await this.mounts.unmount(ssh, mnt).catch((e) => this.log('unmount failed', { mnt, err: (e as Error).message }));
  }

  /** Unmounts the mounts under the host's workDir that belong to no live job; returns the mount points removed. */
  protected async sweepMounts(ssh: RemoteExec, cfg: SshHostConfig, isLive: (jobId: string) => boolean): Promise<string[]> {
    const removed: string[] = [];
    const ls = await ssh.exec(['ls', '-1', `${cfg.workDir}/mnt`]);
    for (const jobId of ls.code === 0 ? ls.stdout.split('\n').map((s) => s.trim()).filter(Boolean) : []) {
      if (isLive(jobId)) continue;
      await this.mounts.unmount(ssh, mountPoint(cfg.workDir, jobId)).catch(() => {});
      removed.push(mountPoint(cfg.workDir, jobId));
    }
    return removed;
  }
}
