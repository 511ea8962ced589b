/**
 * The process runtime for SSH hosts without Docker (`runtime: "process"`): the workspace is mounted on the host as
 * for Docker (hosts/mount.ts), then the job runs there as a plain process in the mount, detached from the SSH session
 * under a small supervisor shell that records its exit (the scripts: runtimes/sshProcessArgs.ts). The job has its own
 * session and process group; stop() signals the whole group. It sees only its GPUs through CUDA_VISIBLE_DEVICES and
 * NVIDIA_VISIBLE_DEVICES (there is no container to hide the others). Output is followed with `tail -c +N -f` from
 * the byte the broker's log file ends at, so a restarted broker continues with no gap and no repeat; the run
 * directory holds all a restarted broker needs to find the job again. Memory and CPU limits are not enforced.
 */
import { GpurunError } from '../protocol/errors.ts';
import type { ExitInfo, StartSpec } from '../core/runtime.ts';
import type { StoredJob } from '../core/store.ts';
import type { RemoteExec } from '../hosts/ssh.ts';
import { mountPoint } from '../hosts/mount.ts';
import { gpuSettings } from './docker.ts';
import { explainInterpreter } from './interpreterCheck.ts';
import { hostJobEnv, MountedRuntime, type FollowCommand, type HostJobState, type MountedRef } from './mounted.ts';
import { followArgs, launchArgs, launchInput, listRunsArgs, parsePidFile, parseRunState, parseRuns, removeArgs, runDir, signalArgs, statusArgs, stopArgs, type RunState } from './sshProcessArgs.ts';
import { CONTAINER_CHECKPOINT_DIR, hostCheckpointDir } from '../migration/checkpoint.ts';

export interface SshProcessRef extends MountedRef {
  /** The run directory on the host. */
  dir: string;
  /** The job's pid, process group and session id. */
  pid: number;
  /** The shell that waits for the job and writes its exit status. */
  supervisor: number;
  /** The job's first word (absent on refs of older brokers): looked at when it cannot be run. */
  command0?: string;
}

/** How long recover() waits for a job whose run directory exists but that has not recorded its pid yet. */
const RECOVER_WAIT_MS = 3_000;

export class SshProcessRuntime extends MountedRuntime {
  readonly kind = 'ssh-process';

  start(spec: StartSpec): Promise<SshProcessRef> {
    return this.startSlot(spec.host, () => this.startNow(spec));
  }

  private async startNow(spec: StartSpec): Promise<SshProcessRef> {
    const cfg = this.hosts.config(spec.host);
    const ssh = this.hosts.exec(spec.host);
    const job = spec.job;
    const { mnt, transport } = await this.mountWorkspace(ssh, cfg, job);
    const dir = runDir(cfg.workDir, job.id);
    try {
      // No container to mount it into: the job's checkpoint folder is the host's folder itself, by its own path
      // (a move copies it to the same path under the destination's work folder).
      const checkpointDir = hostCheckpointDir(cfg.workDir, job.id);
      await ssh.run(['mkdir', '-p', checkpointDir], 'making the checkpoint folder', { timeoutMs: 30_000 });
      const env: Record<string, string> = { ...hostJobEnv(spec), ...gpuSettings('env', spec.gpuIndices).env, GPURUN_CHECKPOINT_DIR: checkpointDir };
      if (env.GPURUN_RESUME_FROM === CONTAINER_CHECKPOINT_DIR) env.GPURUN_RESUME_FROM = checkpointDir;
      const r = await ssh.exec(launchArgs({ dir, brokerId: this.brokerId, cwd: mnt, env, command: job.command }), { stdin: launchInput(env), timeoutMs: 60_000 });
      if (r.code !== 0) throw new GpurunError('E_INTERNAL', `${spec.host}: starting the job failed (exit ${r.code ?? r.signal}): ${r.stderr.trim().split('\n').slice(-3).join(' / ') || '(no output)'}`, { exitCode: r.code ?? undefined, stderr: r.stderr });
      return { host: spec.host, dir, mnt, transport, logPath: spec.logPath, command0: job.command[0], ...this.startFacts(spec), ...parsePidFile(r.stdout) };
    } catch (e) {
      await ssh.exec(removeArgs(dir)).catch(() => {});
      await this.unmount(ssh, mnt);
      throw e;
    }
  }

  /**
   * A job that was starting when the broker stopped: its run directory says whether it was launched. When it was not,
   * its mount (if any) is removed and null returned.
   */
  async recover(job: StoredJob, logPath: string): Promise<SshProcessRef | null> {
    if (!job.host) return null;
    const cfg = this.hosts.config(job.host);
    const ssh = this.hosts.exec(job.host);
    const dir = runDir(cfg.workDir, job.id);
    const mnt = mountPoint(cfg.workDir, this.brokerId, job.id);
    let st = await this.runState(ssh, dir);
    for (let waited = 0; st.kind === 'nopid' && waited < RECOVER_WAIT_MS; waited += 250) {
      await new Promise((r) => setTimeout(r, 250));
      st = await this.runState(ssh, dir);
    }
    if (st.kind === 'nopid' || st.kind === 'missing') {
      if (st.kind === 'nopid') await ssh.exec(removeArgs(dir));
      await this.unmount(ssh, mnt);
      return null;
    }
    const transport = job.workspaceFrom === 'client' ? 'relay' : cfg.mount.transport;
    const boot = this.hosts.reach(job.host).bootId;
    return { host: job.host, dir, mnt, transport, logPath, gpus: job.gpuIndices, ...(boot ? { bootId: boot } : {}), startedAt: new Date().toISOString(), pid: st.pid, supervisor: st.supervisor, command0: job.command[0] };
  }

  private async runState(ssh: RemoteExec, dir: string): Promise<RunState> {
    return parseRunState(await ssh.run(statusArgs(dir), 'reading the job\'s state', { timeoutMs: 30_000 }));
  }

  protected followCommand(ref: MountedRef, logSize: number): FollowCommand {
    const r = ref as SshProcessRef;
    return { argv: followArgs(r.dir, logSize, r.pid), skip: 0 };
  }

  /** The follow command of an ended job prints the rest and exits (its pid is gone). */
  protected drainCommand(ref: MountedRef, logSize: number): FollowCommand {
    return this.followCommand(ref, logSize);
  }

  protected async state(ssh: RemoteExec, ref: MountedRef): Promise<HostJobState> {
    const r = ref as SshProcessRef;
    const st = await this.runState(ssh, r.dir);
    switch (st.kind) {
      case 'running':
        return 'running';
      case 'exit': {
        const info: ExitInfo = { exitCode: st.exitCode, signal: null, endedAt: st.endedAt };
        if (st.exitCode === 127 || st.exitCode === 126) {
          const why = await explainInterpreter(ssh, r.mnt, r.mnt, r.command0, { kind: 'host', name: r.host });
          if (why) return { ...info, startError: why };
        }
        if (st.exitCode === 127 || st.exitCode === 126) return { ...info, startError: `the command was not found or could not be run on host ${r.host} (exit ${st.exitCode}); see the output` };
        return info;
      }
      case 'gone':
        return { lost: `the job's supervisor process on ${r.host} is gone and left no exit status (was the host restarted, or the process killed?)` };
      case 'nopid':
        return { lost: `the job's run directory ${r.dir} on ${r.host} no longer names its process` };
      case 'missing':
        return { lost: `the job's run directory ${r.dir} vanished from ${r.host} (removed by someone else?)` };
    }
  }

  protected async stopNow(ssh: RemoteExec, ref: MountedRef): Promise<void> {
    await ssh.run(stopArgs((ref as SshProcessRef).dir, 2_000), 'stopping the job', { timeoutMs: 30_000 });
  }

  protected async remove(ssh: RemoteExec, ref: MountedRef): Promise<void> {
    // A directory that cannot be removed is left to the sweep; the job has ended all the same.
    const r = await ssh.exec(removeArgs((ref as SshProcessRef).dir), { timeoutMs: 60_000 });
    if (r.code !== 0) this.log('could not remove the run directory', { ...this.describe(ref), exitCode: r.code, stderr: r.stderr.trim() });
  }

  async signal(ref: Record<string, unknown>, sig: string): Promise<void> {
    const r = ref as SshProcessRef;
    const res = await this.hosts.exec(r.host).exec(signalArgs(r.dir, sig), { timeoutMs: 30_000 });
    if (res.code !== 0) throw new GpurunError('E_CONFLICT', `could not signal the job on ${r.host} (${sig}): ${res.code === 3 ? 'its process is gone' : res.stderr.trim() || `exit ${res.code}`}`);
  }

  async stop(ref: Record<string, unknown>, graceMs: number): Promise<void> {
    const r = ref as SshProcessRef;
    await this.hosts.exec(r.host).run(stopArgs(r.dir, graceMs), 'stopping the job', { timeoutMs: graceMs + 30_000 });
  }

  /**
   * Removes this broker's run directories on `host` that belong to no live job (`isLive(jobId)`), with whatever is
   * left of their processes, then the mounts of no live job.
   */
  async sweep(host: string, isLive: (jobId: string) => boolean): Promise<string[]> {
    const ssh = this.hosts.exec(host);
    const cfg = this.hosts.config(host);
    const removed: string[] = [];
    const runs = parseRuns(await ssh.run(listRunsArgs(cfg.workDir), 'listing run directories'), this.brokerId);
    for (const jobId of runs.filter((id) => !isLive(id))) {
      const dir = runDir(cfg.workDir, jobId);
      const r = await ssh.exec(removeArgs(dir));
      if (r.code === 0) removed.push(dir);
    }
    return [...removed, ...(await this.sweepMounts(ssh, cfg, isLive))];
  }
}
