/**
 * `gpurun shell [run options]`: an interactive job whose command is a shell, on this terminal (`gpurun run -it`).
 * It holds its GPUs until the shell exits or the job's time limit ends it. The shell is bash where the image or
 * host has it, else sh; the command is fixed text, no user data in it.
 */
import { usage } from './args.ts';
import { runCommand } from './run.ts';
import { SHELL_COMMAND } from '../protocol/interactiveJob.ts';

export const SHELL_HELP = `Usage: gpurun shell [run options]

Starts a job whose command is a shell on this terminal (bash where the job's image or host has it, else sh), as
gpurun run -it would: the same options (--gpus, --gpu-type, --time, --image, --workspace, …; gpurun run --help).
The job holds its GPUs until the shell exits (exit, or Ctrl+D) or its time limit ends it; its exit code is the
shell's.
`;


export async function shellCommand(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(SHELL_HELP);
    return 0;
  }
  if (argv.includes('--')) throw usage('shell', 'gpurun shell takes no command: it runs a shell (use gpurun run -it -- CMD for another program)');
  for (const f of ['-d', '--detach']) if (argv.includes(f)) throw usage('shell', `${f} does not go with gpurun shell: the shell runs on this terminal`);
  return runCommand([...argv, '--tty', '--', ...SHELL_COMMAND]);
}
