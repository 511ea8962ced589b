/**
 * What the migration suites share: the parts they need (sshd, sshfs, Docker, the Python image), a workspace holding
 * examples/gpurun_checkpoint.py and a counter that saves its step with it, the SSH host config of their Docker
 * hosts, and the job views (show, logs, the end of a job, its steps) through the CLI.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Job } from '../../server/protocol/jobs.ts';
import { gpurun, requirePart, ROOT, waitFor } from './harness.ts';
import { sshHostsMissing, type TestHostSet } from './sshHosts.ts';

/**
 * Counts to $STEPS (default 40), one line per step, $STEP_SECONDS apart (0.25), saving the next step on a checkpoint
 * ($SLOW_CHECKPOINT: seconds the save takes). Prints where it starts and where its checkpoints go, and in a container
 * its address and the address its own name resolves to on the user's network (a plain process has no such name).
 */
export const COUNTER = `
import os, socket, sys, time
from gpurun_checkpoint import Checkpoint
ck = Checkpoint()
state = ck.load({"step": 1})
print(f"start at {state['step']} attempt {os.environ.get('GPURUN_ATTEMPT')}", flush=True)
print(f"checkpoints in {os.environ.get('GPURUN_CHECKPOINT_DIR')}", flush=True)
me = "gpurun-" + os.environ["GPURUN_JOB_ID"]
try:
    print(f"address {socket.gethostbyname(socket.gethostname())}, {me} is {socket.gethostbyname(me)}", flush=True)
except OSError:
    pass
for step in range(state["step"], int(os.environ.get("STEPS", "40")) + 1):
    print(f"step {step}", flush=True)
    time.sleep(float(os.environ.get("STEP_SECONDS", "0.25")))
    if ck.requested:
        time.sleep(float(os.environ.get("SLOW_CHECKPOINT", "0")))
    ck.checkpoint_if_asked({"step": step + 1})
print("done", flush=True)
`;

/** Skips the suite (fails it in CI) when sshd, sshfs, Docker or the image local/python:3 is missing. */
export function requireMigrationParts(ctx: Mocha.Context): void {
  requirePart(ctx, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
  const img = spawnSync('docker', ['image', 'inspect', 'local/python:3'], { encoding: 'utf8' });
  requirePart(ctx, 'the image local/python:3', img.status === 0, 'the image local/python:3 is missing; run test/setup/30-ssh-docker.sh');
}

/** `dir/workspace` with gpurun_checkpoint.py and count.py (`script`, COUNTER unless given). */
export function counterWorkspace(dir: string, script = COUNTER): string {
  const ws = join(dir, 'workspace');
  mkdirSync(ws);
  copyFileSync(join(ROOT, 'examples', 'gpurun_checkpoint.py'), join(ws, 'gpurun_checkpoint.py'));
  writeFileSync(join(ws, 'count.py'), script);
  return ws;
}

/**
 * The broker's `hosts` for the test hosts: Docker over SSH, GPUs given by CUDA_VISIBLE_DEVICES, the workspace
 * relayed, 2 CPUs, each host's work folder `dir/work-NAME` (returned in `workDirs`, for the cleanup); `over` changes
 * a host's settings.
 */
export function dockerHostConfigs(set: TestHostSet, dir: string, over: (name: string) => Record<string, unknown> = () => ({})): { hosts: Array<Record<string, unknown>>; workDirs: string[] } {
  const workDirs = set.hosts.map((h) => join(dir, `work-${h.name}`));
  const hosts = set.hosts.map((h, i) => ({ type: 'ssh', name: h.name, address: h.address, user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir: workDirs[i], runtime: 'docker', mount: { transport: 'relay' }, cpus: 2, ...over(h.name) }));
  return { hosts, workDirs };
}

/**
 * What a suite asks of its jobs through the CLI, with `env` and the workspace `ws` (functions: a suite makes them in
 * its `before`).
 */
export function jobViews(env: () => NodeJS.ProcessEnv, ws: () => string = () => '') {
  /** `gpurun run --detach` of an offline job in the workspace, with `extraEnv`; its id. */
  const submit = async (args: string[], extraEnv: Record<string, string> = {}): Promise<string> => {
    const r = await gpurun(['run', '--detach', '--workspace', ws(), '--queue', 'offline', ...Object.entries(extraEnv).flatMap(([k, v]) => ['--env', `${k}=${v}`]), ...args], env());
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  const show = async (id: string): Promise<Job> => JSON.parse((await gpurun(['show', '--json', id], env())).stdout);
  const logs = async (id: string): Promise<string> => (await gpurun(['logs', id], env())).stdout;
  /** The job once it has ended. */
  const ended = (id: string, ms = 120_000): Promise<Job> =>
    waitFor(`job ${id} to end`, async () => {
      const j = await show(id);
      return ['succeeded', 'failed', 'lost', 'cancelled', 'timed_out'].includes(j.state) && j;
    }, ms, 300);
  /** The "step N" numbers of a log, in order. */
  const steps = (log: string): number[] => log.split('\n').filter((l) => l.startsWith('step ')).map((l) => Number(l.slice(5)));
  /** Steps 1..n, each once, in order, whatever other lines there are. */
  const assertSteps = (log: string, n: number): void => assert.deepEqual(steps(log), Array.from({ length: n }, (_, i) => i + 1), log);
  return { submit, show, logs, ended, steps, assertSteps };
}

/**
 * A load-driven move, through the CLI: an offline counting job (`offline` flags) and an online busy loop both start on
 * `from` (the hosts in `away` are drained meanwhile, then `to` is undrained); the online job's real CPU load over the
 * broker's threshold (20%) moves the offline job to `to`, where it counts on to the end; the online job stays.
 */
export async function loadMoves(o: { env: NodeJS.ProcessEnv; adminEnv: NodeJS.ProcessEnv; ws: string; brokerLog: () => string; from: string; to: string; away: string[]; offline: string[] }): Promise<void> {
  const { submit, show, logs, ended, assertSteps } = jobViews(() => o.env, () => o.ws);
  for (const h of o.away) assert.equal((await gpurun(['drain', h], o.adminEnv)).code, 0);
  let online = '';
  try {
    const id = await submit([...o.offline, '--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'count.py'], { STEPS: '60' });
    await waitFor('step 3', async () => /^step 3$/m.test(await logs(id)), 90_000, 200);
    assert.equal((await show(id)).host, o.from);
    const r = await gpurun(['run', '--detach', '--workspace', o.ws, '--queue', 'online', '--gpus', '0', '--', 'sh', '-c', 'while :; do :; done'], o.env);
    assert.equal(r.code, 0, r.stderr);
    online = r.stdout.trim();
    await waitFor('the online job running', async () => (await show(online)).state === 'running', 60_000, 200);
    assert.equal((await show(online)).host, o.from);
    assert.equal((await gpurun(['undrain', o.to], o.adminEnv)).code, 0);
    await waitFor('the load shown', async () => new RegExp(`${o.from}: online jobs use \\d+% of its CPUs`).test((await gpurun(['hosts'], o.env)).stdout), 30_000, 500);
    const moved = await waitFor(`the offline job moved to ${o.to}`, async () => {
      const j = await show(id);
      return j.host === o.to && j.state === 'running' && !j.move && j;
    }, 90_000, 300).catch(async (e) => {
      // What the broker saw, for the failure message: the load it sampled and what it decided.
      const seen = o.brokerLog().split('\n').filter((l) => /load|mov/i.test(l)).slice(-15).join('\n');
      throw new Error(`${(e as Error).message}\n${(await gpurun(['hosts'], o.env)).stdout}\n${seen}`);
    });
    assert.match(moved.attempts![0].reason!, new RegExp(`^moved to ${o.to} \\(online load \\d+% > 20% for \\d+ s\\)`));
    const on = await show(online);
    assert.equal(on.host, o.from);
    assert.equal(on.state, 'running');
    assert.equal(on.attempts!.length, 1, 'online jobs never move for load');
    const done = await ended(id);
    assert.equal(done.state, 'succeeded', done.reason);
    assertSteps(await logs(id), 60);
  } finally {
    for (const h of o.away) await gpurun(['undrain', h], o.adminEnv);
    if (online) await gpurun(['cancel', online], o.env);
  }
}
