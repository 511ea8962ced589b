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
