/**
 * Running a command on some machine, as argv. The one interface for it: the SSH pool (server/hosts/ssh.ts) and the
 * local runner of the Slurm backend (server/slurm/exec.ts) implement it; the pool adds long-lived channels
 * (`spawn`) for the host runtimes. No adapter imports here.
 */

/** How a command ended and what it printed. */
export interface ExecResult {
  /** Exit code; null when the command was ended by a signal. */
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export interface CommandExec {
  /** For messages: where commands run ("local", a host's or cluster's name). */
  readonly hostName: string;
  /**
   * Runs argv to its end (argv[0] looked up on PATH; over SSH each word is quoted with quoteShell), `stdin` written
   * to it, and collects its output. Never rejects for a non-zero exit; rejects when the machine cannot be reached.
   */
  exec(argv: readonly string[], opts?: { stdin?: string | Buffer; timeoutMs?: number }): Promise<ExecResult>;
}
