/**
 * Integration-test support: real `gpurun` CLI processes and real broker processes, each test with its own
 * GPURUN_HOME, and an `nvidia-smi` stand-in for machines without a GPU.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BrokerClient } from '../../server/protocol/client.ts';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'cli.js');
/** The Node that runs the broker (≥ 22.5): the one running the tests, which npm scripts make Node 24. */
export const NODE = process.execPath;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A scratch folder removed after the test run. */
export function scratch(prefix = 'gpurun-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * A workspace folder `ws` inside `dir`, made if missing. A test broker's own folder usually sits in `dir` too, and a
 * workspace may never contain the broker's data, so jobs get this one rather than `dir` itself.
 */
export function workspaceIn(dir: string): string {
  const ws = join(dir, 'ws');
  mkdirSync(ws, { recursive: true });
  return ws;
}

/** Runs `gpurun ARGS` to completion. */
export function gpurun(args: string[], env: NodeJS.ProcessEnv, opts: { cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(NODE, [CLI, ...args], { env, cwd: opts.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`gpurun ${args.join(' ')} did not finish in ${opts.timeoutMs ?? 60_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, opts.timeoutMs ?? 60_000);
    child.on('close', (code) => {
      clearTimeout(t);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** Starts `gpurun ARGS` and returns the process (for Ctrl+C, output while running, …). */
export function gpurunSpawn(args: string[], env: NodeJS.ProcessEnv, cwd = ROOT): ChildProcess {
  return spawn(NODE, [CLI, ...args], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Environment of a test: its own GPURUN_HOME, no broker from the outside. */
export function testEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.GPURUN_BROKER;
  delete env.GPURUN_TOKEN;
  return { ...env, GPURUN_HOME: home, ...extra };
}

/**
 * A folder holding an executable `nvidia-smi` STAND-IN that prints the CSV the real one prints for the query gpurun
 * makes. Put it first on PATH of a broker (or an SSH host) to give it these GPUs. The health query
 * (`--query-gpu=index,pci.bus_id,…`) is answered from the file `gpu-health.csv` next to the folder when it exists
 * (a test writes a fault there; a line with "GPU is lost" makes it exit 15 as the real one does), else all healthy.
 * The usage query is answered from `gpu-readings.csv` there when it exists (fakeGpuReadings), and the per-process
 * query (`--query-compute-apps=pid,gpu_uuid,used_memory`) from `gpu-apps.csv` (fakeGpuProcesses), else no process.
 */
export function fakeNvidiaSmi(dir: string, gpus: Array<{ name: string; memoryMiB: number; usage?: Array<{ pct: number; usedMiB: number }> }>): string {
  const bin = join(dir, 'fake-gpu-bin');
  mkdirSync(bin, { recursive: true });
  // A GPU with `usage` reports the next entry of it at each call (a counter file next to the script), so tests see
  // utilisation and memory change from one probe to the next; the others report 0.
  const lines = gpus
    .map((g, i) => {
      const uuid = fakeGpuUuid(i);
      if (!g.usage?.length) return `echo '${i}, ${uuid}, ${g.name}, ${g.memoryMiB}, 0, 0'`;
      const cases = g.usage.map((u, k) => `${k}) echo '${i}, ${uuid}, ${g.name}, ${g.memoryMiB}, ${u.usedMiB}, ${u.pct}' ;;`).join(' ');
      return `case $((n % ${g.usage.length})) in ${cases} esac`;
    })
    .join('\n');
  const healthy = gpus.map((_, i) => `${i}, ${fakePciBusId(i)}, 0, No`).join('\n');
  const health = join(dir, 'gpu-health.csv');
  const readings = join(dir, 'gpu-readings.csv');
  const apps = join(dir, 'gpu-apps.csv');
  const counter = join(bin, 'calls');
  writeFileSync(
    join(bin, 'nvidia-smi'),
    `#!/bin/sh\n# nvidia-smi STAND-IN for tests on machines without a GPU.\ncase "$*" in *pci.bus_id*)\n  if [ -f '${health}' ]; then cat '${health}'; if grep -q 'GPU is lost' '${health}'; then exit 15; fi; exit 0; fi\n  cat <<'CSV'\n${healthy}\nCSV\n  exit 0;;\n*query-compute-apps*)\n  if [ -f '${apps}' ]; then cat '${apps}'; fi\n  exit 0;;\nesac\nif [ -f '${readings}' ]; then cat '${readings}'; exit 0; fi\nn=$(cat '${counter}' 2>/dev/null || echo 0)\necho $((n + 1)) > '${counter}'\n${lines}\n`,
  );
  chmodSync(join(bin, 'nvidia-smi'), 0o755);
  return bin;
}

/** The uuid the nvidia-smi stand-in gives GPU `i`. */
export function fakeGpuUuid(i: number): string {
  return `GPU-${String(i).padStart(8, '0')}-stand-in-0000-000000000000`;
}

/**
 * What the nvidia-smi stand-in made by fakeNvidiaSmi(dir, gpus) reports from now on to the usage query: `pct` and
 * `usedMiB` per GPU index named in `readings` (the others 0), as the real one would under load; null: back to its own.
 */
export function fakeGpuReadings(dir: string, gpus: Array<{ name: string; memoryMiB: number }>, readings: Record<number, { pct: number; usedMiB: number }> | null): void {
  const file = join(dir, 'gpu-readings.csv');
  if (readings === null) return rmSync(file, { force: true });
  writeFileSync(file, gpus.map((g, i) => `${i}, ${fakeGpuUuid(i)}, ${g.name}, ${g.memoryMiB}, ${readings[i]?.usedMiB ?? 0}, ${readings[i]?.pct ?? 0}\n`).join(''));
}

/**
 * The processes the stand-in lists for the per-process query: a host pid on GPU index `gpu` using `usedMiB` (null:
 * "[N/A]", as drivers that do not report it print); null: none.
 */
export function fakeGpuProcesses(dir: string, procs: Array<{ pid: number; gpu: number; usedMiB: number | null }> | null): void {
  const file = join(dir, 'gpu-apps.csv');
  if (procs === null) return rmSync(file, { force: true });
  writeFileSync(file, procs.map((p) => `${p.pid}, ${fakeGpuUuid(p.gpu)}, ${p.usedMiB ?? '[N/A]'}\n`).join(''));
}

/** The PCI bus id the nvidia-smi stand-in gives GPU `i` (as nvidia-smi prints it: `00000000:1i:00.0`). */
export function fakePciBusId(i: number): string {
  return `00000000:${(0x10 + i).toString(16).toUpperCase()}:00.0`;
}

export interface BrokerProc {
  url: string;
  /** SHA-256 fingerprint of the broker's TLS certificate, as it printed it (https brokers only). */
  fingerprint?: string;
  home: string;
  proc: ChildProcess;
  log(): string;
  /** SIGKILL, and wait until it is gone. */
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts `gpurun broker --config` as its own process on a free loopback port (the kernel picks it: port 0);
 * resolves once it answers. The config is then pinned to that port, so restartBroker() comes back on it.
 */
export async function startBrokerProcess(home: string, config: Record<string, unknown>, env: NodeJS.ProcessEnv = {}, opts: { wrap?: string[] } = {}): Promise<BrokerProc> {
  mkdirSync(home, { recursive: true });
  const cfgPath = join(home, 'broker.json');
  // A test broker trusts its users as one team does (README "Running a team broker"): any folder but the broker's own
  // may be a workspace, and local hosts run jobs as this user. Suites about those boundaries pass their own settings.
  const cfg = { listen: '127.0.0.1:0', dataDir: join(home, 'data'), killGrace: '2s', workspaceRoots: { '*': '/' }, trustLocalUsers: true, ...config };
  writeFileSync(cfgPath, JSON.stringify(cfg, null, 2));
  const b = await spawnBroker(home, undefined, env, opts.wrap);
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, listen: b.url.replace(/^https?:\/\//, '') }, null, 2));
  return b;
}

/** Starts the broker of `b` again with the same config (same port, same data), e.g. after kill9(); `wrap` as at start. */
export function restartBroker(b: BrokerProc, env: NodeJS.ProcessEnv = {}, opts: { wrap?: string[] } = {}): Promise<BrokerProc> {
  return spawnBroker(b.home, b.url, env, opts.wrap);
}

/** `wrap`: argv that execs the rest (e.g. unshare …), so the broker keeps the spawned process's pid. */
async function spawnBroker(home: string, knownUrl: string | undefined, env: NodeJS.ProcessEnv, wrap: string[] = []): Promise<BrokerProc> {
  const cfgPath = join(home, 'broker.json');
  const logPath = join(home, 'broker-test.log');
  const argv = [...wrap, NODE, CLI, 'broker', '--config', cfgPath];
  const proc = spawn(argv[0], argv.slice(1), { env: testEnv(home, env), stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout!.on('data', (d) => (log += d));
  proc.stderr!.on('data', (d) => (log += d));
  proc.on('close', () => writeFileSync(logPath, log, { flag: 'a' }));
  let url = knownUrl ?? '';
  let fingerprint: string | undefined;
  // Up to about 30 s: the broker probes its hosts before it listens, which a loaded machine makes slow.
  for (let i = 0; i < 600; i++) {
    if (proc.exitCode !== null) throw new Error(`broker exited (${proc.exitCode}):\n${log}`);
    url ||= /broker listening on (https?:\/\/[\d.:]+)/.exec(log)?.[1] ?? '';
    fingerprint = /GPURUN_BROKER_FINGERPRINT=([0-9A-F:]+)/.exec(log)?.[1];
    if (!url || (url.startsWith('https:') && !fingerprint)) {
      await sleep(50);
      continue;
    }
    try {
      const c = new BrokerClient({ address: url, ...(fingerprint ? { fingerprint } : {}) });
      const h = await c.health().finally(() => c.close());
      if (h.ok) break;
    } catch {
      /* not yet */
    }
    await sleep(50);
  }
  if (!url) throw new Error(`broker did not say where it listens:\n${log}`);
  const gone = () => new Promise<void>((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once('close', () => r())));
  return {
    url,
    ...(fingerprint ? { fingerprint } : {}),
    home,
    proc,
    log: () => log,
    kill9: async () => {
      proc.kill('SIGKILL');
      await gone();
    },
    stop: async () => {
      proc.kill('SIGTERM');
      await gone();
    },
  };
}

/** A job as `gpurun ls --json` shows it (the fields the tests look at). */
export interface ListedJob {
  id: string;
  state: string;
  reason: string;
  host: string;
  gpuIndices: number[];
  exitCode: number | null;
}

/**
 * The CLI calls a host suite makes about its jobs. `ctx` is read at each call: a suite's env changes when it restarts
 * its broker. `detach` submits from the workspace `ctx().ws` and returns the job id.
 */
export function cliJobs(ctx: () => { env: NodeJS.ProcessEnv; ws: string }): { job(id: string): Promise<ListedJob>; detach(args: string[]): Promise<string>; logsOf(id: string): Promise<string> } {
  return {
    async job(id) {
      const r = await gpurun(['ls', '--json', '--all'], ctx().env);
      return JSON.parse(r.stdout).find((j: { id: string }) => j.id === id);
    },
    async detach(args) {
      const r = await gpurun(['run', '--detach', '--workspace', ctx().ws, ...args], ctx().env);
      if (r.code !== 0) throw new Error(`gpurun run --detach failed (${r.code}): ${r.stderr}`);
      return r.stdout.trim().split(/\s+/).pop()!;
    },
    async logsOf(id) {
      return (await gpurun(['logs', id], ctx().env)).stdout;
    },
  };
}

/** SIGTERM to a broker started by a suite (if it was), SIGKILL if it has not stopped within `graceMs`. */
export async function stopBroker(b: BrokerProc | undefined, graceMs = 15_000): Promise<void> {
  if (b) await Promise.race([b.stop(), sleep(graceMs).then(() => b.kill9())]);
}

/** Creates a token with the real CLI against a broker's config. */
export async function createToken(b: BrokerProc, user: string, admin = false): Promise<string> {
  const r = await gpurun(['token', 'create', user, '--config', join(b.home, 'broker.json'), ...(admin ? ['--admin'] : [])], testEnv(b.home));
  if (r.code !== 0) throw new Error(`token create failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** Polls every `intervalMs` until `fn` returns a truthy value, or fails with `what`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** Stops the embedded broker of a GPURUN_HOME (tests start one through the CLI). */
export async function stopEmbedded(home: string): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(join(home, 'broker.lock'), 'utf8'));
  } catch {
    return;
  }
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const gone = (): boolean => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  };
  await waitFor('the embedded broker to stop', gone, 10_000).catch(async () => {
    process.kill(pid, 'SIGKILL');
    await waitFor('the embedded broker to be killed', gone, 5_000).catch(() => {});
  });
}

export function cleanup(dir: string): void {
  // Retried: a job's detached shim that ends as the test does may still write its exit file meanwhile.
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
}

/**
 * For suites that need a real part (Docker, sshd, Slurm, …): on a laptop, skip with the reason; in CI (CI=true),
 * fail, because a missing part there means the CI set-up is broken.
 */
export function requirePart(ctx: Mocha.Context, part: string, available: boolean, why: string): void {
  if (available) return;
  if (process.env.CI === 'true') throw new Error(`${part} is required in CI but missing: ${why}`);
  console.log(`      skipped: ${part} is not available here: ${why}`);
  ctx.skip();
}

/**
 * A fresh tmux terminal `t` on its own server `sock` (default 100×30, a plain bash), the old server killed first. A
 * server that is still going away makes the new session fail ("server exited unexpectedly"): tried again a moment
 * later.
 */
export function newTmuxTerminal(sock: string, { cols = 100, rows = 30, command = ['bash', '--norc', '--noprofile'] }: { cols?: number; rows?: number; command?: string[] } = {}): void {
  spawnSync('tmux', ['-L', sock, 'kill-server']);
  for (let i = 0; ; i++) {
    const r = spawnSync('tmux', ['-L', sock, 'new-session', '-d', '-s', 't', '-x', String(cols), '-y', String(rows), ...command], { encoding: 'utf8' });
    if (r.status === 0) return;
    if (i === 5) throw new Error(`tmux cannot start a session: ${r.stderr.trim()}`);
    spawnSync('sleep', ['0.3']);
  }
}

/** Drops (`-I`) or lets through again (`-D`) all traffic from and to a loopback address, as a silent link does. */
export function iptables(op: '-I' | '-D', address: string): void {
  spawnSync('iptables', [op, 'INPUT', '-s', address, '-j', 'DROP']);
  spawnSync('iptables', [op, 'OUTPUT', '-d', address, '-j', 'DROP']);
}
