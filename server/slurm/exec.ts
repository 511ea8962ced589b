/**
 * Running Slurm's commands on a cluster's login node. `RemoteExec` is all the backend needs; `LocalExec` runs them
 * on this machine (a broker that runs on the login node) as argv arrays, with no shell. An SSH implementation
 * (ssh2 pool under server/hosts/) plugs in behind the same interface, quoting argv with shJoin.
 */
import { spawn } from 'node:child_process';
import { GpurunError } from '../protocol/errors.ts';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RemoteExec {
  /** Runs argv (argv[0] looked up on PATH), `stdin` written to it; never rejects for a non-zero exit. */
  run(argv: string[], opts?: { stdin?: string; timeoutMs?: number }): Promise<ExecResult>;
  /** For messages: where commands run, e.g. "local" or "login.cluster.example". */
  readonly where: string;
}

export class LocalExec implements RemoteExec {
  readonly where = 'local';
  private readonly env: NodeJS.ProcessEnv;

  constructor(env: NodeJS.ProcessEnv = process.env) {
    this.env = env;
  }

  run(argv: string[], opts: { stdin?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    return new Promise((resolve) => {
      const child = spawn(argv[0], argv.slice(1), { env: this.env, stdio: ['pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 30_000 });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => err.push(d));
      child.on('error', (e) => resolve({ code: 127, stdout: '', stderr: e.message }));
      child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
      child.stdin.on('error', () => {});
      child.stdin.end(opts.stdin ?? '');
    });
  }
}

/** Runs argv and throws a GpurunError carrying exit code and stderr when it fails. */
export async function runOk(exec: RemoteExec, argv: string[], opts: { stdin?: string } = {}): Promise<string> {
  const r = await exec.run(argv, opts);
  if (r.code !== 0) {
    throw new GpurunError('E_UNREACHABLE', `${argv[0]} on ${exec.where} failed (exit code ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' ') || 'no message'}`, {
      exitCode: r.code,
      stderr: r.stderr,
      hint: 'Check that Slurm answers on the login node (sinfo) and the broker\'s account may submit there.',
    });
  }
  return r.stdout;
}
