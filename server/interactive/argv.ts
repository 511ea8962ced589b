/**
 * Commands that reach into a running job on an SSH host, as argv (pure). The user's command is always the tail of
 * the argv: Docker and the constant scripts below take it as positional words, never as shell text.
 */
import { CONTAINER_WORKSPACE } from '../runtimes/docker.ts';

/**
 * `docker exec` into the job's container: the container's own environment (its GPU variables included), in
 * /workspace. With `tty`, Docker gives the process a terminal of its own and follows the size of the SSH channel's.
 * Docker stops reading options at the container's name, so the command's words are never options of Docker's.
 */
export function dockerExecArgs(container: string, command: readonly string[], tty?: { term: string }): string[] {
  return ['docker', 'exec', '-i', ...(tty ? ['-t', '-e', `TERM=${tty.term}`] : []), '-w', CONTAINER_WORKSPACE, container, ...command];
}

/**
 * A process in a job of a `runtime: "process"` host: the job's variables from its run directory (`DIR/env/NAME`, as
 * the job itself took them), in its workspace mount, then the command. argv: DIR CWD CMD...
 */
const PROCESS_EXEC = `dir=$1 cwd=$2
shift 2
for f in "$dir"/env/*; do
  [ -f "$f" ] || continue
  v=$(cat "$f" && printf x) && export "\${f##*/}=\${v%x}"
done
cd "$cwd" || { echo "gpurun: cannot enter the job's workspace $cwd" >&2; exit 126; }
exec "$@"
`;

export function processExecArgs(dir: string, cwd: string, command: readonly string[]): string[] {
  return ['sh', '-c', PROCESS_EXEC, 'gpurun-exec', dir, cwd, ...command];
}

/** The container's addresses on its networks, one per line. */
export function containerAddressArgs(container: string): string[] {
  return ['docker', 'inspect', '--format', '{{range .NetworkSettings.Networks}}{{println .IPAddress}}{{end}}', container];
}

/** The first IPv4 address of `docker inspect` (containerAddressArgs) output, or null when it has none. */
export function parseContainerAddress(text: string): string | null {
  return text.split('\n').map((l) => l.trim()).find((l) => /^\d{1,3}(\.\d{1,3}){3}$/.test(l)) ?? null;
}

/**
 * A command run under a PTY on this machine through util-linux `script` (no native PTY module): the size is set
 * first with `stty`, the terminal's device name is written to `ttyFile` (so later sizes can be set on it from
 * outside: localResizeArgv), then the command replaces the shell. `script -c` takes one shell line, so every word is
 * quoted with the tested quoting function (core/shellQuote.ts) by the caller; the words here are constants.
 */
export function localPtyArgv(rows: number, cols: number, ttyFile: string): string[] {
  return ['sh', '-c', 'stty rows "$1" cols "$2" 2>/dev/null; tty >"$3" 2>/dev/null; shift 3; exec "$@"', 'gpurun-pty', String(rows), String(cols), ttyFile];
}

/**
 * A new size for the terminal `tty` (a /dev/pts device): setting it on the terminal makes the kernel send SIGWINCH to
 * the program in the foreground there, as a terminal emulator's resize does.
 */
export function localResizeArgv(tty: string, rows: number, cols: number): string[] {
  return ['stty', '-F', tty, 'rows', String(rows), 'cols', String(cols)];
}

/** A hang-up of terminal `tty` (a /dev/pts device): SIGHUP to every process whose terminal it is (procps pkill). */
export function localHangupArgv(tty: string): string[] {
  return ['pkill', '-HUP', '-t', tty.replace(/^\/dev\//, '')];
}
