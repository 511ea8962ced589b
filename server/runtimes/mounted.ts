/**
 * What the two SSH-host runtimes share (runtimes/docker.ts, runtimes/sshProcess.ts): the job's workspace is mounted on
 * the host (hosts/mount.ts, either transport, or relayed to a client that serves it), the job's output is followed
 * over an SSH channel into the broker's log file from the byte the file already has (no gap and no repeat across a
 * broker restart), the mount is watched while the job runs, and on every way out the job's remains and its mount are
 * removed. A subclass says how its jobs start, end, stop and are removed; `wait()` is the same for both.
 */
import { closeSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import type { ClientChannel } from 'ssh2';
import { setTimeout as sleep } from 'node:timers/promises';
import { GpurunError } from '../protocol/errors.ts';
import { CLIENT_WORKSPACE_WAIT_MS } from '../protocol/jobs.ts';
import type { Evidence, ExitInfo, GpuFaultEvidence, Lost, Runtime, StartSpec } from '../core/runtime.ts';
import { rebooted, unreachableSec, type HostReach } from '../core/hostHealth.ts';
import type { GpuEvent } from '../hosts/health.ts';
import type { SshHostConfig } from '../hosts/sshConfig.ts';
import { onExit, type RemoteExec } from '../hosts/ssh.ts';
import { mountPoint, mountsDir, type Mounts } from '../hosts/mount.ts';
import { expireCachesArgs } from '../hosts/snapshot.ts';
import type { ClientWorkspaces } from '../hosts/clientWorkspaces.ts';
import { withoutReserved } from '../core/jobEnv.ts';

/** What the runtimes need from the SSH side of the registry. */
export interface SshHostLookup {
  config(host: string): SshHostConfig;
  exec(host: string): RemoteExec;
  /** Whether the host answers its health checks, since when it does not, and its boot id (hosts/health.ts). */
  reach(host: string): HostReach;
  /** GPU fault events on the given GPUs of the host that were seen since `sinceIso`. */
  gpuEvents(host: string, gpus: readonly number[], sinceIso: string): GpuEvent[];
  /** The host's quarantined GPUs. */
  quarantined(host: string): ReadonlyMap<number, unknown>;
  /** Checks the host's health now (boot id, GPUs); resolves when done, whatever it found. */
  checkHealth(host: string): Promise<void>;
}

/** The part of a runtime ref that wait() needs: where the job runs, its mount, and the broker's log file for it. */
export interface MountedRef extends Record<string, unknown> {
  host: string;
  mnt: string;
  transport: 'direct' | 'relay';
  /** The broker's log file for the job (output is appended there). */
  logPath: string;
  /** The job's GPUs on the host (absent on refs stored by older brokers: no GPU checks then). */
  gpus?: number[];
  /** The host's boot id when the job started (absent when unknown): another one later means it rebooted. */
  bootId?: string;
  /** When the job started (ISO): GPU events before it are not the job's. */
  startedAt?: string;
  /** Byte of the log file where this attempt's output begins (set by the host pool; absent = 0). */
  logOffset?: number;
  /** The job's workspace (on the developer's machine): what a later broker needs to take over a snapshot mount. */
  workspace?: string;
}

/** How to follow a job's output: the command that prints it from some byte on, and how much of what it prints to drop. */
export interface FollowCommand {
  argv: string[];
  /** Bytes at the start of the command's output that the log file already has. */
  skip: number;
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
  const out: Record<string, string> = withoutReserved(spec.job.env);
  // gpurun's own (GPURUN_JOB_ID, GPURUN_ATTEMPT, …); the GPU variables come from the runtime's gpuSettings.
  for (const [k, v] of Object.entries(spec.env)) if (k === 'PYTHONUNBUFFERED' || k === 'CUDA_DEVICE_ORDER' || (k.startsWith('GPURUN_') && k !== 'GPURUN_GPUS')) out[k] = v;
  return out;
}

const CHECK_MS = 3_000;
/** Starts run at once on one host at most; more wait their turn (startSlot). */
const START_SLOTS = 6;
/** How long a stopped job's output stream may take to end by itself before it is closed and drained. */
const STREAM_END_MS = 15_000;
/** Bytes compared at a resume offset (pipe). */
const OFFSET_CHECK_BYTES = 64;

interface Seen {
  workspaceLost: { reason: string; controlPlane: boolean } | null;
  gpuStop: GpuFaultEvidence[] | null;
  maxUnreachableSec: number;
  /** "lost touch" was logged and not yet followed by "in touch again" (state changes are logged once). */
  outOfTouch: boolean;
}

interface FollowResult {
  fault: 'none' | 'workspace' | 'gpu' | 'hostLost';
  /** The follow command printed its stream to its end (exit 0): nothing is left to drain. */
  complete: boolean;
  workspace?: { reason: string; controlPlane: boolean };
  gpu?: GpuFaultEvidence[];
}

/**
 * Whether a relay's end is gpurun's own path failing (the broker's SSH channel, the serving client) rather than the
 * host's sshfs: a relay stream that ended or a client that left is the control plane; restartable.
 */
export function relayDropIsControlPlane(why: string): boolean {
  return /client that served the workspace disconnected|SFTP relay stream ended \(the broker's SSH channel|ended with the broker process/.test(why);
}

function describeGpuFaults(fs: readonly GpuFaultEvidence[]): string {
  return fs.map((f) => `${f.xid === undefined ? '' : `Xid ${f.xid} `}on GPU ${f.gpu} (${f.detail})`).join('; ');
}

/** The last `n` bytes of a file (empty when it is shorter or missing). */
function lastBytes(path: string, n: number): Buffer {
  if (n <= 0) return Buffer.alloc(0);
  try {
    const size = statSync(path).size;
    if (size < n) return Buffer.alloc(0);
    const fd = openSync(path, 'r');
    try {
      const b = Buffer.alloc(n);
      readSync(fd, b, 0, n, size - n);
      return b;
    } finally {
      closeSync(fd);
    }
  } catch {
    return Buffer.alloc(0);
  }
}
function holdKey(r: MountedRef): string {
  return `${r.host}\0${r.mnt}`;
}

/** A follow that ends sooner than this while the job still runs is not started again at once (no busy loop). */
const FOLLOW_MIN_MS = 1_000;

/** Bytes of this attempt's output the log file already has (the attempt's output begins at `logOffset`). */
function attemptBytes(r: MountedRef): number {
  return Math.max(0, fileSize(r.logPath) - (r.logOffset ?? 0));
}

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
  /** The command that prints the rest of an ended job's output (from `logSize` on) and exits. */
  protected abstract drainCommand(ref: MountedRef, logSize: number): FollowCommand;
  /** Where the job stands now. Rejects when the host cannot tell (unreachable): wait() tries again. */
  protected abstract state(ssh: RemoteExec, ref: MountedRef): Promise<HostJobState>;
  /** Stops the job at once (its workspace is gone), with a short grace. */
  protected abstract stopNow(ssh: RemoteExec, ref: MountedRef): Promise<void>;
  /** Removes what the job left on the host besides its mount (container, run directory, stray processes). */
  protected abstract remove(ssh: RemoteExec, ref: MountedRef): Promise<void>;

  /** Facts the runtime noticed about the job while it ran, in words (Evidence.notes). */
  protected notes(_ref: MountedRef): string[] {
    return [];
  }

  /** What a ref records about the start, for wait(): the GPUs, the host's boot id, the time. */
  protected startFacts(spec: StartSpec): Pick<MountedRef, 'gpus' | 'bootId' | 'startedAt' | 'workspace'> {
    const boot = this.hosts.reach(spec.host).bootId;
    return { gpus: spec.gpuIndices, ...(boot ? { bootId: boot } : {}), startedAt: new Date().toISOString(), workspace: spec.job.workspace };
  }

  private readonly starting = new Map<string, { n: number; queue: Array<() => void> }>();

  /**
   * Runs `fn` (a job's start on `host`) when fewer than START_SLOTS starts run there: a burst of starts then does not
   * open more SSH channels and Docker requests at once than the host answers in time.
   */
  protected async startSlot<T>(host: string, fn: () => Promise<T>): Promise<T> {
    let s = this.starting.get(host);
    if (!s) this.starting.set(host, (s = { n: 0, queue: [] }));
    const slots = s;
    if (slots.n >= START_SLOTS) await new Promise<void>((r) => slots.queue.push(r));
    else slots.n++;
    try {
      return await fn();
    } finally {
      const next = slots.queue.shift();
      if (next) next();
      else slots.n--;
    }
  }

  /**
   * Mounts the job's workspace at its mount point on the host: by the host's transport, or relayed to the client
   * that serves it (`workspaceFrom: "client"`). Returns the mount point and the transport used.
   */
  protected async mountWorkspace(ssh: RemoteExec, cfg: SshHostConfig, job: StartSpec['job']): Promise<{ mnt: string; transport: 'direct' | 'relay' }> {
    const mnt = mountPoint(cfg.workDir, this.brokerId, job.id);
    const clients = this.clients;
    if (job.workspaceFrom === 'client' && !clients) throw new GpurunError('E_CONFIG', 'this broker cannot relay client-served workspaces');
    const source = job.workspaceFrom === 'client' ? { fromClient: () => clients!.take(job.id, CLIENT_WORKSPACE_WAIT_MS) } : undefined;
    await this.mounts.mount(ssh, cfg.mount, job.workspace, mnt, (msg) => this.log(msg, { job: job.id }), source, job.owner);
    return { mnt, transport: source ? 'relay' : cfg.mount.transport };
  }

  /**
   * Follows the job to its end. Survives lost connections (it tries again until the host answers) and a broker
   * restart (the log file's size is the offset to resume from). A host that stays unreachable for the grace
   * (`hostLostAfter`) ends the wait with Lost; so does a host that comes back rebooted or without the job. Always
   * cleans up when the host can be reached: the job's remains, its mount.
   */
  async wait(ref: Record<string, unknown>, signal: AbortSignal): Promise<ExitInfo | Lost> {
    const r = ref as MountedRef;
    const seen: Seen = { workspaceLost: null, gpuStop: null, maxUnreachableSec: 0, outOfTouch: false };
    for (;;) {
      if (signal.aborted) throw signal.reason;
      const reach = this.hosts.reach(r.host);
      seen.maxUnreachableSec = Math.max(seen.maxUnreachableSec, unreachableSec(reach, Date.now()));
      if (reach.reach === 'lost') return this.hostLost(r, reach, seen);
      try {
        const ssh = this.hosts.exec(r.host);
        const began = Date.now();
        const f = await this.followOnce(ssh, r, signal);
        if (signal.aborted) throw signal.reason;
        if (f.fault === 'workspace' && !seen.workspaceLost) seen.workspaceLost = f.workspace!;
        if (f.fault === 'gpu' && !seen.gpuStop) seen.gpuStop = f.gpu!;
        if (f.fault === 'hostLost') continue;
        const followed = Date.now();
        const st = await this.state(ssh, r);
        if (seen.outOfTouch) {
          seen.outOfTouch = false;
          this.log('in touch with the job again', this.describe(r));
        }
        if (st === 'running') {
          // The output stream broke (connection), the job still runs: follow again.
          if (Date.now() - began < FOLLOW_MIN_MS) await sleep(FOLLOW_MIN_MS, undefined, { signal }).catch(() => {});
          continue;
        }
        // The follower did not see the stream to its end: read what is left before the job's remains go.
        if (!f.complete) await this.drain(ssh, r).catch((e) => this.log('could not read the rest of the output', { ...this.describe(r), err: (e as Error).message }));
        const looked = Date.now();
        const hold = this.holds.get(holdKey(r));
        if (hold && !('lost' in st) && st.exitCode === hold.exitCode) hold.ended = true;
        else await this.cleanup(ssh, r);
        this.log(hold?.ended ? 'job ended on its host; its remains are kept for its move' : 'job ended on its host', { ...this.describe(r), stateMs: looked - followed, cleanupMs: Date.now() - looked });
        // Gone without a trace: read the host's boot id now, so a reboot is named even before the next health check.
        if ('lost' in st) await this.hosts.checkHealth(r.host).catch(() => {});
        return this.withEvidence(st, r, seen);
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        if (!seen.outOfTouch) {
          seen.outOfTouch = true;
          this.log('lost touch with a job on its host; trying again until it answers or is lost', { ...this.describe(r), err: (e as Error).message });
        }
        await sleep(2_000, undefined, { signal }).catch(() => {});
      }
    }
  }

  /** The end of a job whose host was unreachable for the whole grace: nothing can be asked of the host. */
  private hostLost(r: MountedRef, reach: HostReach, seen: Seen): Lost {
    const sec = Math.max(seen.maxUnreachableSec, unreachableSec(reach, Date.now()));
    this.log('host lost: giving the job up', { ...this.describe(r), unreachableSec: sec, why: reach.lastError });
    return {
      lost: `host_lost: ${r.host} could not be reached for ${sec} s (${reach.lastError ?? 'no answer'})`,
      evidence: { hostUnreachableSec: sec, notes: [`${r.host} unreachable ${sec} s`] },
    };
  }

  /** The runtime's end with what was seen around it, as Evidence, and the failure text today's broker shows. */
  private withEvidence(st: ExitInfo | Lost, r: MountedRef, seen: Seen): ExitInfo | Lost {
    const ev: Evidence = {};
    const notes: string[] = this.notes(r);
    if (seen.maxUnreachableSec > 0) ev.hostUnreachableSec = seen.maxUnreachableSec;
    const reboot = rebooted(r.bootId, this.hosts.reach(r.host).bootId);
    if (reboot) ev.bootIdChanged = true;
    const gpuEvents = r.gpus && r.startedAt ? this.hosts.gpuEvents(r.host, r.gpus, r.startedAt) : [];
    const faults: GpuFaultEvidence[] = seen.gpuStop ?? gpuEvents.map(({ cls: _c, ...g }) => g);
    if (faults.length) ev.gpuFaults = faults;
    if ('lost' in st) {
      ev.runtimeGone = st.lost;
      if (reboot) notes.push('container gone after reboot');
      if (seen.maxUnreachableSec) notes.unshift(`unreachable ${seen.maxUnreachableSec} s`);
      if (notes.length) ev.notes = notes;
      return { lost: reboot ? `${st.lost}; the host rebooted (its boot id changed)` : st.lost, evidence: { ...st.evidence, ...ev } };
    }
    let failure = st.failure;
    if (seen.gpuStop) failure = `gpu_fault: ${describeGpuFaults(seen.gpuStop)}`;
    else if (seen.workspaceLost) {
      ev.workspaceLost = seen.workspaceLost;
      failure = `workspace_lost: ${seen.workspaceLost.reason}`;
    }
    const app = gpuEvents.filter((g) => g.cls === 'application');
    if (app.length && !seen.gpuStop) notes.push(`application GPU error: ${describeGpuFaults(app)}`);
    if (notes.length) ev.notes = [...(st.evidence?.notes ?? []), ...notes];
    return { ...st, ...(failure ? { failure } : {}), evidence: { ...st.evidence, ...ev } };
  }

  /** The ref's fields for log lines (no paths of the developer's machine). */
  protected describe(r: MountedRef): Record<string, unknown> {
    const { logPath: _log, ...rest } = r;
    return rest;
  }

  /** Appends the drain command's output (the rest of an ended job's output) to the log file. */
  private async drain(ssh: RemoteExec, r: MountedRef): Promise<void> {
    const f = this.drainCommand(r, attemptBytes(r));
    const ch = await ssh.spawn(f.argv);
    await this.pipe(ch, r, f.skip, () => new Promise<void>((resolve) => ch.on('close', () => resolve())));
  }

  /**
   * Appends `ch`'s stdout to the job's log file after dropping `skip` bytes, while `during` runs; the channel's stderr
   * goes to the broker log, never into the job's output (a host's login shell may print there). The dropped bytes
   * are compared with the end of the log file: a mismatch means the offset is off, which is logged.
   */
  private async pipe<T>(ch: ClientChannel, r: MountedRef, skip: number, during: () => Promise<T>): Promise<T> {
    const tail = lastBytes(r.logPath, Math.min(skip, OFFSET_CHECK_BYTES));
    const fd = openSync(r.logPath, 'a', 0o600);
    let toSkip = skip;
    let checked = tail.length === 0;
    let droppedTail = Buffer.alloc(0);
    let complaint = '';
    let writeFailed = false;
    try {
      ch.on('data', (d: Buffer) => {
        if (toSkip > 0) {
          const n = Math.min(toSkip, d.length);
          if (!checked) droppedTail = Buffer.concat([droppedTail, d.subarray(0, n)]).subarray(-tail.length);
          toSkip -= n;
          if (toSkip === 0 && !checked) {
            checked = true;
            if (!droppedTail.equals(tail)) this.log('the output stream does not match the log file at the resume offset', { ...this.describe(r), offset: skip });
          }
          d = d.subarray(n);
          if (d.length === 0) return;
        }
        if (writeFailed) return;
        try {
          // A short write (the disk filling up) leaves the rest to the next call, which then fails.
          for (let off = 0; off < d.length; ) off += writeSync(fd, d, off);
        } catch (e) {
          // The broker's disk is full (or failing): stop reading rather than leave a gap in the log. The job keeps
          // running; the follow starts again from the end of the log file, and the host still has what was not read.
          writeFailed = true;
          this.log('cannot write the job\'s output to its log file: following again shortly', { ...this.describe(r), err: (e as Error).message });
          ch.close();
        }
      });
      ch.stderr.on('data', (d: Buffer) => (complaint = (complaint + d.toString('utf8')).slice(-1000)));
      return await during();
    } finally {
      closeSync(fd);
      if (complaint.trim()) this.log('following the output: the host said', { ...this.describe(r), stderr: complaint.trim() });
    }
  }

  /**
   * Appends the follow command's output to the log file from the byte the file ends at, until the stream ends.
   * Meanwhile checks the mount, the host and the job's GPUs. On a fault (workspace lost, GPU fault) the job is stopped
   * first and its stream read to its end, so the last lines it printed are kept; then says what happened.
   */
  private async followOnce(ssh: RemoteExec, r: MountedRef, signal: AbortSignal): Promise<FollowResult> {
    const f = this.followCommand(r, attemptBytes(r));
    const ch = await ssh.spawn(f.argv);
    let exit: number | null = null;
    onExit(ch, (e) => (exit = e.code));
    const closed = new Promise<void>((resolve) => ch.on('close', () => resolve()));
    let ended = false;
    void closed.then(() => (ended = true));
    const abort = () => ch.close();
    signal.addEventListener('abort', abort);
    try {
      return await this.pipe(ch, r, f.skip, async (): Promise<FollowResult> => {
        const w = await this.watch(ssh, r, closed);
        if (w.fault === 'none') return { fault: 'none', complete: exit === 0 };
        if (w.fault === 'hostLost') {
          ch.close();
          return w;
        }
        this.log(w.fault === 'gpu' ? 'GPU fault: stopping the job' : 'workspace lost: stopping the job', { ...this.describe(r), why: w.fault === 'gpu' ? describeGpuFaults(w.gpu!) : w.workspace!.reason });
        await this.stopNow(ssh, r).catch((e) => this.log('could not stop the job', { ...this.describe(r), err: (e as Error).message }));
        // The follower ends with the job (docker logs -f, tail --pid): what it printed last arrives meanwhile.
        await Promise.race([closed, sleep(STREAM_END_MS)]);
        const complete = ended && exit === 0;
        ch.close();
        return { ...w, complete };
      });
    } finally {
      signal.removeEventListener('abort', abort);
    }
  }

  /** Until `closed` resolves: checks the mount, the host and the job's GPUs every few seconds; says what went wrong. */
  private async watch(ssh: RemoteExec, r: MountedRef, closed: Promise<void>): Promise<FollowResult> {
    let relay = this.mounts.relay(r.host, r.mnt);
    // A direct snapshot mount made by an earlier broker process: its write-back and watch start again here.
    if (!relay && r.transport === 'direct' && r.workspace) {
      relay = await this.mounts.adopt(ssh, this.hosts.config(r.host).mount, r.workspace, r.mnt, (msg) => this.log(msg, this.describe(r))).catch((e) => {
        this.log('could not take the snapshot mount over', { ...this.describe(r), err: (e as Error).message });
        return undefined;
      });
    }
    let misses = 0;
    let stalled = false;
    for (;;) {
      const ev = await Promise.race([
        closed.then(() => 'closed' as const),
        relay?.ended ? relay.ended.then((why) => ({ why })) : new Promise<never>(() => {}),
        sleep(CHECK_MS).then(() => 'check' as const),
      ]);
      if (ev === 'closed') return { fault: 'none', complete: false };
      if (typeof ev === 'object') return { fault: 'workspace', complete: false, workspace: { reason: ev.why, controlPlane: relayDropIsControlPlane(ev.why) } };
      if (this.hosts.reach(r.host).reach === 'lost') return { fault: 'hostLost', complete: false };
      const gpu = this.gpuFault(r);
      if (gpu) return { fault: 'gpu', complete: false, gpu };
      if (this.hosts.reach(r.host).reach !== 'up') continue; // a blip: the mount cannot be asked now
      const st = await this.mounts.check(ssh, r.mnt).catch(() => 'up' as const /* the host, not the mount, is unreachable */);
      // A relay this process serves stalls while the broker's SSH connection waits for TCP after a blip: its channel
      // is still open (an end would have come through relay.ended), so the mount is waiting, not gone.
      const waiting = st === 'stalled' && relay !== undefined;
      if (waiting && !stalled) this.log('the relay mount is waiting for its SSH connection', this.describe(r));
      stalled = waiting;
      misses = st === 'up' ? 0 : waiting ? misses : misses + 1;
      if (misses >= 2) {
        if (r.transport === 'relay' && !relay) return { fault: 'workspace', complete: false, workspace: { reason: 'the SFTP relay of this mount ended with the broker process that served it', controlPlane: true } };
        return { fault: 'workspace', complete: false, workspace: { reason: `the mount ${r.mnt} on ${r.host} is gone or does not answer`, controlPlane: false } };
      }
    }
  }

  /** Fault-class GPU events on the job's GPUs since it started (they quarantine the GPU), or null. */
  private gpuFault(r: MountedRef): GpuFaultEvidence[] | null {
    if (!r.gpus?.length || !r.startedAt) return null;
    const q = this.hosts.quarantined(r.host);
    if (!r.gpus.some((g) => q.has(g))) return null;
    const evs = this.hosts.gpuEvents(r.host, r.gpus, r.startedAt).filter((e) => e.cls !== 'application' && q.has(e.gpu));
    return evs.length ? evs.map(({ cls: _c, ...g }) => g) : null;
  }

  /** Attempts whose remains stay when they end with a given exit code (holdOnExit), by host and mount point. */
  private readonly holds = new Map<string, { exitCode: number; ended: boolean }>();

  holdOnExit(ref: Record<string, unknown>, exitCode: number): void {
    this.holds.set(holdKey(ref as MountedRef), { exitCode, ended: false });
  }

  /** Forgets holdOnExit() and keeps the remains: a later attempt runs in them again (a move that falls back). */
  protected takeOver(ref: MountedRef): void {
    this.holds.delete(holdKey(ref));
  }

  async release(ref: Record<string, unknown>, ended: boolean): Promise<void> {
    const r = ref as MountedRef;
    const hold = this.holds.get(holdKey(r));
    this.holds.delete(holdKey(r));
    if (ended || hold?.ended) await this.cleanup(this.hosts.exec(r.host), r);
  }

  protected async cleanup(ssh: RemoteExec, r: MountedRef): Promise<void> {
    await this.remove(ssh, r);
    await this.unmount(ssh, r.mnt);
  }

  protected async unmount(ssh: RemoteExec, mnt: string): Promise<void> {
    await this.mounts.unmount(ssh, mnt).catch((e) => this.log('unmount failed', { mnt, err: (e as Error).message }));
  }

  /**
   * Unmounts this broker's mounts on the host (under workDir/mnt/BROKER-ID) that belong to no live job, then removes
   * the snapshot caches left unused for mount.cacheDays; returns what it removed. Other brokers' mounts on the same
   * host are not touched (nor a cache one of their overlays has mounted).
   */
  protected async sweepMounts(ssh: RemoteExec, cfg: SshHostConfig, isLive: (jobId: string) => boolean): Promise<string[]> {
    const removed: string[] = [];
    const ls = await ssh.exec(['ls', '-1', mountsDir(cfg.workDir, this.brokerId)]);
    for (const jobId of ls.code === 0 ? ls.stdout.split('\n').map((s) => s.trim()).filter(Boolean) : []) {
      if (isLive(jobId)) continue;
      const mnt = mountPoint(cfg.workDir, this.brokerId, jobId);
      await this.mounts.unmount(ssh, mnt).catch(() => {});
      removed.push(mnt);
    }
    // Snapshot caches no job has used for mount.cacheDays, once no mounted overlay uses them.
    if (cfg.mount.cacheDays > 0) {
      const r = await ssh.exec(expireCachesArgs(cfg.workDir, cfg.mount.cacheDays), { timeoutMs: 300_000 });
      if (r.code === 0) removed.push(...r.stdout.split('\n').filter(Boolean));
    }
    return removed;
  }
}
