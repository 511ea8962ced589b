/**
 * The Docker runtime for SSH hosts: the workspace is mounted on the host (hosts/mount.ts), then `docker run -d`
 * starts the job's container with the mount at /workspace. Output is followed with `docker logs -f` into the
 * broker's log file, skipping the bytes the file already has, so a restarted broker continues with no gap and no
 * repeat. The end (exit code, OOM kill) is read with `docker inspect`; then the container is removed and the
 * workspace unmounted. Containers carry labels (job, owner, broker) so a restarted broker finds its own and
 * removes orphans.
 */
import { closeSync, openSync, statSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { GpurunError } from '../protocol/errors.ts';
import type { ExitInfo, Lost, Runtime, StartSpec } from '../core/runtime.ts';
import type { SshHostConfig } from '../hosts/sshConfig.ts';
import type { RemoteExec } from '../hosts/ssh.ts';
import { mountPoint, type Mounts } from '../hosts/mount.ts';
import type { ClientWorkspaces } from '../hosts/clientWorkspaces.ts';
import { CLIENT_WORKSPACE_WAIT_MS } from '../protocol/jobs.ts';

export const CONTAINER_WORKSPACE = '/workspace';

export interface DockerRunInput {
  jobId: string;
  owner: string;
  brokerId: string;
  image: string;
  command: string[];
  env: Record<string, string>;
  gpuMode: 'nvidia' | 'env';
  gpuIndices: number[];
  cpus: number;
  memoryMiB: number;
  mountPoint: string;
  readOnly: boolean;
}

export function containerName(jobId: string): string {
  return `gpurun-${jobId}`;
}

/** The per-user network (containers of different users cannot reach each other). */
export function userNetwork(owner: string): string {
  const clean = owner.toLowerCase().replace(/[^a-z0-9_.-]/g, '_');
  return clean === owner ? `gpurun-u-${clean}` : `gpurun-u-${clean}-${createHash('sha256').update(owner).digest('hex').slice(0, 8)}`;
}

/** The GPU flags and variables for a job: `--gpus device=…` (nvidia) or only the visibility variables (env). */
export function gpuSettings(mode: 'nvidia' | 'env', indices: number[]): { args: string[]; env: Record<string, string> } {
  const host = indices.join(',');
  if (indices.length === 0) return { args: [], env: { CUDA_VISIBLE_DEVICES: '', NVIDIA_VISIBLE_DEVICES: 'void', GPURUN_GPUS: '' } };
  if (mode === 'nvidia') {
    // The container sees only its devices, numbered from 0.
    return { args: ['--gpus', `"device=${host}"`], env: { CUDA_VISIBLE_DEVICES: indices.map((_, i) => i).join(','), GPURUN_GPUS: host } };
  }
  return { args: [], env: { CUDA_VISIBLE_DEVICES: host, NVIDIA_VISIBLE_DEVICES: host, GPURUN_GPUS: host } };
}

/**
 * argv of `docker run`. The command runs under /bin/sh with stderr joined to stdout (one ordered stream, so the
 * log can be addressed by byte offset), under docker's init (so SIGTERM from `docker stop` reaches it).
 */
export function dockerRunArgs(j: DockerRunInput): string[] {
  const gpu = gpuSettings(j.gpuMode, j.gpuIndices);
  const env = { ...j.env, ...gpu.env };
  return [
    'docker', 'run', '-d', '--init',
    '--name', containerName(j.jobId),
    '--label', `gpurun.job=${j.jobId}`,
    '--label', `gpurun.owner=${j.owner}`,
    '--label', `gpurun.broker=${j.brokerId}`,
    '--network', userNetwork(j.owner),
    '--cpus', String(j.cpus),
    '--memory', `${j.memoryMiB}m`,
    '--memory-swap', `${j.memoryMiB}m`,
    ...gpu.args,
    '-v', `${j.mountPoint}:${CONTAINER_WORKSPACE}${j.readOnly ? ':ro' : ''}`,
    '-w', CONTAINER_WORKSPACE,
    ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
    '--entrypoint', '/bin/sh',
    j.image,
    '-c', 'exec "$@" 2>&1', 'gpurun-job',
    ...j.command,
  ];
}

/** argv that creates the user's network if it is missing. */
export function ensureNetworkArgs(owner: string): string[] {
  return ['sh', '-c', 'docker network inspect "$1" >/dev/null 2>&1 || docker network create --label gpurun.owner="$2" "$1" >/dev/null', 'gpurun-net', userNetwork(owner), owner];
}

export interface ContainerState {
  running: boolean;
  exitCode: number;
  oomKilled: boolean;
  finishedAt: string;
  error: string;
}

/** Parses `docker inspect --format '{{json .State}}'`. */
export function parseContainerState(json: string): ContainerState {
  const s = JSON.parse(json) as { Running?: boolean; Restarting?: boolean; ExitCode?: number; OOMKilled?: boolean; FinishedAt?: string; Error?: string };
  return { running: !!(s.Running || s.Restarting), exitCode: s.ExitCode ?? 0, oomKilled: !!s.OOMKilled, finishedAt: s.FinishedAt ?? '', error: s.Error ?? '' };
}

/** The variables a container gets: the job's own and gpurun's, never the broker's environment. */
export function containerEnv(spec: StartSpec): Record<string, string> {
  const out: Record<string, string> = { ...spec.job.env };
  for (const k of ['PYTHONUNBUFFERED', 'CUDA_DEVICE_ORDER', 'GPURUN_JOB_ID']) if (spec.env[k] !== undefined) out[k] = spec.env[k];
  return out;
}

export interface DockerRef extends Record<string, unknown> {
  host: string;
  container: string;
  mnt: string;
  transport: 'direct' | 'relay';
  /** The broker's log file for the job (output is appended there). */
  logPath: string;
}

/** What the runtime needs from the SSH side of the registry. */
export interface SshHostLookup {
  config(host: string): SshHostConfig;
  exec(host: string): RemoteExec;
}

const CHECK_MS = 3_000;

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

export class DockerRuntime implements Runtime {
  readonly kind = 'docker';
  private readonly hosts: SshHostLookup;
  private readonly mounts: Mounts;
  private readonly brokerId: string;
  private readonly defaultImage: string | undefined;
  private readonly log: (msg: string, fields?: Record<string, unknown>) => void;
  private readonly clients: ClientWorkspaces | undefined;

  constructor(opts: { hosts: SshHostLookup; mounts: Mounts; brokerId: string; defaultImage?: string; log: (msg: string, fields?: Record<string, unknown>) => void; clients?: ClientWorkspaces }) {
    this.hosts = opts.hosts;
    this.clients = opts.clients;
    this.mounts = opts.mounts;
    this.brokerId = opts.brokerId;
    this.defaultImage = opts.defaultImage;
    this.log = opts.log;
  }

  async start(spec: StartSpec): Promise<DockerRef> {
    const cfg = this.hosts.config(spec.host);
    const ssh = this.hosts.exec(spec.host);
    const job = spec.job;
    const image = job.image ?? this.defaultImage;
    if (!image) throw new GpurunError('E_BAD_REQUEST', 'no image: the job names none and the broker config has no defaults.image', { hint: 'Pass --image IMAGE (an image present on the host), or set defaults.image.' });
    const mnt = mountPoint(cfg.workDir, job.id);
    await ssh.run(ensureNetworkArgs(job.owner), `creating the network ${userNetwork(job.owner)}`);
    const clients = this.clients;
    if (job.workspaceFrom === 'client' && !clients) throw new GpurunError('E_CONFIG', 'this broker cannot relay client-served workspaces');
    const source = job.workspaceFrom === 'client' ? { fromClient: () => clients!.take(job.id, CLIENT_WORKSPACE_WAIT_MS) } : undefined;
    await this.mounts.mount(ssh, cfg.mount, job.workspace, mnt, (msg) => this.log(msg, { job: job.id }), source);
    const name = containerName(job.id);
    try {
      const args = dockerRunArgs({
        jobId: job.id, owner: job.owner, brokerId: this.brokerId, image, command: job.command, env: containerEnv(spec),
        gpuMode: cfg.gpuMode, gpuIndices: spec.gpuIndices, cpus: job.resources.cpus, memoryMiB: job.resources.memoryMiB,
        mountPoint: mnt, readOnly: cfg.mount.readOnly,
      });
      const r = await ssh.exec(args, { timeoutMs: 120_000 });
      if (r.code !== 0) {
        const err = r.stderr.trim().split('\n').slice(-2).join(' / ');
        const noImage = /Unable to find image|No such image|pull access denied|repository does not exist/i.test(r.stderr);
        throw new GpurunError('E_BAD_REQUEST', noImage ? `image ${image} is not on host ${spec.host}: ${err}` : `docker run failed on ${spec.host} (exit ${r.code}): ${err}`, {
          hint: noImage ? `List the host's images with: docker image ls (on ${spec.host}); load or build it there, or pick another with --image.` : 'See the broker log for the full error.',
          exitCode: r.code ?? undefined,
          stderr: r.stderr,
        });
      }
    } catch (e) {
      await ssh.exec(['docker', 'rm', '-f', name]).catch(() => {});
      await this.mounts.unmount(ssh, mnt).catch(() => {});
      throw e;
    }
    return { host: spec.host, container: name, mnt, transport: source ? 'relay' : cfg.mount.transport, logPath: spec.logPath };
  }

  /**
   * Follows the container to its end. Survives lost connections (it tries again until the host answers) and a broker
   * restart (the log file's size is the offset to resume from). Always cleans up: container, mount.
   */
  async wait(ref: Record<string, unknown>, signal: AbortSignal): Promise<ExitInfo | Lost> {
    const r = ref as DockerRef;
    let workspaceLost: string | null = null;
    for (;;) {
      if (signal.aborted) throw signal.reason;
      try {
        const ssh = this.hosts.exec(r.host);
        const lost = await this.followOnce(ssh, r, signal);
        if (lost && !workspaceLost) {
          workspaceLost = lost;
          this.log('workspace lost: stopping the container', { container: r.container, why: lost });
          await ssh.exec(['docker', 'stop', '-t', '2', r.container], { timeoutMs: 30_000 });
        }
        const ins = await ssh.exec(['docker', 'inspect', '--format', '{{json .State}}', r.container], { timeoutMs: 30_000 });
        if (ins.code !== 0) {
          if (!/no such (object|container)/i.test(ins.stderr)) throw new Error(`docker inspect failed: ${ins.stderr.trim()}`);
          await this.cleanup(ssh, r);
          return { lost: `the container ${r.container} vanished from ${r.host} (removed by someone else, or the host's Docker was reset)` };
        }
        const st = parseContainerState(ins.stdout.trim());
        if (st.running) continue; // the log stream broke (connection), the container still runs: follow again
        await this.cleanup(ssh, r);
        const endedAt = st.finishedAt && !st.finishedAt.startsWith('0001') ? new Date(st.finishedAt).toISOString() : new Date().toISOString();
        const info: ExitInfo = { exitCode: st.exitCode, signal: null, endedAt, ...(st.oomKilled ? { oomKilled: true } : {}) };
        if (workspaceLost) return { ...info, failure: `workspace_lost: ${workspaceLost}` };
        if (st.error) return { ...info, startError: st.error };
        if (st.exitCode === 127 || st.exitCode === 126) return { ...info, startError: `the command was not found or could not be run in the image (exit ${st.exitCode}); see the output` };
        return info;
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        this.log('lost touch with a job\'s container; trying again', { container: r.container, err: (e as Error).message });
        await sleep(2_000, undefined, { signal }).catch(() => {});
      }
    }
  }

  /**
   * Appends `docker logs -f` to the log file from the byte the file ends at, until the stream ends. Meanwhile checks
   * the mount; returns why the workspace was lost, if it was (the caller stops the container).
   */
  private async followOnce(ssh: RemoteExec, r: DockerRef, signal: AbortSignal): Promise<string | null> {
    let skip = fileSize(r.logPath);
    const fd = openSync(r.logPath, 'a');
    const ch = await ssh.spawn(['docker', 'logs', '-f', r.container]);
    let lostWhy: string | null = null;
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
      ch.stderr.on('data', onData);
      const abort = () => ch.close();
      signal.addEventListener('abort', abort);
      const relay = this.mounts.relay(r.mnt);
      let misses = 0;
      for (;;) {
        const ev = await Promise.race([
          closed.then(() => 'closed' as const),
          relay?.ended ? relay.ended.then((why) => ({ why })) : new Promise<never>(() => {}),
          sleep(CHECK_MS).then(() => 'check' as const),
        ]);
        if (ev === 'closed') break;
        if (typeof ev === 'object') {
          lostWhy = ev.why;
          break;
        }
        const ok = await this.mounts.alive(ssh, r.mnt).catch(() => true /* the host, not the mount, is unreachable */);
        misses = ok ? 0 : misses + 1;
        if (misses >= 2) {
          lostWhy = r.transport === 'relay' && !relay ? 'the SFTP relay of this mount ended with the broker process that served it' : `the mount ${r.mnt} on ${r.host} is gone or does not answer`;
          break;
        }
      }
      signal.removeEventListener('abort', abort);
      return lostWhy;
    } finally {
      if (lostWhy) ch.close();
      closeSync(fd);
    }
  }

  private async cleanup(ssh: RemoteExec, r: DockerRef): Promise<void> {
    await ssh.exec(['docker', 'rm', '-f', r.container], { timeoutMs: 60_000 });
    await this.mounts.unmount(ssh, r.mnt).catch((e) => this.log('unmount failed', { mnt: r.mnt, err: (e as Error).message }));
  }

  /**
   * Removes this broker's containers and mounts on `host` that belong to no live job (`isLive(jobId)`): left by a
   * job that was mid-start when the broker died, or by a cleanup that failed.
   */
  async sweep(host: string, isLive: (jobId: string) => boolean): Promise<string[]> {
    const ssh = this.hosts.exec(host);
    const cfg = this.hosts.config(host);
    const removed: string[] = [];
    const ps = await ssh.run(['docker', 'ps', '-a', '--filter', `label=gpurun.broker=${this.brokerId}`, '--format', '{{.Label "gpurun.job"}} {{.Names}}'], 'listing containers');
    for (const line of ps.split('\n')) {
      const [jobId, name] = line.trim().split(' ');
      if (!jobId || !name || isLive(jobId)) continue;
      await ssh.exec(['docker', 'rm', '-f', name]);
      removed.push(name);
    }
    const ls = await ssh.exec(['ls', '-1', `${cfg.workDir}/mnt`]);
    for (const jobId of ls.code === 0 ? ls.stdout.split('\n').map((s) => s.trim()).filter(Boolean) : []) {
      if (isLive(jobId)) continue;
      await this.mounts.unmount(ssh, mountPoint(cfg.workDir, jobId)).catch(() => {});
      removed.push(mountPoint(cfg.workDir, jobId));
    }
    return removed;
  }

  async stop(ref: Record<string, unknown>, graceMs: number): Promise<void> {
    const r = ref as DockerRef;
    await this.hosts.exec(r.host).exec(['docker', 'stop', '-t', String(Math.max(1, Math.ceil(graceMs / 1000))), r.container], { timeoutMs: graceMs + 30_000 });
  }
}
