/**
 * Transparent checkpoint of a job's container with CRIU through Docker (`docker checkpoint create`, `docker start
 * --checkpoint`): what a host must have for it (probed), and the commands that checkpoint a container on one host and
 * restore it into a new container of the same name on another. Argument builders and parsers are pure; the two
 * runners take a host's command channel.
 *
 * What CRIU carries: the processes' memory, registers, open files (by path) and the container's /dev tmpfs. What it
 * does not: files the job wrote in the container's own file system (outside /workspace and its checkpoint folder),
 * established TCP connections (Docker asks runc for no --tcp-established), GPU state (NVIDIA's cuda-checkpoint would
 * be needed). The /workspace bind mount (a FUSE mount from sshfs on the host) is an external mount to CRIU, as runc
 * declares every bind mount: it is not dumped; on the destination the workspace is mounted again before the restore
 * and files open on it are reopened by path (their offsets kept).
 */
import { GpurunError } from '../protocol/errors.ts';
import type { RemoteExec } from '../hosts/ssh.ts';

/** The probe script's section about CRIU (hosts/probe.ts runs it with the rest): fixed text, no user data. */
export const CRIU_PROBE = [
  'echo @@criu',
  'if command -v criu >/dev/null 2>&1; then echo "criu $(criu --version 2>&1 | head -n 1)"; o=$(criu check 2>&1); echo "check $? $(printf %s "$o" | grep -v "^Warn" | tail -n 1)"; else echo "criu absent"; fi',
  `if command -v docker >/dev/null 2>&1; then echo "experimental $(docker version --format '{{.Server.Experimental}}' 2>&1 | tail -n 1)"; else echo "experimental absent"; fi`,
].join('\n');

/**
 * Whether the host can checkpoint a container transparently, from the probe's `@@criu` section: null when it can,
 * else why not (words for `gpurun hosts`). `docker` is whether the host runs jobs in Docker.
 */
export function transparentFromProbe(body: string | undefined, docker: boolean): string | null {
  if (!docker) return 'jobs here are plain processes; CRIU is used through Docker only';
  if (body === undefined) return 'not probed';
  const line = (k: string) => body.split('\n').find((l) => l.startsWith(`${k} `))?.slice(k.length + 1).trim();
  const criu = line('criu');
  if (!criu || criu === 'absent') return 'criu is not installed on the host';
  const check = /^(\S+)\s*(.*)$/.exec(line('check') ?? '');
  if (!check || check[1] !== '0') return `criu check failed${check ? ` (exit ${check[1]})` : ''}: ${check?.[2] || '(no output)'}`;
  const exp = line('experimental');
  if (exp !== 'true') return `the Docker engine is not in experimental mode (docker checkpoint needs it: "experimental": true in /etc/docker/daemon.json)${exp && exp !== 'false' ? `: ${exp}` : ''}`;
  return null;
}

/** Where a job's CRIU images are on a host (one folder per job, under the host's work folder). */
export function criuDir(workDir: string, jobId: string): string {
  return `${workDir}/criu/${jobId}`;
}

/** The checkpoint's name for the move out of attempt `n` (a docker checkpoint name: letters, digits, dashes). */
export function checkpointName(n: number): string {
  return `move-${n}`;
}

/** The exit status of a container that `docker checkpoint create` stopped (the engine reports SIGKILL's). */
export const CHECKPOINTED_EXIT_CODE = 137;

/** argv that checkpoints `container` into `dir/name` and stops it (Docker's default: the container exits). */
export function checkpointArgs(container: string, dir: string, name: string): string[] {
  return ['docker', 'checkpoint', 'create', '--checkpoint-dir', dir, container, name];
}

/**
 * Where a restore's CRIU log is while it runs: the runtime's work folder of the container, which the engine removes
 * when the restore fails (so it is followed meanwhile). Docker's own containerd, and a system containerd.
 */
export const RESTORE_LOGS = [
  '/var/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/$id/work/restore.log',
  '/run/containerd/io.containerd.runtime.v2.task/moby/$id/work/restore.log',
];

/**
 * argv that puts the images of `dir/name` where the engine looks for a container's checkpoints and starts the
 * container from them. Docker 20.10 refuses `docker start --checkpoint-dir` ("custom checkpointdir is not
 * supported"), so the images are linked into the container's own checkpoints folder under the engine's data root.
 * On a failed restore, CRIU's error lines (from its restore.log, followed while it ran) end stderr, after Docker's.
 */
export function restoreArgs(container: string, dir: string, name: string): string[] {
  return ['sh', '-c', [
    'set -e',
    'root=$(docker info --format "{{.DockerRootDir}}")',
    'id=$(docker inspect --format "{{.Id}}" "$1")',
    'mkdir -p "$root/containers/$id/checkpoints"',
    'rm -rf "$root/containers/$id/checkpoints/$3"',
    // Hard links where the folders share a file system (no second copy of the memory); else a copy.
    'cp -al "$2/$3" "$root/containers/$id/checkpoints/$3" 2>/dev/null || { rm -rf "$root/containers/$id/checkpoints/$3"; cp -a "$2/$3" "$root/containers/$id/checkpoints/$3"; }',
    'log=$(mktemp)',
    `tail -q -F -s 0.05 -n +1 ${RESTORE_LOGS.map((l) => `"${l}"`).join(' ')} >"$log" 2>/dev/null & t=$!`,
    // Running: the images are the container's now (removed with it); the job's folder goes.
    'if docker start --checkpoint "$3" "$1"; then kill $t; rm -f "$log"; rm -rf "$2/$3"; exit 0; fi',
    'sleep 0.3; kill $t',
    'grep "Error (" "$log" | head -n 20 | sed "s/^([0-9. ]*) *//; s/^/criu: /" >&2 || true',
    'rm -f "$log"',
    'exit 1',
  ].join('\n'), 'gpurun-restore', container, dir, name];
}

/**
 * What to show of a failed restore's stderr: Docker's last line, then CRIU's first error lines (the first is the
 * cause; the later ones are what failed because of it).
 */
export function restoreError(stderr: string): string {
  const lines = stderr.trim().split('\n').map((l) => l.trim()).filter(Boolean);
  const criu = lines.filter((l) => l.startsWith('criu: ')).map((l) => l.slice(6)).filter((l) => !/cgroupd: recv req error|Restoring FAILED/.test(l));
  const docker = lines.filter((l) => !l.startsWith('criu: ') && !l.startsWith('log file: '));
  return [...docker.slice(-1), ...criu.slice(0, 2)].join(' / ');
}

/** The argv of `docker run -d …` made into `docker create …` (the same container, not started). */
export function createArgs(runArgs: readonly string[]): string[] {
  if (runArgs[0] !== 'docker' || runArgs[1] !== 'run' || runArgs[2] !== '-d') throw new Error('not a docker run -d argv');
  return ['docker', 'create', ...runArgs.slice(3)];
}

/** Bytes of the files in `dir` on the host. */
export async function dirBytes(ssh: RemoteExec, dir: string): Promise<number> {
  const out = await ssh.run(['sh', '-c', 'du -sb "$1" | cut -f1', 'gpurun-du', dir], `measuring ${dir}`, { timeoutMs: 60_000 });
  return Number(out.trim()) || 0;
}

/**
 * The host-side checkpoint: `docker checkpoint create` (the argv after DIR NAME) run apart from the SSH session (its
 * own session, its output in `DIR/NAME.log`, its exit status in `DIR/NAME.exit` once done, its pid in `DIR/NAME.pid`), so that a broker
 * that dies meanwhile neither cuts the dump off half way nor leaves it unknown: the next broker waits for the same
 * dump. `DIR/NAME.exit` also says the images are complete (the engine still writes them after the container has
 * stopped). Started only when no dump of that name has ended or is running.
 */
const CHECKPOINT_SH = `d=$1; n=$2; shift 2
if [ -e "$d/$n.exit" ]; then exit 0; fi
if [ -e "$d/$n.pid" ] && kill -0 "$(cat "$d/$n.pid")" 2>/dev/null; then exit 0; fi
rm -rf "$d/$n" "$d/$n.log"; mkdir -p "$d"
setsid sh -c 'd=$1; n=$2; shift 2; echo $$ > "$d/$n.pid"; "$@" > "$d/$n.log" 2>&1; echo $? > "$d/$n.exit.tmp"; mv "$d/$n.exit.tmp" "$d/$n.exit"' gpurun-checkpoint "$d" "$n" "$@" < /dev/null > /dev/null 2>&1 &
i=0; while [ ! -e "$d/$n.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done`;

/** Waits on the host for `DIR/NAME.exit` (up to SECONDS), then prints it and the dump's last output lines. */
const CHECKPOINT_WAIT_SH = `d=$1; n=$2; t=$3; i=0
while [ ! -e "$d/$n.exit" ]; do
  if [ $i -ge $((t * 5)) ]; then echo timeout; exit 0; fi
  if [ ! -e "$d/$n.pid" ] || ! kill -0 "$(cat "$d/$n.pid")" 2>/dev/null; then sleep 0.3; [ -e "$d/$n.exit" ] || { echo gone; exit 0; }; fi
  sleep 0.2; i=$((i+1))
done
echo "exit $(cat "$d/$n.exit")"; tail -n 5 "$d/$n.log" 2>/dev/null`;

/** TERM to the dump's whole process group (sh's kill takes no "--": the group goes as "-PID"). */
const CHECKPOINT_KILL_SH = `[ -e "$1/$2.pid" ] && kill -TERM "-$(cat "$1/$2.pid")"`;

/** Starts `argv` (checkpointArgs) as the dump `dir/name` on the host, unless one of that name ran or runs. */
export function checkpointStartArgs(dir: string, name: string, argv: readonly string[]): string[] {
  return ['sh', '-c', CHECKPOINT_SH, 'gpurun-checkpoint', dir, name, ...argv];
}

/** Waits up to `seconds` for the dump `dir/name`: prints `exit N` and its last lines, `timeout`, or `gone`. */
export function checkpointWaitArgs(dir: string, name: string, seconds: number): string[] {
  return ['sh', '-c', CHECKPOINT_WAIT_SH, 'gpurun-ckwait', dir, name, String(seconds)];
}

/** Stops the dump `dir/name` that ran past its deadline. */
export function checkpointKillArgs(dir: string, name: string): string[] {
  return ['sh', '-c', CHECKPOINT_KILL_SH, 'gpurun-ckkill', dir, name];
}

/**
 * Checkpoints a running container into `dir/name` on its host; the container stops with it. On failure the job
 * goes on running: CRIU resumes the processes it had seized, and a container left frozen is unpaused. Throws a
 * GpurunError E_CONFLICT with CRIU's words then. With `fresh`, what an earlier dump of that name left is removed
 * first; without it (a broker taking a move on after a restart) a dump already started or ended is waited for.
 */
export async function checkpointContainer(ssh: RemoteExec, container: string, dir: string, name: string, timeoutMs: number, fresh = true): Promise<{ ms: number }> {
  const began = Date.now();
  if (fresh) await ssh.run(['sh', '-c', 'rm -rf "$1/$2" "$1/$2".exit "$1/$2".pid "$1/$2".log && mkdir -p "$1"', 'gpurun-ckdir', dir, name], 'making the checkpoint folder');
  await ssh.run(checkpointStartArgs(dir, name, checkpointArgs(container, dir, name)), 'starting the checkpoint', { timeoutMs: 30_000 });
  const r = await checkpointDone(ssh, dir, name, timeoutMs);
  if (r.ok) return { ms: Date.now() - began };
  if (r.timedOut) await ssh.exec(checkpointKillArgs(dir, name), { timeoutMs: 30_000 }).catch(() => undefined);
  // A checkpoint cut off (timeout) may leave the container frozen by the cgroup freezer.
  await ssh.exec(['docker', 'unpause', container], { timeoutMs: 30_000 }).catch(() => undefined);
  throw new GpurunError('E_CONFLICT', `the transparent checkpoint (CRIU) of the job failed; it goes on running: ${r.err}`, { stderr: r.err });
}

/** Whether the dump `dir/name` ended well, waiting up to `timeoutMs` for it (the images are complete then). */
export async function checkpointDone(ssh: RemoteExec, dir: string, name: string, timeoutMs: number): Promise<{ ok: boolean; timedOut?: boolean; err: string }> {
  const secs = Math.max(1, Math.ceil(timeoutMs / 1000));
  const r = await ssh.exec(checkpointWaitArgs(dir, name, secs), { timeoutMs: timeoutMs + 30_000 }).catch((e: Error) => ({ code: null, signal: null, stdout: `error ${e.message}`, stderr: '' }));
  const [head, ...rest] = r.stdout.trim().split('\n');
  if (head === 'exit 0') return { ok: true, err: '' };
  if (head === 'timeout') return { ok: false, timedOut: true, err: `no checkpoint within ${secs} s` };
  if (head === 'gone') return { ok: false, err: 'the checkpoint ended without a status (its host restarted?)' };
  return { ok: false, err: rest.slice(-3).join(' / ') || head || `exit ${r.code ?? r.signal}: ${r.stderr.trim()}` };
}

/** Starts the created `container` from the checkpoint `dir/name` on its host. Throws a GpurunError with CRIU's words. */
export async function restoreContainer(ssh: RemoteExec, container: string, dir: string, name: string, host: string): Promise<void> {
  const r = await ssh.exec(restoreArgs(container, dir, name), { timeoutMs: 300_000 });
  if (r.code !== 0) {
    const err = restoreError(r.stderr) || `exit ${r.code ?? r.signal}`;
    throw new GpurunError('E_BAD_REQUEST', `restoring the job's checkpoint on ${host} failed: ${err}`, { stderr: r.stderr, exitCode: r.code ?? undefined });
  }
}
