/**
 * Support for the Slurm suites: is the real Slurm of test/setup/50-slurm.sh up, and a broker process configured with
 * it as its only backend (cluster "test", partitions online/offline, staging under the test's scratch folder).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, createToken, requirePart, scratch, startBrokerProcess, testEnv, type BrokerProc } from './harness.ts';

export function slurmUp(): { ok: boolean; why: string } {
  const r = spawnSync('sinfo', ['-h', '-n', 'localhost', '-o', '%t'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error) return { ok: false, why: `sinfo: ${r.error.message} (run test/setup/50-slurm.sh)` };
  const state = r.stdout.trim();
  // planned (backfill holds it for a pending job) and completing are states of a node that is up.
  return /^(idle|mix|alloc|plnd|comp)/.test(state) ? { ok: true, why: '' } : { ok: false, why: `node state "${state}" ${r.stderr.trim()} (run test/setup/50-slurm.sh)` };
}

export function requireSlurm(ctx: Mocha.Context): void {
  const s = slurmUp();
  requirePart(ctx, 'Slurm (slurmctld + slurmd)', s.ok, s.why);
}

export function clusterConfig(home: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    clusters: [{ name: 'test', login: 'local', partitions: { online: 'online', offline: 'offline' }, gres: 'gpu', stagingDir: join(home, 'cluster-storage'), pollInterval: '1s', ...extra }],
  };
}

export interface SlurmBroker {
  broker: BrokerProc;
  env: NodeJS.ProcessEnv;
}

export async function startSlurmBroker(home: string, config: Record<string, unknown> = clusterConfig(home), env: NodeJS.ProcessEnv = {}): Promise<SlurmBroker> {
  // The broker's config and data in a folder of their own: the workspaces beside it may not contain them.
  const broker = await startBrokerProcess(join(home, 'broker'), config, env);
  const token = await createToken(broker, 'alice');
  return { broker, env: { ...testEnv(home), GPURUN_BROKER: broker.url, GPURUN_TOKEN: token } };
}

/** Slurm's own view of a job: its state (squeue knows ended jobs for MinJobAge). */
export function slurmState(slurmId: string): string {
  return spawnSync('squeue', ['-h', '--states=all', '-j', slurmId, '-o', '%T'], { encoding: 'utf8' }).stdout.trim();
}

/** Cancels every gpurun job still in Slurm, so that one suite's leftovers do not hold the node for the next. */
export function scancelAllGpurun(): void {
  const r = spawnSync('squeue', ['-h', '-o', '%i %j'], { encoding: 'utf8' });
  const ids = r.stdout.split('\n').filter((l) => / gpurun-/.test(l)).map((l) => l.split(' ')[0]);
  if (ids.length) spawnSync('scancel', ids);
}

/**
 * A Slurm suite's set-up, for its `before`: Slurm must be up (CI fails, a laptop skips), a scratch home with a
 * workspace folder `wsName` (filled by `prepare`), and a broker process with the test cluster.
 */
export async function setUpSlurmSuite(ctx: Mocha.Context, prefix: string, opts: { wsName?: string; prepare?: (ws: string) => void; brokerEnv?: NodeJS.ProcessEnv } = {}): Promise<{ home: string; ws: string; s: SlurmBroker }> {
  requireSlurm(ctx);
  const home = scratch(prefix);
  const ws = join(home, opts.wsName ?? 'ws');
  mkdirSync(ws, { recursive: true });
  opts.prepare?.(ws);
  return { home, ws, s: await startSlurmBroker(home, clusterConfig(home), opts.brokerEnv) };
}

/** A Slurm suite's tear-down, for its `after`: the broker stopped, every gpurun job cancelled in Slurm, scratch gone. */
export async function tearDownSlurmSuite(home: string | undefined, s: SlurmBroker | undefined): Promise<void> {
  await s?.broker.stop();
  scancelAllGpurun();
  if (home) cleanup(home);
}
