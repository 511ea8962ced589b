/**
 * Running Slurm's commands on a cluster's login node, through the one command interface (CommandExec of
 * server/core/remoteExec.ts): `LocalExec` runs them on this machine (a broker that runs on the login node) as argv
 * arrays, with no shell; for a login node over SSH the ssh2 pool (`SshPool` of server/hosts/ssh.ts) runs them.
 */
import { spawn } from 'node:child_process';
import { GpurunError } from '../protocol/errors.ts';
import type { CommandExec, ExecResult } from '../core/remoteExec.ts';

/** How long one Slurm command may take (a hung login node must not stall the cluster's poll for good). */
export const SLURM_COMMAND_MS = 30_000;

export class LocalExec implements CommandExec {
  readonly hostName = 'local';
  private readonly env: NodeJS.ProcessEnv;

  constructor(env: NodeJS.ProcessEnv = process.env) {
    this.env = env;
  }

  exec(argv: readonly string[], opts: { stdin?: string | Buffer; timeoutMs?: number } = {}): Promise<ExecResult> {
    return new Promise((resolve) => {
      const child = spawn(argv[0], argv.slice(1), { env: this.env, stdio: ['pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? SLURM_COMMAND_MS });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => err.push(d));
      child.on('error', (e) => resolve({ code: 127, signal: null, stdout: '', stderr: e.message }));
      child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
      child.stdin.on('error', () => {});
      child.stdin.end(opts.stdin ?? '');
    });
  }
}

/** Runs argv and throws a GpurunError carrying exit code and stderr when it fails. */
export async function runOk(exec: CommandExec, argv: string[], opts: { stdin?: string } = {}): Promise<string> {
  const r = await exec.exec(argv, { timeoutMs: SLURM_COMMAND_MS, ...opts });
  if (r.code !== 0) {
    const code = r.code ?? r.signal;
    throw new GpurunError('E_UNREACHABLE', `${argv[0]} on ${exec.hostName} failed (exit code ${code}): ${r.stderr.trim().split('\n').slice(-3).join(' ') || 'no message'}`, {
      exitCode: r.code ?? undefined,
      stderr: r.stderr,
      hint: 'Check that Slurm answers on the login node (sinfo) and the broker\'s account may submit there.',
    });
  }
  return r.stdout;
}
