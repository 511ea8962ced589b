/**
 * The `gpurun` command. Each subcommand lives in its own function; this file only dispatches and turns errors into
 * a message, a hint and an exit code.
 */
import { GpurunError, isGpurunError } from '../protocol/errors.ts';
import { runCommand } from './run.ts';
import { drainCommand, migrateCommand } from './migrate.ts';
import { brokerCommand, cancelCommand, hostsCommand, logsCommand, lsCommand, showCommand, tokenCommand, waitCommand } from './commands.ts';
import { completionCommand } from './completion.ts';
import { closest } from './suggest.ts';
import { sftpServeCommand } from './sftpServe.ts';
import { serveWorkspaceCommand } from './serveWorkspace.ts';
import { lspCommand } from './lsp.ts';
import { execCommand } from './exec.ts';
import { forwardCommand } from './forward.ts';
import { shellCommand } from './shell.ts';

const VERSION = '0.1.0';

const HELP = `gpurun ${VERSION}: run code on a GPU host or a Slurm cluster, from a shell or your editor.

Usage:
  gpurun run [options] -- CMD [ARGS...]   run a job and stream its output (gpurun run --help)
  gpurun ls [--all] [--state S] [--since AGE] [--name TEXT] [--json]
                                          list your jobs (gpurun ls --help)
  gpurun show [--json] ID                 a job, its attempts (faults, evidence), what its GPUs do
  gpurun logs [-f] [--tail N] [--from OFFSET] ID
                                          print a job's output
  gpurun wait [--notify] ID               wait for a job to end; exit with its code
  gpurun cancel ID                        stop a job
  gpurun exec [-i] [-t] ID -- CMD [ARGS...]
                                          run CMD in a running job (-it: a terminal, e.g. -- bash); exits with its code
  gpurun shell [run options]              a job that is a shell on this terminal, holding its GPUs until it exits
  gpurun forward ID PORT[:LOCAL]          forward a port of a running job to 127.0.0.1:LOCAL here
  gpurun hosts [--json]                   show hosts and their GPUs
  gpurun hosts clear HOST GPU             admin: put a quarantined GPU back into service
  gpurun migrate ID [--to HOST]           move a running job (that checkpoints) to another host
  gpurun drain HOST | undrain HOST        admin: move jobs off a host, take no new ones (undrain: back)
  gpurun broker [--config FILE]           run a broker in the foreground
  gpurun token create USER [--admin]      create an API token (on the broker machine)
  gpurun serve-workspace ID               serve a client-served job's files until it ends (--help: options)
  gpurun sftp-serve --root DIR            serve DIR over SFTP on stdin/stdout (for GPU hosts' sshfs)
  gpurun completion bash|zsh|fish         print a shell completion script (gpurun completion --help)
  gpurun help COMMAND                     the help of one command
  gpurun lsp                              the language server of "# gpurun:" lines, on stdin/stdout

Broker: --broker URL or GPURUN_BROKER (token in GPURUN_TOKEN); with neither, a local broker is started on demand
with its state in $GPURUN_HOME (default: $XDG_DATA_HOME/gpurun or ~/.local/share/gpurun).
`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  run: runCommand,
  ls: lsCommand,
  show: showCommand,
  logs: logsCommand,
  wait: waitCommand,
  cancel: cancelCommand,
  exec: execCommand,
  shell: shellCommand,
  forward: forwardCommand,
  hosts: hostsCommand,
  migrate: migrateCommand,
  drain: drainCommand(true),
  undrain: drainCommand(false),
  broker: brokerCommand,
  token: tokenCommand,
  'serve-workspace': serveWorkspaceCommand,
  'sftp-serve': sftpServeCommand,
  completion: completionCommand,
  lsp: lspCommand,
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  // `gpurun help run` is `gpurun run --help`.
  if (cmd === 'help' && rest.length) return main([rest[0], '--help']);
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(HELP);
    return cmd ? 0 : 2;
  }
  if (cmd === '--version' || cmd === 'version') {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const fn = COMMANDS[cmd];
  if (!fn) {
    const near = closest(cmd, Object.keys(COMMANDS));
    throw new GpurunError('E_BAD_REQUEST', `unknown command "${cmd}"${near ? ` (did you mean "${near}"?)` : ''}`, { hint: near ? `Run: gpurun ${near}${rest.length ? ' …' : ''}` : 'See: gpurun --help' });
  }
  return fn(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (isGpurunError(err)) {
      process.stderr.write(`gpurun: error: ${err.message}\n`);
      if (err.hint) process.stderr.write(`gpurun: ${err.hint}\n`);
      process.exitCode = err.code === 'E_BAD_REQUEST' ? 2 : 1;
    } else {
      process.stderr.write(`gpurun: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
