/**
 * Looks at a job's interpreter after the job could not run it (exit 126/127, or Docker's start error), where the
 * workspace's files are: on the SSH host in the job's mount, or in the local folder. The facts go to
 * core/interpreter.ts, which says what is wrong when it is a virtualenv whose python links to a Python the image or
 * host lacks. Best effort: any failure here leaves the runtime's own message.
 */
import type { CommandExec } from '../core/remoteExec.ts';
import { interpreterProbeArgs, missingInterpreterMessage, parseInterpreterProbe, type InterpreterPlace } from '../core/interpreter.ts';

/** A start failure worth looking at: the shell's "not found"/"cannot run", or an error of the container engine. */
export function couldNotRun(exitCode: number | null, startError?: string): boolean {
  return exitCode === 127 || exitCode === 126 || !!startError;
}

/**
 * The message for a dangling virtualenv interpreter, or null. `root`: the workspace as `exec` reads it; `seen`: the
 * workspace as the job sees it; `where`: what lacks the Python (the image, or the host), for the message.
 */
export async function explainInterpreter(exec: CommandExec, root: string, seen: string, command0: string | undefined, where: InterpreterPlace): Promise<string | null> {
  if (!command0) return null;
  try {
    const r = await exec.exec(interpreterProbeArgs(root, seen, command0), { timeoutMs: 15_000 });
    return r.code === 0 ? missingInterpreterMessage(parseInterpreterProbe(command0, r.stdout), where) : null;
  } catch {
    return null;
  }
}

/**
 * The job's first word and image, from `docker inspect` of its container (the container holds them, also for a job
 * an earlier broker process started): its command is `/bin/sh -c 'exec "$@" 2>&1' gpurun-job CMD…` (dockerRunArgs).
 */
export async function containerCommand(exec: CommandExec, container: string): Promise<{ command0?: string; image?: string }> {
  const r = await exec.exec(['docker', 'inspect', '--format', '{{json .Config.Cmd}}\n{{json .Config.Image}}', container], { timeoutMs: 15_000 });
  if (r.code !== 0) return {};
  const [cmd, image] = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown);
  const argv = Array.isArray(cmd) ? (cmd as string[]) : [];
  const at = argv.indexOf('gpurun-job');
  return { ...(at >= 0 && argv[at + 1] ? { command0: argv[at + 1] } : {}), ...(typeof image === 'string' ? { image } : {}) };
}
