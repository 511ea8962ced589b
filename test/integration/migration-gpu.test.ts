/**
 * Load-driven moves by the online jobs' GPU use, through the CLI against a real broker process: two SSH hosts on
 * loopback (127.0.32.1, 127.0.32.2: real sshd, the real Docker engine, sshfs), two GPUs each, whose readings come
 * from each host's nvidia-smi STAND-IN (there is no GPU here): a test sets the utilisation and memory the online
 * job's GPU reports, and the processes the per-process query lists, by the container's real host pid. When the online
 * job's GPU use stays over the threshold, the offline job that checkpoints moves to the other host and goes on from
 * its step; the online job stays.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { createToken, gpurun, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';
import { endHostSuite, makeSshHosts, type TestHostSet } from '../support/sshHosts.ts';
import { counterWorkspace, dockerHostConfigs, jobViews, requireMigrationParts } from '../support/migrationHosts.ts';

describe('migration: moves by the online jobs\' GPU use (nvidia-smi)', function () {
  this.timeout(180_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let adminEnv: NodeJS.ProcessEnv;
  let ws: string;
  let workDirs: string[] = [];
  const owner = 'gpu-mover';

  before(async function () {
    requireMigrationParts(this);
    dir = scratch('gpurun-migration-gpu-');
    const gpus = [{ name: 'NVIDIA L4', memoryMiB: 23034 }, { name: 'NVIDIA L4', memoryMiB: 23034 }];
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'g1', address: '127.0.32.1', gpus },
      { name: 'g2', address: '127.0.32.2', gpus },
    ]);
    ws = counterWorkspace(dir);
    const cfg = dockerHostConfigs(set, dir);
    workDirs = cfg.workDirs;
    broker = await startBrokerProcess(join(dir, 'home'), { hosts: cfg.hosts, defaults: { image: 'local/python:3', gpus: 1, memory: '256M' }, migration: { checkpointTimeout: '8s', threshold: { gpu: 0.9, gpuMemory: 0.8 }, window: '3s', sampleEvery: '1s' } });
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, owner) };
    adminEnv = { ...env, GPURUN_TOKEN: await createToken(broker, 'root', true) };
    await waitFor('both hosts up', async () => {
      const out = (await gpurun(['hosts'], env)).stdout;
      return /g1\s+up/.test(out) && /g2\s+up/.test(out);
    }, 60_000);
  });

  after(async function () {
    for (const h of set?.hosts ?? []) {
      h.gpuReadings(null);
      h.gpuProcesses(null);
    }
    await endHostSuite(broker, set, owner, workDirs, dir);
  });

  const { submit, show, logs, ended, assertSteps } = jobViews(() => env, () => ws);
  const hosts = async () => (await gpurun(['hosts'], env)).stdout;

  /**
   * A checkpointing offline counter and an online job holding the other GPU, both on g1 (g2 drained while they
   * start); `load` then makes g1's GPUs read as it says; the offline job must move to g2 for `cause`.
   */
  const movesFor = async (load: (online: { id: string; gpu: number; pid: number }, offlineGpu: number) => void, cause: RegExp): Promise<void> => {
    assert.equal((await gpurun(['drain', 'g2'], adminEnv)).code, 0);
    let online = '';
    try {
      const id = await submit(['--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'count.py'], { STEPS: '80' });
      await waitFor('step 3', async () => /step 3\n/.test(await logs(id)), 60_000, 200);
      const r = await gpurun(['run', '--detach', '--workspace', ws, '--queue', 'online', '--gpus', '1', '--', 'sh', '-c', 'sleep 300'], env);
      assert.equal(r.code, 0, r.stderr);
      online = r.stdout.trim();
      const o = await waitFor('the online job running', async () => {
        const j = await show(online);
        return j.state === 'running' && j;
      }, 60_000, 200);
      const off = await show(id);
      assert.deepEqual([off.host, o.host], ['g1', 'g1']);
      assert.equal((await gpurun(['undrain', 'g2'], adminEnv)).code, 0);
      // Before any load: the GPU readings are shown (0 %), and nothing moves.
      await waitFor('the GPU load shown', async () => /^g1: online jobs use \d+% of its CPUs, \d+% of its memory, 0% of their GPUs' time, 0% of their GPUs' memory$/m.test(await hosts()), 30_000, 500);
      const container = execFileSync('docker', ['ps', '-q', '--filter', `label=gpurun.job=${online}`], { encoding: 'utf8' }).trim();
      const pid = Number(execFileSync('docker', ['inspect', '-f', '{{.State.Pid}}', container], { encoding: 'utf8' }).trim());
      assert.ok(pid > 0, `the online container's pid: ${pid}`);
      load({ id: online, gpu: o.gpuIndices[0]!, pid }, off.gpuIndices[0]!);
      const moved = await waitFor('the offline job moved to g2', async () => {
        const j = await show(id);
        return j.host === 'g2' && j.state === 'running' && !j.move && j;
      }, 90_000, 300).catch(async (e) => {
        const seen = broker.log().split('\n').filter((l) => /load|mov|nvidia/i.test(l)).slice(-15).join('\n');
        throw new Error(`${(e as Error).message}\n${await hosts()}\n${seen}`);
      });
      assert.match(moved.attempts![0].reason!, cause);
      const still = await show(online);
      assert.deepEqual([still.host, still.state, still.attempts!.length], ['g1', 'running', 1], 'online jobs never move for load');
      const done = await ended(id);
      assert.equal(done.state, 'succeeded', done.reason);
      assertSteps(await logs(id), 80);
      assert.match(await logs(id), /^── moved from g1 to g2: online GPU .*; resumed from checkpoint at \d\d:\d\d:\d\d ──$/m);
    } finally {
      for (const h of set.hosts) {
        h.gpuReadings(null);
        h.gpuProcesses(null);
      }
      await gpurun(['undrain', 'g2'], adminEnv);
      if (online) await gpurun(['cancel', online], env);
    }
  };

  it('the online job\'s GPU utilisation over the threshold moves the offline job off; only the online job\'s GPU counts', async () => {
    await movesFor((online, offlineGpu) => {
      // The offline job's GPU at 100 % is not the online load: the cause says 97 %, the online job's GPU.
      set.hosts[0].gpuReadings({ [online.gpu]: { pct: 97, usedMiB: 2000 }, [offlineGpu]: { pct: 100, usedMiB: 20000 } });
    }, /^moved to g2 \(online GPU use 97% > 90% for \d+ s\)/);
  });

  it('the GPU memory of the online job\'s own processes (nvidia-smi per process) over the threshold moves the offline job off', async () => {
    await movesFor((online) => {
      // The GPU reads full, but the online job's process uses 20000 of 23034 MiB (87 %); pid 1 is not the job's.
      set.hosts[0].gpuReadings({ [online.gpu]: { pct: 10, usedMiB: 23034 } });
      set.hosts[0].gpuProcesses([{ pid: online.pid, gpu: online.gpu, usedMiB: 20000 }, { pid: 1, gpu: online.gpu, usedMiB: 3000 }]);
    }, /^moved to g2 \(online GPU memory 87% > 80% for \d+ s\)/);
  });
});
