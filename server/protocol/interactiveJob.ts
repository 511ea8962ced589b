/**
 * `gpurun run -it -- CMD`: an interactive job. The job itself runs a small holder that keeps its place (GPUs, time
 * limit) and ends with CMD's exit status; CMD runs in the job through exec, under the user's terminal, and records
 * its status where the holder waits for it (a file named after the job in /dev/shm, or $TMPDIR, of the job's
 * container or host). So the job ends when CMD does, with its code, and holds its GPUs until then or its time limit.
 * Pure: both scripts are constants; CMD and the job id reach them only as positional words.
 */

/** Where both scripts keep the exit status (`$1`: the job id). */
const STATUS_FILE = `d=/dev/shm
[ -d "$d" ] && [ -w "$d" ] || d=\${TMPDIR:-/tmp}
f="$d/gpurun-$1.exit"
`;

/** The job's command: waits for the status file, then exits with it. argv: JOBID(from the env) CMD... (shown only). */
const HOLD = `set -- "$GPURUN_JOB_ID"
${STATUS_FILE}while [ ! -s "$f" ]; do sleep 0.2 2>/dev/null || sleep 1; done
read -r rc <"$f"
rm -f "$f"
exit "$rc"
`;

/**
 * What exec runs: CMD, then its status into the file. The shell ignores Ctrl+C, Ctrl+\\ and a hang-up, so it
 * records CMD's status however CMD ends; CMD runs in a subshell that sets them back to the defaults first (a shell may
 * undo what it ignored itself), so CMD sees them as usual. argv: JOBID CMD...
 */
const RUN = `trap '' INT QUIT HUP
${STATUS_FILE}shift
(trap - INT QUIT HUP; exec "$@")
rc=$?
printf '%s\\n' "$rc" >"$f.tmp" && mv -f "$f.tmp" "$f"
exit "$rc"
`;

/** The job's command for an interactive run of `command` (its words follow, for `gpurun ls` to show). */
export function holdCommand(command: readonly string[]): string[] {
  return ['sh', '-c', HOLD, 'gpurun-interactive', ...command];
}

/** The exec command that runs `command` in interactive job `jobId` and hands its status to the holder. */
export function holdRunCommand(jobId: string, command: readonly string[]): string[] {
  return ['sh', '-c', RUN, 'gpurun-interactive', jobId, ...command];
}

/** A shell for an interactive job or a terminal in a job: bash where the image or host has it, else sh (fixed text). */
export const SHELL_COMMAND = ['sh', '-c', 'if command -v bash >/dev/null 2>&1; then exec bash; fi; exec sh'];
