/**
 * Reaching into a running job: a new process in it (`gpurun exec`) and a TCP connection to one of its ports
 * (`gpurun forward`), one implementation per runtime, chosen once by the host's runtime kind:
 * - `docker` (SSH hosts): `docker exec` in the job's container over the broker's SSH connection (with a PTY on the
 *   SSH channel for a terminal); ports are reached at the container's address from the host (SSH direct-tcpip).
 * - `ssh-process` (SSH hosts without Docker): the job's variables and workspace mount on the host; ports on the
 *   host's 127.0.0.1.
 * - `process` (this machine): the job's variables and folder from its spec; a terminal through util-linux `script`;
 *   ports on 127.0.0.1.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ClientChannel } from 'ssh2';
import { GpurunError } from '../protocol/errors.ts';
import type { ExecExit, ExecRequest } from '../protocol/interactive.ts';
import type { RemoteExec } from '../hosts/ssh.ts';
import { shellCommand } from '../core/shellQuote.ts';
import { containerAddressArgs, dockerExecArgs, localHangupArgv, localPtyArgv, localResizeArgv, parseContainerAddress, processExecArgs } from './argv.ts';

/** A running attempt as the broker knows it (Broker.runningAttempt). */
export interface RunningTarget {
  job: { id: string; backend?: string | undefined };
  host: string;
  ref: Record<string, unknown>;
}

/** Where a process's output goes, as it comes. */
export interface ExecOutput {
  stdout(data: Buffer): void;
  stderr(data: Buffer): void;
}

/** A process started in a job. `exited` resolves once it has ended and all its output was passed on. */
export interface ExecSession {
  write(data: Buffer): void;
  /** The end of stdin. */
  end(): void;
  resize(rows: number, cols: number): void;
  /** Hangs up (the client went away): the process gets the end of its terminal or of its channel. */
  close(): void;
  exited: Promise<ExecExit>;
}

export interface InteractiveDeps {
  /** The runtime kind of a host (`docker`, `ssh-process`, `process`). */
  runtimeKind(host: string): string;
  /** The SSH connection of an SSH host (absent without SSH hosts). */
  ssh?: { exec(host: string): RemoteExec };
}

export class Interactive {
  private readonly d: InteractiveDeps;
  /**
   * Containers' addresses (by host and container), looked up once: a browser opens many connections, and each
   * lookup is a `docker inspect` over SSH. A failed connection forgets the address (a new attempt has a new one).
   */
  private readonly addresses = new Map<string, string>();

  constructor(d: InteractiveDeps) {
    this.d = d;
  }

  private kind(t: RunningTarget): string {
    if (t.job.backend && t.job.backend !== 'hosts') {
      throw new GpurunError('E_BAD_REQUEST', `job ${t.job.id} runs on ${t.job.backend}: exec and forward reach jobs of the host pool only`, { hint: 'On a Slurm cluster use its own tools (srun --jobid … --pty).' });
    }
    return this.d.runtimeKind(t.host);
  }

  private ssh(host: string): RemoteExec {
    if (!this.d.ssh) throw new GpurunError('E_INTERNAL', `no SSH connection to ${host}`);
    return this.d.ssh.exec(host);
  }

  async exec(t: RunningTarget, req: ExecRequest, out: ExecOutput): Promise<ExecSession> {
    const kind = this.kind(t);
    const tty = req.tty ? { rows: req.rows ?? 24, cols: req.cols ?? 80, term: req.term ?? 'xterm' } : undefined;
    if (kind === 'process') return localExec(t.ref, req.command, tty, out);
    const argv = kind === 'docker' ? dockerExecArgs(String(t.ref.container), req.command, tty) : processExecArgs(String(t.ref.dir), String(t.ref.mnt), req.command);
    const ch = await this.ssh(t.host).spawn(argv, tty ? { pty: tty } : {});
    return channelSession(ch, out, t.host);
  }

  /** A TCP connection to `port` of the job. Rejects (E_UNREACHABLE) when nothing listens there. */
  async connect(t: RunningTarget, port: number): Promise<Duplex> {
    const kind = this.kind(t);
    if (kind === 'process') return localConnect(port);
    const ssh = this.ssh(t.host);
    if (!ssh.forwardOut) throw new GpurunError('E_INTERNAL', `host ${t.host}'s connection cannot forward ports`);
    if (kind !== 'docker') return ssh.forwardOut('127.0.0.1', port);
    const key = `${t.host}\0${String(t.ref.container)}`;
    let address = this.addresses.get(key);
    if (!address) {
      const found = parseContainerAddress(await ssh.run(containerAddressArgs(String(t.ref.container)), 'finding the container\'s address', { timeoutMs: 15_000 }));
      if (!found) throw new GpurunError('E_CONFLICT', `the container of job ${t.job.id} has no network address`);
      // Containers of ended jobs leave their entries; a long-lived broker starts over now and then.
      if (this.addresses.size >= 1000) this.addresses.clear();
      this.addresses.set(key, (address = found));
    }
    return ssh.forwardOut(address, port).catch((e: unknown) => {
      this.addresses.delete(key);
      throw e;
    });
  }
}

function channelSession(ch: ClientChannel, out: ExecOutput, host: string): ExecSession {
  let exit: ExecExit | undefined;
  ch.on('data', (d: Buffer) => out.stdout(d));
  ch.stderr.on('data', (d: Buffer) => out.stderr(d));
  ch.on('exit', (code: number | null, signal?: string) => {
    exit = { code: code ?? null, signal: code === null || code === undefined ? (signal ?? null) : null };
  });
  ch.on('error', () => {});
  const exited = new Promise<ExecExit>((resolve, reject) => {
    ch.once('close', () => (exit ? resolve(exit) : reject(new GpurunError('E_UNREACHABLE', `the connection to host ${host} closed before the process ended`))));
  });
  exited.catch(() => {});
  return {
    write: (d) => void ch.write(d),
    end: () => void ch.end(),
    resize: (rows, cols) => void ch.setWindow(rows, cols, 0, 0),
    close: () => void ch.close(),
    exited,
  };
}

interface LocalSpec {
  cwd: string;
  env: Record<string, string>;
}

function localExec(ref: Record<string, unknown>, command: string[], tty: { rows: number; cols: number; term: string } | undefined, out: ExecOutput): ExecSession {
  let spec: LocalSpec;
  try {
    spec = JSON.parse(readFileSync(join(String(ref.dir), 'spec.json'), 'utf8')) as LocalSpec;
  } catch (e) {
    throw new GpurunError('E_CONFLICT', `the job's run folder cannot be read: ${(e as Error).message}`);
  }
  // Where the terminal's device name is written (a file of the job's run folder, one per exec).
  const ttyFile = join(String(ref.dir), `pty-${randomBytes(6).toString('hex')}`);
  const [file, args, env] = tty
    ? ['script', ['-q', '-f', '-e', '-c', shellCommand([...localPtyArgv(tty.rows, tty.cols, ttyFile), ...command]), '/dev/null'], { ...spec.env, TERM: tty.term }]
    : [command[0], command.slice(1), spec.env];
  const child = spawn(file, args, { cwd: spec.cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdout.on('data', (d: Buffer) => out.stdout(d));
  child.stderr.on('data', (d: Buffer) => out.stderr(d));
  child.stdin.on('error', () => {});
  const exited = new Promise<ExecExit>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      out.stderr(Buffer.from(`gpurun: ${err.code === 'ENOENT' ? `${file}: command not found` : err.message}\n`));
      resolve({ code: err.code === 'ENOENT' ? 127 : 126, signal: null });
    });
    child.once('close', (code, signal) => {
      rmSync(ttyFile, { force: true });
      resolve({ code, signal });
    });
  });
  return {
    write: (d) => void child.stdin.write(d),
    end: () => void child.stdin.end(),
    // `script` sizes its terminal from its own stdin (a pipe here): later sizes are set on the terminal directly.
    resize: (rows, cols) => {
      const dev = ptyDevice(ttyFile);
      if (!dev) return; // not started yet: it starts at the size it was asked for
      const [f, ...a] = localResizeArgv(dev, rows, cols);
      spawn(f, a, { stdio: 'ignore' }).on('error', () => {});
    },
    // A hang-up as a closed terminal gives one: SIGHUP to what runs on the terminal (`script` itself ignores it),
    // then SIGTERM to `script` for what is left.
    close: () => {
      const dev = tty ? ptyDevice(ttyFile) : undefined;
      if (!dev) {
        child.kill(tty ? 'SIGTERM' : 'SIGHUP');
        return;
      }
      const [f, ...a] = localHangupArgv(dev);
      spawn(f, a, { stdio: 'ignore' }).on('error', () => {});
      setTimeout(() => child.exitCode === null && child.signalCode === null && child.kill('SIGTERM'), 2000).unref();
    },
    exited,
  };
}

/** The /dev/pts device a local terminal wrote into `ttyFile`, once it has. */
function ptyDevice(ttyFile: string): string | undefined {
  try {
    const dev = readFileSync(ttyFile, 'utf8').trim();
    return /^\/dev\/pts\/\d+$/.test(dev) ? dev : undefined;
  } catch {
    return undefined;
  }
}

function localConnect(port: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', (err) => reject(new GpurunError('E_UNREACHABLE', `nothing answers on port ${port} of the job (${(err as NodeJS.ErrnoException).code ?? err.message})`, { hint: 'Is the server in the job listening on that port (and on 127.0.0.1 or 0.0.0.0)?' })));
  });
}
