/**
 * The Docker runtime for SSH hosts: the workspace is mounted on the host (hosts/mount.ts), then `docker run -d`
 * starts the job's container with the mount at /workspace. Output is followed with `docker logs -f` into the
 * broker's log file, skipping the bytes the file already has, so a restarted broker continues with no gap and no
 * repeat. The end (exit code, OOM kill) is read with `docker inspect`; then the container is removed and the
 * workspace unmounted. Containers carry labels (job, owner, broker) so a restarted broker finds its own and
 * removes orphans. Mounting, following and cleaning up are shared with the process runtime (runtimes/mounted.ts).
 */
import { createHash } from 'node:crypto';
import { GpurunError } from '../protocol/errors.ts';
import type { ExitInfo, PrepareSpec, StartSpec } from '../core/runtime.ts';
import type { StoredJob } from '../core/store.ts';
import { mountPoint } from '../hosts/mount.ts';
import type { RemoteExec } from '../hosts/ssh.ts';
import { withoutGpuVars } from '../core/jobEnv.ts';
import { CONTAINER_CHECKPOINT_DIR, hostCheckpointDir } from '../migration/checkpoint.ts';
import { createArgs, criuDir, restoreContainer } from './criu.ts';
import { cacheEnv, cacheVolume, ownerSlug, type CacheConfig } from '../core/userCache.ts';
import { containerCommand, couldNotRun, explainInterpreter } from './interpreterCheck.ts';
import { hostJobEnv, MountedRuntime, type FollowCommand, type HostJobState, type MountedRef, type MountedRuntimeOptions } from './mounted.ts';

export const CONTAINER_WORKSPACE = '/workspace';

export interface DockerRunInput {
  jobId: string;
  owner: string;
  brokerId: string;
  image: string;
  command: string[];
  /** The env file on the host (envFileText) that holds the job's variables; values never go on a command line. */
  envFile: string;
  gpuMode: 'nvidia' | 'env';
  gpuIndices: number[];
  cpus: number;
  memoryMiB: number;
  mountPoint: string;
  readOnly: boolean;
  /** `--pids-limit` (config containers.pidsLimit). */
  pidsLimit: number;
  /** The job's checkpoint folder on the host, mounted at CONTAINER_CHECKPOINT_DIR (migration/checkpoint.ts). */
  checkpointDir?: string;
  /** The address to take on the user's network (a moved job keeps the one it had). */
  ip?: string;
  /** The owner's cache volume and where the container has it (config cache); absent: none. */
  cache?: { volume: string; path: string };
  /**
   * The container's name when it is not containerName(jobId) (a move's prepared start); it then carries that name
   * as its alias on the user's network, so peers resolve the job by the same name.
   */
  name?: string;
}

/** The name of a job's container, and the name peers on the user's network resolve it by. */
export function containerName(jobId: string): string {
  return `gpurun-${jobId}`;
}

/**
 * The name of the container a move prepares for attempt `n` (created while the source still runs, so it cannot have
 * the source's name where both hosts share one engine); its network alias is containerName(jobId).
 */
export function preparedName(jobId: string, n: number): string {
  return `${containerName(jobId)}-${n}`;
}

/** The per-user network (containers of different users cannot reach each other). */
export function userNetwork(owner: string): string {
  return `gpurun-u-${ownerSlug(owner)}`;
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
 * The text of a job's `--env-file`: its variables (hostJobEnv: the job's own and gpurun's GPURUN_JOB_ID, GPURUN_ATTEMPT,
 * …) less any GPU visibility variable, then this runtime's GPU variables,
 * one `NAME=value` a line. Docker's env files cannot hold a line break in a value: such a job is refused.
 */
export function envFileText(env: Record<string, string>, gpuMode: 'nvidia' | 'env', gpuIndices: number[]): string {
  const all = { ...withoutGpuVars(env), ...gpuSettings(gpuMode, gpuIndices).env };
  return Object.entries(all).map(([k, v]) => {
    if (/[\r\n]/.test(v)) throw new GpurunError('E_BAD_REQUEST', `env.${k}: a value with a line break cannot be passed to a container`, { hint: 'Pass it in a file of the workspace instead.' });
    return `${k}=${v}\n`;
  }).join('');
}

/**
 * argv of `docker run`. The command runs under /bin/sh with stderr joined to stdout (one ordered stream, so the
 * log can be addressed by byte offset), under docker's init (so SIGTERM from `docker stop` reaches it).
 * Hardened: no new privileges (setuid binaries do not raise it), every capability dropped, a pids limit. Nothing
 * from the request is read as an option: the env is in a file, and the image (validated at submit to start with a
 * letter or digit) comes after `--`, which ends docker's options.
 */
export function dockerRunArgs(j: DockerRunInput): string[] {
  const gpu = gpuSettings(j.gpuMode, j.gpuIndices);
  return [
    'docker', 'run', '-d', '--init',
    '--name', j.name ?? containerName(j.jobId),
    '--label', `gpurun.job=${j.jobId}`,
    '--label', `gpurun.owner=${j.owner}`,
    '--label', `gpurun.broker=${j.brokerId}`,
    '--network', userNetwork(j.owner),
    ...(j.name && j.name !== containerName(j.jobId) ? ['--network-alias', containerName(j.jobId)] : []),
    ...(j.ip ? ['--ip', j.ip] : []),
    '--cpus', String(j.cpus),
    '--memory', `${j.memoryMiB}m`,
    '--memory-swap', `${j.memoryMiB}m`,
    '--security-opt', 'no-new-privileges',
    '--cap-drop', 'ALL',
    '--pids-limit', String(j.pidsLimit),
    ...gpu.args,
    '-v', `${j.mountPoint}:${CONTAINER_WORKSPACE}${j.readOnly ? ':ro' : ''}`,
    ...(j.checkpointDir ? ['-v', `${j.checkpointDir}:${CONTAINER_CHECKPOINT_DIR}`] : []),
    ...(j.cache ? ['-v', `${j.cache.volume}:${j.cache.path}`] : []),
    '-w', CONTAINER_WORKSPACE,
    '--env-file', j.envFile,
    '--entrypoint', '/bin/sh',
    '--',
    j.image,
    '-c', 'exec "$@" 2>&1', 'gpurun-job',
    ...j.command,
  ];
}

/**
 * The user's network's subnet, the same on every host (so a job moved to another host keeps its address there):
 * a /24 in 10.64.0.0/10 picked by the owner's name.
 */
export function userSubnet(owner: string): string {
  const h = createHash('sha256').update(owner).digest();
  return `10.${64 + (h[0] % 64)}.${h[1]}.0/24`;
}

/**
 * argv that creates the user's network if it is missing, on the user's subnet; where that subnet is taken (another
 * network has it), without one (Docker picks; a moved job then gets a new address).
 */
export function ensureNetworkArgs(owner: string): string[] {
  return ['sh', '-c', 'docker network inspect "$1" >/dev/null 2>&1 || docker network create --label gpurun.owner="$2" --subnet "$3" "$1" >/dev/null 2>&1 || docker network inspect "$1" >/dev/null 2>&1 || docker network create --label gpurun.owner="$2" "$1" >/dev/null', 'gpurun-net', userNetwork(owner), owner, userSubnet(owner)];
}

/**
 * Writes the env file in a fresh 0700 folder on the host, the file 0600, its text through stdin (never argv).
 * Docker reads it when it creates the container; it is removed right after `docker run` (and again at cleanup).
 */
async function writeEnvFile(ssh: RemoteExec, dir: string, text: string): Promise<string> {
  const file = `${dir}/env`;
  const r = await ssh.exec(['sh', '-c', 'umask 077 && mkdir -p "$1" && chmod 700 "$1" && cat >"$2"', 'gpurun-env', dir, file], { stdin: text, timeoutMs: 30_000 });
  if (r.code !== 0) throw new GpurunError('E_INTERNAL', `writing the job's env file ${file} failed (exit ${r.code ?? r.signal}): ${r.stderr.trim() || '(no output)'}`, { stderr: r.stderr });
  return file;
}

function removeEnvDir(ssh: RemoteExec, dir: string): Promise<unknown> {
  return ssh.exec(['rm', '-rf', dir], { timeoutMs: 30_000 }).catch(() => undefined);
}

export interface ContainerState {
  running: boolean;
  /** Frozen by `docker pause`: running, but runs no code. */
  paused: boolean;
  exitCode: number;
  oomKilled: boolean;
  finishedAt: string;
  error: string;
  /** Being removed (`docker rm -f` under way: Status "removing") or dead: the container is going away. */
  removing: boolean;
}

/** Parses `docker inspect --format '{{json .State}}'`. */
export function parseContainerState(json: string): ContainerState {
  const s = JSON.parse(json) as { Status?: string; Running?: boolean; Paused?: boolean; Restarting?: boolean; ExitCode?: number; OOMKilled?: boolean; FinishedAt?: string; Error?: string; Dead?: boolean };
  return { running: !!(s.Running || s.Restarting), paused: !!s.Paused, exitCode: s.ExitCode ?? 0, oomKilled: !!s.OOMKilled, finishedAt: s.FinishedAt ?? '', error: s.Error ?? '', removing: s.Status === 'removing' || !!s.Dead };
}

/** Docker's stderr when the image is neither on the host nor pullable. */
export function isNoImage(stderr: string): boolean {
  return /Unable to find image|No such image|pull access denied|repository does not exist/i.test(stderr);
}

/** What to do about a missing image; `listed` is `docker image ls --format {{.Repository}}:{{.Tag}}` output. Pure. */
export function noImageHint(image: string, host: string, listed?: string): string {
  const have = (listed ?? '').split('\n').map((l) => l.trim()).filter((l) => l && !l.includes('<none>'));
  const shown = have.slice(0, 8).join(', ') + (have.length > 8 ? `, and ${have.length - 8} more` : '');
  return `Pull or build it on ${host} (or ask the host's admin to), or pick another with --image.${listed === undefined ? '' : have.length ? ` Images on ${host}: ${shown}.` : ` ${host} has no images yet.`}`;
}

/** How long a prepared start waits for its address to be given back by a container that just stopped. */
const IP_RETRY_MS = 2_000;

/** Docker's stderr when a container cannot have the address it asks for on the user's network. */
const IP_TAKEN = /user specified IP address|address already in use|no available IPv4|invalid address|not in the subnet/i;

/** What prepare() made on a host: the created container, the mounted workspace, and what they were made for. */
export interface PreparedRef extends Record<string, unknown> {
  host: string;
  container: string;
  mnt: string;
  transport: 'direct' | 'relay';
  envDir: string;
  /** A digest of the env file's text and the `docker run` argv the container was created with. */
  key: string;
}

function planKey(envText: string, args: string[]): string {
  return createHash('sha256').update(envText).update('\0').update(args.join('\0')).digest('hex');
}

export interface DockerRef extends MountedRef {
  container: string;
  /**
   * The container ran an earlier attempt before it was checkpointed and restored into (a move that fell back):
   * its output from before this time (the host's clock, RFC 3339) is that attempt's, already in the log.
   */
  logsSince?: string;
  /** The folder of the job's env file on the host (removed after `docker run`, and again at cleanup). */
  envDir?: string;
}

/** `docker logs` options that leave out what an earlier attempt in the same container printed. */
function logsSince(r: DockerRef): string[] {
  return r.logsSince ? ['--since', r.logsSince] : [];
}

/** How long after a SIGKILL exit the container is looked at again, to see whether a removal killed it. */
const REMOVAL_LOOK_MS = 1_500;

/** How long recover() looks for the container of a job whose `docker run` may still be under way. */
const RECOVER_WAIT_MS = 3_000;

export class DockerRuntime extends MountedRuntime {
  readonly kind = 'docker';
  /**
   * The user's network on a host, made or checked once per host and owner by this broker process: the starts of a
   * burst wait for the same check instead of racing to create it.
   */
  private readonly networks = new Map<string, Promise<void>>();
  /** Containers seen paused (logged once). */
  private readonly pausedSeen = new Set<string>();
  private readonly defaultImage: string | undefined;
  private readonly pidsLimit: number;
  private readonly cache: CacheConfig | undefined;

  constructor(opts: MountedRuntimeOptions & { defaultImage?: string; pidsLimit?: number; cache?: CacheConfig }) {
    super(opts);
    this.defaultImage = opts.defaultImage;
    this.pidsLimit = opts.pidsLimit ?? 4096;
    this.cache = opts.cache?.enabled ? opts.cache : undefined;
  }

  start(spec: StartSpec): Promise<DockerRef> {
    const asked = Date.now();
    return this.startSlot(spec.host, () => this.startNow(spec, asked));
  }

  /**
   * What a start of `spec` runs, with its container named `name` and the workspace at `mnt`: the env file's text and
   * the `docker run` argv (the file at `envFile`). Pure; prepare() and start() compare the two they computed.
   */
  private plan(spec: StartSpec | PrepareSpec, mnt: string, envFile: string, name: string): { envText: string; args: string[] } {
    const cfg = this.hosts.config(spec.host);
    const job = spec.job;
    const image = job.image ?? this.defaultImage;
    if (!image) throw new GpurunError('E_BAD_REQUEST', 'no image: the job names none and the broker config has no defaults.image', { hint: 'Pass --image IMAGE (an image present on the host), or set defaults.image.' });
    // The owner's cache: the usual cache variables point into it unless the job sets them itself.
    const cache = this.cache && { volume: cacheVolume(job.owner), path: this.cache.containerPath };
    const envText = envFileText({ ...(cache ? cacheEnv(cache.path) : {}), ...hostJobEnv({ ...spec, logPath: '' }), GPURUN_CHECKPOINT_DIR: CONTAINER_CHECKPOINT_DIR }, cfg.gpuMode, spec.gpuIndices);
    const args = dockerRunArgs({
      jobId: job.id, owner: job.owner, brokerId: this.brokerId, image, command: job.command, envFile,
      gpuMode: cfg.gpuMode, gpuIndices: spec.gpuIndices, cpus: job.resources.cpus, memoryMiB: job.resources.memoryMiB,
      // The checkpoint folder outlives the container (a move copies it, the next attempt resumes from it).
      mountPoint: mnt, readOnly: cfg.mount.readOnly, pidsLimit: this.pidsLimit, checkpointDir: hostCheckpointDir(cfg.workDir, job.id),
      ...(spec.moved?.ip ? { ip: spec.moved.ip } : {}), ...(cache ? { cache } : {}), ...(name !== containerName(job.id) ? { name } : {}),
    });
    return { envText, args };
  }

  /**
   * What a container needs on the host before `docker run` or `docker create`: the user's network, the workspace
   * mounted, the env file written and the checkpoint folder made (their round trips overlap). On failure nothing
   * is left.
   */
  private async ready(spec: StartSpec | PrepareSpec, name: string): Promise<{ ssh: RemoteExec; mnt: string; transport: 'direct' | 'relay'; envDir: string; envText: string; args: string[]; net: string }> {
    const cfg = this.hosts.config(spec.host);
    const ssh = this.hosts.exec(spec.host);
    const job = spec.job;
    const mntAt = mountPoint(cfg.workDir, this.brokerId, job.id);
    const envDir = `${cfg.workDir}/run/${job.id}`;
    const { envText } = this.plan(spec, mntAt, `${envDir}/env`, name);
    // Once made on a host, a user's network stays (nothing here removes it): one round trip less per start.
    const net = `${spec.host}\0${job.owner}`;
    let network = this.networks.get(net);
    if (!network) {
      network = ssh.run(ensureNetworkArgs(job.owner), `creating the network ${userNetwork(job.owner)}`).then(() => {});
      this.networks.set(net, network);
      network.catch(() => this.networks.delete(net));
    }
    const [netDone, mounted, envWritten, ckptMade] = await Promise.allSettled([network, this.mountWorkspace(ssh, cfg, job), writeEnvFile(ssh, envDir, envText), ssh.run(['mkdir', '-p', hostCheckpointDir(cfg.workDir, job.id)], 'making the checkpoint folder')]);
    const failed = [netDone, mounted, envWritten, ckptMade].find((r) => r.status === 'rejected');
    if (failed) {
      if (mounted.status === 'fulfilled') await this.mounts.unmount(ssh, mounted.value.mnt).catch(() => {});
      await removeEnvDir(ssh, envDir);
      throw failed.reason;
    }
    const { mnt, transport } = (mounted as PromiseFulfilledResult<{ mnt: string; transport: 'direct' | 'relay' }>).value;
    const envFile = (envWritten as PromiseFulfilledResult<string>).value;
    return { ssh, mnt, transport, envDir, envText, args: this.plan(spec, mnt, envFile, name).args, net };
  }

  /** The error for a failed `docker run`/`create`/`start` on the host (a missing image says which the host has). */
  private async runFailure(ssh: RemoteExec, spec: StartSpec | PrepareSpec, r: { code: number | null; stderr: string }, what: string, net: string): Promise<GpurunError> {
    const err = r.stderr.trim().split('\n').slice(-2).join(' / ');
    if (/network .* not found/i.test(r.stderr)) this.networks.delete(net);
    const image = spec.job.image ?? this.defaultImage ?? '';
    if (isNoImage(r.stderr)) {
      // Which images the host has, to pick from (best effort: a failure only leaves the list out).
      const ls = await ssh.exec(['docker', 'image', 'ls', '--format', '{{.Repository}}:{{.Tag}}'], { timeoutMs: 15_000 }).catch(() => undefined);
      // The job's reason is this message (hints are not kept with a job), so what to do is in it.
      const hint = noImageHint(image, spec.host, ls?.code === 0 ? ls.stdout : undefined);
      return new GpurunError('E_BAD_REQUEST', `image ${image} is not on host ${spec.host}. ${hint}`, { hint, exitCode: r.code ?? undefined, stderr: r.stderr });
    }
    return new GpurunError('E_BAD_REQUEST', `${what} failed on ${spec.host} (exit ${r.code}): ${err}`, { hint: 'See the broker log for the full error.', exitCode: r.code ?? undefined, stderr: r.stderr });
  }

  /** `asked`: when the start was asked for (ms); the log line of a start says where its time went. */
  private async startNow(spec: StartSpec, asked: number): Promise<DockerRef> {
    const began = Date.now();
    const fast = spec.moved?.prepared ? await this.startPrepared(spec, spec.moved.prepared as PreparedRef) : null;
    if (fast) {
      this.log('container started', { job: spec.job.id, host: spec.host, prepared: true, waitedMs: began - asked, mountMs: 0, runMs: Date.now() - began });
      return fast;
    }
    const restore = spec.moved?.restore;
    if (restore?.into) return this.restoreHeld(spec, restore.into as DockerRef, restore.name, asked);
    const cfg = this.hosts.config(spec.host);
    const job = spec.job;
    // A prepared start that could not be used keeps its name (the source's container may still hold the usual one),
    // as does a restore: the source's container is kept until the job runs here, and hosts may share one engine.
    const name = (spec.moved?.prepared as PreparedRef | undefined)?.container ?? (restore && spec.n !== undefined ? preparedName(job.id, spec.n) : containerName(job.id));
    const { ssh, mnt, transport, envDir, args, net } = await this.ready(spec, name);
    const prepared = Date.now();
    try {
      // A restore creates the same container and starts it from the checkpoint (runtimes/criu.ts).
      if (restore) args.splice(0, args.length, ...createArgs(args));
      let r = await ssh.exec(args, { timeoutMs: 120_000 });
      const withoutIp = args.filter((a, i) => a !== '--ip' && args[i - 1] !== '--ip');
      if (r.code !== 0 && spec.moved?.ip && IP_TAKEN.test(r.stderr)) {
        // The address cannot be had here (a network made without the user's subnet, or taken): a new one, said in the log.
        this.log('the moved job cannot keep its address here; it gets a new one', { job: job.id, host: spec.host, ip: spec.moved.ip, why: r.stderr.trim().split('\n')[0] });
        await ssh.exec(['docker', 'rm', '-f', name]).catch(() => {});
        r = await ssh.exec(withoutIp, { timeoutMs: 120_000 });
      }
      if (r.code !== 0) throw await this.runFailure(ssh, spec, r, restore ? 'docker create' : 'docker run', net);
      if (restore) {
        const dir = criuDir(cfg.workDir, job.id);
        const restored = await restoreContainer(ssh, name, dir, restore.name, spec.host).then(() => null, (e: Error) => e);
        // A created container takes its address only when it starts: one the source's container still holds (hosts
        // that share one engine) is given up for a new one, said in the log; the processes' own sockets are CRIU's.
        if (restored && spec.moved?.ip && IP_TAKEN.test(restored.message)) {
          this.log('the moved job cannot keep its address here; it gets a new one', { job: job.id, host: spec.host, ip: spec.moved.ip, why: restored.message });
          await ssh.exec(['docker', 'rm', '-f', name]).catch(() => {});
          const again = await ssh.exec(withoutIp, { timeoutMs: 120_000 });
          if (again.code !== 0) throw await this.runFailure(ssh, spec, again, 'docker create', net);
          await restoreContainer(ssh, name, dir, restore.name, spec.host);
        } else if (restored) throw restored;
      }
      // The env file goes once Docker has read it; not waited for (cleanup removes the folder again).
      void removeEnvDir(ssh, envDir);
    } catch (e) {
      void removeEnvDir(ssh, envDir);
      await ssh.exec(['docker', 'rm', '-f', name]).catch(() => {});
      await this.mounts.unmount(ssh, mnt).catch(() => {});
      throw e;
    }
    const now = Date.now();
    this.log('container started', { job: job.id, host: spec.host, waitedMs: began - asked, mountMs: prepared - began, runMs: now - prepared, ...(restore ? { restored: restore.name } : {}) });
    return { host: spec.host, container: name, mnt, transport, logPath: spec.logPath, envDir, ...this.startFacts(spec) };
  }

  /**
   * A move that falls back: the source's container, kept (with its mount) since its checkpoint, is started again from
   * that checkpoint, its own file system as it was. Its remains are this attempt's from now on; on failure they go.
   */
  private async restoreHeld(spec: StartSpec, held: DockerRef, checkpoint: string, asked: number): Promise<DockerRef> {
    const began = Date.now();
    const ssh = this.hosts.exec(held.host);
    this.takeOver(held);
    try {
      const fin = await ssh.run(['docker', 'inspect', '--format', '{{.State.FinishedAt}}', held.container], 'reading when the container stopped', { timeoutMs: 30_000 });
      await restoreContainer(ssh, held.container, criuDir(this.hosts.config(held.host).workDir, spec.job.id), checkpoint, held.host);
      this.log('container started', { job: spec.job.id, host: held.host, waitedMs: began - asked, restored: checkpoint, into: held.container, runMs: Date.now() - began });
      const { envDir: _e, logOffset: _o, ...ref } = held;
      return { ...ref, logPath: spec.logPath, logsSince: fin.trim(), ...this.startFacts(spec) };
    } catch (e) {
      await this.cleanup(ssh, held).catch(() => {});
      throw e;
    }
  }

  /**
   * A move's next attempt, made ready while the job still ran on its source: the workspace mounted, the container
   * created (`docker create`, same network address and alias), nothing of the job run. start() then only starts it.
   */
  prepare(spec: PrepareSpec): Promise<PreparedRef> {
    return this.startSlot(spec.host, async () => {
      const began = Date.now();
      const name = preparedName(spec.job.id, spec.n);
      const { ssh, mnt, transport, envDir, envText, args, net } = await this.ready(spec, name);
      try {
        // One left by a broker that stopped mid-move has the same name; `docker rm` (no -f) never removes a running one.
        await ssh.exec(['docker', 'rm', name], { timeoutMs: 30_000 }).catch(() => {});
        const r = await ssh.exec(createArgs(args), { timeoutMs: 120_000 });
        if (r.code !== 0) throw await this.runFailure(ssh, spec, r, 'docker create', net);
      } catch (e) {
        await ssh.exec(['docker', 'rm', '-f', name]).catch(() => {});
        await this.mounts.unmount(ssh, mnt).catch(() => {});
        throw e;
      } finally {
        void removeEnvDir(ssh, envDir);
      }
      this.log('destination prepared', { job: spec.job.id, host: spec.host, container: name, ms: Date.now() - began });
      return { host: spec.host, container: name, mnt, transport, envDir, key: planKey(envText, args) };
    });
  }

  /**
   * Starts a prepared container when it was made for this very start (same variables and arguments); null when it
   * was not (it is removed, and the start goes the usual way). Rejects when `docker start` fails (nothing is left).
   */
  private async startPrepared(spec: StartSpec, p: PreparedRef): Promise<DockerRef | null> {
    const ssh = this.hosts.exec(spec.host);
    const plan = p.host === spec.host ? this.plan(spec, p.mnt, `${p.envDir}/env`, p.container) : undefined;
    if (!plan || planKey(plan.envText, plan.args) !== p.key) {
      this.log('the prepared container does not match the start; starting anew', { job: spec.job.id, host: spec.host, container: p.container });
      await this.removePrepared(this.hosts.exec(p.host), p.container, p.mnt);
      return null;
    }
    let r = await ssh.exec(['docker', 'start', p.container], { timeoutMs: 120_000 });
    // The source's container may have stopped a moment ago on this same engine (hosts that share one): its address
    // is given back just after its exit is reported. Asked again for a short while before giving the address up.
    for (const until = Date.now() + IP_RETRY_MS; r.code !== 0 && spec.moved?.ip && /address already in use/i.test(r.stderr) && Date.now() < until; ) {
      await new Promise((res) => setTimeout(res, 100));
      r = await ssh.exec(['docker', 'start', p.container], { timeoutMs: 120_000 });
    }
    if (r.code !== 0) {
      await this.removePrepared(ssh, p.container, p.mnt);
      if (spec.moved?.ip && IP_TAKEN.test(r.stderr)) {
        this.log('the moved job cannot keep its address here; starting anew', { job: spec.job.id, host: spec.host, ip: spec.moved.ip, why: r.stderr.trim().split('\n')[0] });
        return null;
      }
      throw await this.runFailure(ssh, spec, r, 'docker start', `${spec.host}\0${spec.job.owner}`);
    }
    return { host: spec.host, container: p.container, mnt: p.mnt, transport: p.transport, logPath: spec.logPath, envDir: p.envDir, ...this.startFacts(spec) };
  }

  private async removePrepared(ssh: RemoteExec, container: string, mnt: string): Promise<void> {
    await ssh.exec(['docker', 'rm', '-f', container], { timeoutMs: 60_000 }).catch(() => {});
    await this.mounts.unmount(ssh, mnt).catch(() => {});
  }

  async unprepare(host: string, jobId: string, n: number): Promise<void> {
    await this.removePrepared(this.hosts.exec(host), preparedName(jobId, n), mountPoint(this.hosts.config(host).workDir, this.brokerId, jobId));
  }

  /**
   * A job that was starting when the broker stopped: its container (labelled with the job and this broker) may run
   * the user's code already; then it is followed from the log file's size. A container that was created but never
   * started is removed, as is the mount of a job with no container; null then.
   */
  async recover(job: StoredJob, logPath: string, n?: number, notThese: string[] = []): Promise<DockerRef | null> {
    if (!job.host) return null;
    const cfg = this.hosts.config(job.host);
    const ssh = this.hosts.exec(job.host);
    const mnt = mountPoint(cfg.workDir, this.brokerId, job.id);
    let name = containerName(job.id);
    let found: string[] = [];
    // `docker run` may still be creating it (its CLI was cut off with the broker's SSH session): look again shortly.
    for (let waited = 0; ; waited += 1_000) {
      const ps = await ssh.run(['docker', 'ps', '-a', '--filter', `label=gpurun.job=${job.id}`, '--filter', `label=gpurun.broker=${this.brokerId}`, '--format', '{{.Names}} {{.State}}'], 'finding the job\'s container', { timeoutMs: 30_000 });
      const lines = ps.split('\n').map((l) => l.trim()).filter((l) => !notThese.includes(l.split(' ')[0]));
      // A move's attempt runs in the container prepared for it, when there is one.
      const moved = n === undefined ? [] : lines.filter((l) => l.startsWith(`${preparedName(job.id, n)} `));
      if (moved.length) name = preparedName(job.id, n!);
      found = moved.length ? moved : lines.filter((l) => l.startsWith(`${name} `));
      if (found.length || waited >= RECOVER_WAIT_MS) break;
      await new Promise((r) => setTimeout(r, 1_000));
    }
    const state = found[0]?.split(' ')[1];
    if (!state || state === 'created') {
      if (state) await ssh.exec(['docker', 'rm', '-f', name]);
      await this.unmount(ssh, mnt);
      return null;
    }
    const transport = job.workspaceFrom === 'client' ? 'relay' : cfg.mount.transport;
    const boot = this.hosts.reach(job.host).bootId;
    return { host: job.host, container: name, mnt, transport, logPath, gpus: job.gpuIndices, ...(boot ? { bootId: boot } : {}), startedAt: new Date().toISOString() };
  }

  /**
   * `docker logs` cannot start at a byte: it prints everything, and what the log file has is dropped. The job's stderr
   * is joined to its stdout inside the container, so the command's own stderr is not the job's (login-shell noise).
   */
  protected followCommand(ref: MountedRef, logSize: number): FollowCommand {
    return { argv: ['docker', 'logs', '-f', ...logsSince(ref as DockerRef), (ref as DockerRef).container], skip: logSize };
  }

  protected override notes(ref: MountedRef): string[] {
    return this.pausedSeen.has((ref as DockerRef).container) ? ['the container was paused (docker pause) while it ran'] : [];
  }

  protected drainCommand(ref: MountedRef, logSize: number): FollowCommand {
    return { argv: ['docker', 'logs', ...logsSince(ref as DockerRef), (ref as DockerRef).container], skip: logSize };
  }

  protected async state(ssh: RemoteExec, ref: MountedRef): Promise<HostJobState> {
    const r = ref as DockerRef;
    const vanished = { lost: `the container ${r.container} vanished from ${r.host} (removed by someone else, or the host's Docker was reset)` };
    const inspect = async (): Promise<ContainerState | null> => {
      const ins = await ssh.exec(['docker', 'inspect', '--format', '{{json .State}}', r.container], { timeoutMs: 30_000 });
      if (ins.code === 0) return parseContainerState(ins.stdout.trim());
      if (!/no such (object|container)/i.test(ins.stderr)) throw new Error(`docker inspect failed: ${ins.stderr.trim()}`);
      return null;
    };
    let st = await inspect();
    // `docker rm -f` from outside kills the container (exit 137) before it removes it: a kill that is the first step
    // of a removal is the runtime lost, not the job's own end. Looked at again once, shortly, to tell the two apart.
    if (!st || st.removing) return vanished;
    if (!st.running && st.exitCode === 137 && !st.oomKilled) {
      await new Promise((res) => setTimeout(res, REMOVAL_LOOK_MS));
      const again = await inspect();
      if (!again || again.removing) return vanished;
      st = again;
    }
    if (st.running) {
      if (st.paused && !this.pausedSeen.has(r.container)) {
        this.pausedSeen.add(r.container);
        this.log('the job\'s container is paused (docker pause): it runs no code until unpaused', this.describe(r));
      }
      return 'running';
    }
    const endedAt = st.finishedAt && !st.finishedAt.startsWith('0001') ? new Date(st.finishedAt).toISOString() : new Date().toISOString();
    const info: ExitInfo = { exitCode: st.exitCode, signal: null, endedAt, ...(st.oomKilled ? { oomKilled: true } : {}) };
    if (couldNotRun(st.exitCode, st.error)) {
      // A virtualenv whose python links to a Python the image lacks: say so, not only "not found".
      const c = await containerCommand(ssh, r.container).catch(() => ({ command0: undefined, image: undefined }));
      const why = await explainInterpreter(ssh, r.mnt, CONTAINER_WORKSPACE, c.command0, { kind: 'image', ...(c.image ? { name: c.image } : {}) });
      if (why) return { ...info, startError: why };
    }
    if (st.error) return { ...info, startError: st.error };
    if (st.exitCode === 127 || st.exitCode === 126) return { ...info, startError: `the command was not found or could not be run in the image (exit ${st.exitCode}); see the output` };
    return info;
  }

  protected async stopNow(ssh: RemoteExec, ref: MountedRef): Promise<void> {
    await ssh.exec(['docker', 'stop', '-t', '2', (ref as DockerRef).container], { timeoutMs: 30_000 });
  }

  protected async remove(ssh: RemoteExec, ref: MountedRef): Promise<void> {
    await ssh.exec(['docker', 'rm', '-f', (ref as DockerRef).container], { timeoutMs: 60_000 });
    const envDir = (ref as DockerRef).envDir;
    if (envDir) await removeEnvDir(ssh, envDir);
  }

  /**
   * Removes this broker's containers and mounts on `host` that belong to no live job (`isLive(jobId)`): left by a
   * job that was mid-start when the broker died, or by a cleanup that failed.
   */
  async sweep(host: string, isLive: (jobId: string) => boolean): Promise<string[]> {
    const ssh = this.hosts.exec(host);
    const removed: string[] = [];
    const ps = await ssh.run(['docker', 'ps', '-a', '--filter', `label=gpurun.broker=${this.brokerId}`, '--format', '{{.Label "gpurun.job"}} {{.Names}}'], 'listing containers');
    for (const line of ps.split('\n')) {
      const [jobId, name] = line.trim().split(' ');
      if (!jobId || !name || isLive(jobId)) continue;
      await ssh.exec(['docker', 'rm', '-f', name]);
      removed.push(name);
    }
    return [...removed, ...(await this.sweepMounts(ssh, this.hosts.config(host), isLive))];
  }

  async signal(ref: Record<string, unknown>, sig: string): Promise<void> {
    const r = ref as DockerRef;
    const res = await this.hosts.exec(r.host).exec(['docker', 'kill', '--signal', sig, r.container], { timeoutMs: 30_000 });
    if (res.code !== 0) throw new GpurunError('E_CONFLICT', `could not signal the job on ${r.host} (${sig}): ${res.stderr.trim()}`);
  }

  async stop(ref: Record<string, unknown>, graceMs: number): Promise<void> {
    const r = ref as DockerRef;
    await this.hosts.exec(r.host).exec(['docker', 'stop', '-t', String(Math.max(1, Math.ceil(graceMs / 1000))), r.container], { timeoutMs: graceMs + 30_000 });
  }
}
