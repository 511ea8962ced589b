/**
 * The plain-process runtime for the local host. Each job runs under a detached shim (runtimes/shim.ts) that outlives
 * the broker, in its own process group; stop() signals the whole group. The runtime ref holds the pids and the job
 * directory, which is all a restarted broker needs to find the job again.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GpurunError } from '../protocol/errors.ts';
import type { ExitInfo, Lost, Runtime, StartSpec } from '../core/runtime.ts';
import { LocalExec } from '../slurm/exec.ts';
import { cacheEnv } from '../core/userCache.ts';
import { localCacheDir } from '../cache/userCaches.ts';
import { couldNotRun, explainInterpreter } from './interpreterCheck.ts';

export interface ProcessRef extends Record<string, unknown> {
  dir: string;
  shimPid: number;
  /** The job's process id, which is also its process group id. */
  pid: number;
}

const POLL_MS = 50;

export class ProcessRuntime implements Runtime {
  readonly kind = 'process';

  /**
   * @param runDir where each job gets a directory for its spec, pids and exit status
   * @param shimPath the bundled shim (dist/shim.js)
   * @param nodePath the Node binary that runs the shim
   */
  private readonly runDir: string;
  private readonly shimPath: string;
  private readonly nodePath: string;
  private readonly cacheRoot: string | undefined;

  /** `cacheRoot`: where each user's cache folder is (a team broker's jobs all run as its OS user); absent: none. */
  constructor(runDir: string, shimPath: string, nodePath: string = process.execPath, cacheRoot?: string) {
    this.runDir = runDir;
    this.shimPath = shimPath;
    this.nodePath = nodePath;
    this.cacheRoot = cacheRoot;
  }

  async start(spec: StartSpec): Promise<ProcessRef> {
    const dir = join(this.runDir, spec.job.id);
    // A new attempt of the job starts clean: an earlier attempt's status must not read as this one's.
    rmSync(dir, { recursive: true, force: true });
    // The spec holds the job's env: the folders are 0700 and the file 0600 (README: "Secrets").
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    let env = spec.env;
    if (this.cacheRoot) {
      // The owner's cache folder; the usual cache variables point into it unless the job sets them itself.
      const cache = localCacheDir(this.cacheRoot, spec.job.owner);
      mkdirSync(cache, { recursive: true, mode: 0o700 });
      env = { ...cacheEnv(cache), ...spec.env };
    }
    writeFileSync(join(dir, 'spec.json'), JSON.stringify({ command: spec.job.command, cwd: spec.job.workspace, env, logPath: spec.logPath }), { mode: 0o600 });
    const shim = spawn(this.nodePath, [this.shimPath, dir], { detached: true, stdio: 'ignore' });
    shim.unref();
    const shimPid = shim.pid;
    if (shimPid === undefined) throw new GpurunError('E_INTERNAL', `could not start the job shim (${this.nodePath} ${this.shimPath})`);
    // Wait until the shim has started the command (pid.json) or failed to (status.json).
    for (let waited = 0; waited < 15_000; waited += 2) {
      const pid = readJson<{ pid: number }>(join(dir, 'pid.json'));
      if (pid) return { dir, shimPid, pid: pid.pid };
      if (existsSync(join(dir, 'status.json'))) return { dir, shimPid, pid: 0 };
      if (shim.exitCode !== null) break;
      await sleep(2);
    }
    throw new GpurunError('E_INTERNAL', `the job shim did not start the command within 15 s (exit code ${shim.exitCode})`, {
      hint: `Look at ${dir} and the broker log.`,
    });
  }

  async recover(job: StartSpec['job']): Promise<ProcessRef | null> {
    const dir = join(this.runDir, job.id);
    if (!existsSync(join(dir, 'spec.json'))) return null;
    // The shim may have been spawned an instant before the broker died: give it time to report.
    for (let waited = 0; waited < 3000; waited += POLL_MS) {
      const pid = readJson<{ shimPid: number; pid: number }>(join(dir, 'pid.json'));
      if (pid) return { dir, shimPid: pid.shimPid, pid: pid.pid };
      if (existsSync(join(dir, 'status.json'))) return { dir, shimPid: 0, pid: 0 };
      await sleep(POLL_MS);
    }
    return null;
  }

  async wait(ref: Record<string, unknown>, signal: AbortSignal): Promise<ExitInfo | Lost> {
    const r = ref as ProcessRef;
    const statusPath = join(r.dir, 'status.json');
    for (;;) {
      const status = readJson<ExitInfo>(statusPath);
      if (status) return couldNotRun(status.exitCode, status.startError) ? await explained(r, status) : status;
      if (!isShimAlive(r)) {
        // The shim may have written its status between the two checks.
        const late = readJson<ExitInfo>(statusPath);
        if (late) return late;
        if (r.pid > 0) killGroup(r.pid, 'SIGKILL');
        return { lost: 'the job\'s supervisor process is gone and left no exit status (was the machine restarted?)' };
      }
      if (signal.aborted) throw signal.reason;
      await sleep(POLL_MS, undefined, { signal }).catch(() => {});
    }
  }

  async stop(ref: Record<string, unknown>, graceMs: number): Promise<void> {
    const r = ref as ProcessRef;
    if (r.pid <= 0) return;
    killGroup(r.pid, 'SIGTERM');
    const statusPath = join(r.dir, 'status.json');
    for (let waited = 0; waited < graceMs; waited += POLL_MS) {
      if (existsSync(statusPath) || !isShimAlive(r)) break;
      await sleep(POLL_MS);
    }
    // Whatever is left of the group (children that ignored TERM, or the job itself) is killed.
    killGroup(r.pid, 'SIGKILL');
  }
}

/** A start that failed because the job's virtualenv python links to a Python this machine lacks: said so. */
async function explained(r: ProcessRef, status: ExitInfo): Promise<ExitInfo> {
  const spec = readJson<{ command: string[]; cwd: string }>(join(r.dir, 'spec.json'));
  const why = spec && (await explainInterpreter(new LocalExec(), spec.cwd, spec.cwd, spec.command[0], { kind: 'host', name: 'local' }));
  return why ? { ...status, startError: why } : status;
}

function killGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    // ESRCH: the group is gone already.
  }
}

/** Alive, and really our shim (a recycled pid would not have our job directory on its command line). */
function isShimAlive(r: ProcessRef): boolean {
  if (!(r.shimPid > 0)) return false;
  try {
    process.kill(r.shimPid, 0);
  } catch {
    return false;
  }
  try {
    const cmdline = readFileSync(`/proc/${r.shimPid}/cmdline`, 'utf8');
    if (!cmdline.includes(r.dir)) return false;
    // A zombie (exited, not yet reaped by this broker) counts as gone.
    const stat = readFileSync(`/proc/${r.shimPid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    // No /proc (macOS): trust kill(0).
    return true;
  }
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}
