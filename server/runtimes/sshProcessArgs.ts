/**
 * Commands of the process runtime for SSH hosts (runtimes/sshProcess.ts), as argv, and parsers of what they print.
 * Pure. Every script here is a constant: user data (the command, variables, paths) reaches it only as positional
 * arguments, never as shell text.
 *
 * A job's run directory on the host (`WORKDIR/jobs/JOBID/`, mode 0700) holds:
 * - `job.sh`: JOB_SCRIPT; `broker`: the id of the broker that started it; `env/NAME`: each variable's value;
 * - `pid`: `PID SUPERVISOR START`: the job's pid (also its process group and session id), the pid of the shell that
 *   waits for it, and the job's start time in clock ticks since boot (to tell a recycled pid from the job's);
 * - `out`: the job's stdout and stderr, in order;
 * - `exit`: `CODE ENDED_AT`, written (atomically) by the supervisor when the job ends.
 */
import { posix } from 'node:path';

/** The job's run directory on the host. */
export function runDir(workDir: string, jobId: string): string {
  return posix.join(workDir, 'jobs', jobId);
}

/** Shell functions the scripts share: the start time of a pid, and whether the job's process group is still ours. */
const FUNCTIONS = `starttime() {
  read -r s <"/proc/$1/stat" || return 1
  s=\${s##*) }
  set -- $s
  shift 19
  printf '%s' "$1"
}
ours() {
  # The group's leader is gone (its number is not given out again while the group has members), or it is ours.
  [ ! -e "/proc/$pid" ] || [ "$(starttime "$pid" 2>/dev/null)" = "$start" ]
}
readpid() {
  pid='' sup='' start=''
  [ -s "$1/pid" ] && read -r pid sup start <"$1/pid" && [ -n "$pid" ]
}
supervising() {
  # $sup is the shell that waits for the job of run directory $1 (its pid could belong to anything by now).
  tr '\\0' '\\n' <"/proc/$sup/cmdline" 2>/dev/null | grep -qxF "$1/job.sh"
}
`;

/**
 * The script each job runs under, written to the run directory as job.sh.
 * `sh job.sh supervise DIR CWD CMD...` starts the job in its own session (so its process group is its own) with
 * output to DIR/out, waits for it and writes DIR/exit. `sh job.sh exec DIR CWD CMD...` is that job: it records its
 * pid, takes its variables from DIR/env, enters CWD and becomes CMD.
 */
export const JOB_SCRIPT = `# gpurun: one job on this host (made by the broker; see server/runtimes/sshProcessArgs.ts).
${FUNCTIONS}mode=$1 dir=$2
shift 2
case $mode in
supervise)
  setsid sh "$dir/job.sh" exec "$dir" "$@" </dev/null >>"$dir/out" 2>&1 &
  wait "$!"
  rc=$?
  printf '%s %s\\n' "$rc" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$dir/.exit" && mv -f "$dir/.exit" "$dir/exit"
  ;;
exec)
  printf '%s %s %s\\n' "$$" "$PPID" "$(starttime "$$")" >"$dir/.pid" && mv -f "$dir/.pid" "$dir/pid" || exit 125
  for f in "$dir"/env/*; do
    [ -f "$f" ] || continue
    v=$(cat "$f" && printf x) && export "\${f##*/}=\${v%x}"
  done
  cd "$1" || { echo "gpurun: cannot enter the workspace mount $1" >&2; exit 126; }
  shift
  case $1 in
  */*) ;;
  *) command -v "$1" >/dev/null 2>&1 || { printf 'gpurun: %s: command not found on this host\n' "$1" >&2; exit 127; } ;;
  esac
  exec "$@"
  ;;
esac
`;

/**
 * Makes the run directory, writes job.sh, the broker id and the variables, starts the supervisor detached from the
 * SSH session (its own session, no terminal, stdin/out/err away from the channel), and waits until the job has
 * recorded its pid (prints the pid file) or has already ended.
 * argv: SCRIPT DIR BROKER CWD N CMD...; stdin: N variables (launchInput), so no value is ever on a command line
 * (readable in /proc/PID/cmdline by everyone on the host).
 */
const LAUNCH = `script=$1 dir=$2 broker=$3 cwd=$4 n=$5
shift 5
mkdir -p "\${dir%/*}" && mkdir -m 700 "$dir" && mkdir "$dir/env" || exit 1
printf '%s' "$script" >"$dir/job.sh" && printf '%s\\n' "$broker" >"$dir/broker" || exit 1
while [ "$n" -gt 0 ]; do
  read -r name len || exit 1
  case $name in '' | [0-9]* | *[!A-Za-z0-9_]*) exit 1 ;; esac
  head -c "$len" >"$dir/env/$name" || exit 1
  n=$((n - 1))
done
setsid sh "$dir/job.sh" supervise "$dir" "$cwd" "$@" </dev/null >/dev/null 2>&1 &
i=0
until [ -s "$dir/pid" ] || [ -s "$dir/exit" ]; do
  i=$((i + 1))
  if [ "$i" -gt 300 ]; then echo "the job did not record its pid within 15 s" >&2; exit 1; fi
  sleep 0.05
done
cat "$dir/pid" 2>/dev/null
exit 0
`;

/** Prints where the job stands, one line: `exit PID SUP CODE ENDED_AT`, `running PID SUP`, `gone PID SUP`, `nopid`, `missing`. */
const STATUS = `${FUNCTIONS}dir=$1
[ -d "$dir" ] || { echo missing; exit 0; }
ended() { [ -s "$dir/exit" ] && printf 'exit %s %s %s\\n' "\${pid:-0}" "\${sup:-0}" "$(cat "$dir/exit")"; }
readpid "$dir"
ended && exit 0
[ -n "$pid" ] || { echo nopid; exit 0; }
if supervising "$dir"; then echo "running $pid $sup"; exit 0; fi
ended && exit 0
echo "gone $pid $sup"
`;

/** TERM to the job's process group, KILL after TENTHS tenths of a second if any of it is left. argv: DIR TENTHS */
const STOP = `${FUNCTIONS}readpid "$1" && ours || exit 0
kill -TERM "-$pid" 2>/dev/null || exit 0
i=0
while [ "$i" -lt "$2" ] && kill -0 "-$pid" 2>/dev/null; do
  sleep 0.1
  i=$((i + 1))
done
kill -KILL "-$pid" 2>/dev/null
exit 0
`;

/** A signal to the job's process group (exit 3: no job of ours there). argv: DIR SIGNAL (a name without SIG: USR1) */
const SIGNAL = `${FUNCTIONS}readpid "$1" && ours || exit 3
kill "-$2" "-$pid"
`;

/** KILL to the supervisor and to whatever is left of the job's process group, then removes the run directory. argv: DIR */
const REMOVE = `${FUNCTIONS}if readpid "$1"; then
  # The supervisor first: once the job dies it writes the exit file, into the folder being removed.
  if supervising "$1"; then kill -KILL "$sup" 2>/dev/null; fi
  if ours; then kill -KILL "-$pid" 2>/dev/null; fi
fi
i=0
until rm -rf -- "$1" 2>/dev/null; do
  i=$((i + 1))
  [ "$i" -lt 20 ] || exec rm -rf -- "$1"
  sleep 0.1
done
`;

/** argv: DIR FROM(1-based) PID */
const FOLLOW = `dir=$1 from=$2 pid=$3
if [ -s "$dir/exit" ] || [ "$pid" = 0 ]; then exec tail -c "+$from" "$dir/out"; fi
tail -c "+$from" -s 0.2 -f --pid="$pid" "$dir/out" || exit
i=0
while [ ! -s "$dir/exit" ] && [ "$i" -lt 40 ]; do
  sleep 0.05
  i=$((i + 1))
done
`;

/** One line per run directory under JOBS that names its broker: `JOBID BROKER`. argv: JOBS */
const LIST = `for d in "$1"/*/; do
  [ -s "$d/broker" ] || continue
  d=\${d%/}
  printf '%s %s\\n' "\${d##*/}" "$(head -n 1 "$d/broker")"
done
`;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface LaunchInput {
  dir: string;
  brokerId: string;
  /** The folder the job starts in (its workspace mount). */
  cwd: string;
  env: Record<string, string>;
  command: string[];
}

/** argv that starts the job detached; prints the pid file (`PID SUPERVISOR START`). Its stdin: launchInput(j.env). */
export function launchArgs(j: LaunchInput): string[] {
  if (j.command.length === 0) throw new Error('launchArgs: empty command');
  return ['sh', '-c', LAUNCH, 'gpurun-launch', JOB_SCRIPT, j.dir, j.brokerId, j.cwd, String(launchVars(j.env).length), ...j.command];
}

/** The launch script's stdin: per variable a line `NAME BYTES`, then exactly BYTES bytes of its value. */
export function launchInput(env: Record<string, string>): Buffer {
  return Buffer.concat(launchVars(env).flatMap(([k, v]) => [Buffer.from(`${k} ${Buffer.byteLength(v)}\n`), Buffer.from(v)]));
}

function launchVars(env: Record<string, string>): Array<[string, string]> {
  return Object.entries(env).map(([k, v]) => {
    // Names become file names in env/: only what a shell variable may be called (submit checks users' names).
    if (!ENV_NAME.test(k)) throw new Error(`launchArgs: ${JSON.stringify(k)} is not a variable name`);
    return [k, v];
  });
}

export function statusArgs(dir: string): string[] {
  return ['sh', '-c', STATUS, 'gpurun-status', dir];
}

export function stopArgs(dir: string, graceMs: number): string[] {
  return ['sh', '-c', STOP, 'gpurun-stop', dir, String(Math.max(1, Math.ceil(graceMs / 100)))];
}

/** `sig` is a signal name such as SIGUSR1 (validated at submit); sh's kill takes it without the SIG. */
export function signalArgs(dir: string, sig: string): string[] {
  return ['sh', '-c', SIGNAL, 'gpurun-signal', dir, sig.replace(/^SIG/, '')];
}

export function removeArgs(dir: string): string[] {
  return ['sh', '-c', REMOVE, 'gpurun-remove', dir];
}

export function listRunsArgs(workDir: string): string[] {
  return ['sh', '-c', LIST, 'gpurun-runs', posix.join(workDir, 'jobs')];
}

/**
 * argv that prints the job's output from byte `from` (0-based) on, following it while the job (`pid`) lives, then
 * waits a moment for the exit file (so the caller finds the job ended, not about to). An ended job's output is only
 * printed: its pid may belong to another process by now. Needs GNU tail (--pid).
 */
export function followArgs(dir: string, from: number, pid: number): string[] {
  return ['sh', '-c', FOLLOW, 'gpurun-follow', dir, String(from + 1), String(pid)];
}

export interface Pids {
  pid: number;
  supervisor: number;
}

/** Parses the pid file (`PID SUPERVISOR START`); zeros when it is empty (the job ended before it recorded them). */
export function parsePidFile(text: string): Pids {
  const t = text.trim();
  if (t === '') return { pid: 0, supervisor: 0 };
  const m = /^(\d+) (\d+)(?: \d*)?$/.exec(t);
  if (!m) throw new Error(`not a pid file: ${JSON.stringify(t.slice(0, 200))}`);
  return { pid: Number(m[1]), supervisor: Number(m[2]) };
}

export type RunState =
  | { kind: 'exit'; pid: number; supervisor: number; exitCode: number; endedAt: string }
  | { kind: 'running'; pid: number; supervisor: number }
  | { kind: 'gone'; pid: number; supervisor: number }
  | { kind: 'nopid' }
  | { kind: 'missing' };

/** Parses the status script's line. Throws on anything else (the host's shell printed something unexpected). */
export function parseRunState(text: string): RunState {
  const t = text.trim();
  if (t === 'missing' || t === 'nopid') return { kind: t };
  const e = /^exit (\d+) (\d+) (\d+) (\S+)$/.exec(t);
  if (e) {
    const at = new Date(e[4]);
    return { kind: 'exit', pid: Number(e[1]), supervisor: Number(e[2]), exitCode: Number(e[3]), endedAt: Number.isNaN(at.getTime()) ? new Date().toISOString() : at.toISOString() };
  }
  const r = /^(running|gone) (\d+) (\d+)$/.exec(t);
  if (r) return { kind: r[1] as 'running' | 'gone', pid: Number(r[2]), supervisor: Number(r[3]) };
  throw new Error(`unexpected job status from the host: ${JSON.stringify(t.slice(0, 200))}`);
}

/** Parses the run list: the jobs under the host's workDir that `brokerId` started. */
export function parseRuns(text: string, brokerId: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim().split(' '))
    .filter((w) => w.length === 2 && w[0] && w[1] === brokerId)
    .map((w) => w[0]);
}
