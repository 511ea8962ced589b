/**
 * Transparent checkpoint (CRIU through Docker), through the CLI against a real broker process: two SSH hosts on
 * loopback (127.0.12.1, 127.0.12.2: real sshd, the real Docker engine in experimental mode, sshfs, CRIU 4.1 as
 * test/setup/35-criu.sh installs it) and a process host (127.0.12.3). A Python job that holds ~200 MiB of state and
 * counts steps, knowing nothing of checkpoints, is moved by `gpurun migrate` and goes on counting on the other host
 * from the step it was at: the same process (one start line), its memory intact (the state's hash), its file on the
 * sshfs workspace still open and written at the right offset.
 *
 * Skips with the probe's reason where the hosts have no working CRIU; in CI it fails only when the setup says it
 * installed CRIU (/opt/gpurun-criu/installed) and the probe still finds none.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, CLI, createToken, gpurun, NODE, restartBroker, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, requirePart, type BrokerProc } from '../support/harness.ts';
import { makeSshHosts, removeLeftovers, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';
import type { HostInfo, Job } from '../../server/protocol/jobs.ts';

/**
 * Holds $MIB MiB of random state, counts to $STEPS (a line per step, and a line per step in the workspace file $OUT).
 * With $HOLD set it also keeps a file open in the container's own file system, which a new container lacks.
 */
const COUNTER = `
import hashlib, os, time
blob = bytearray(os.urandom(int(os.environ.get("MIB", "200")) * 1024 * 1024))
held = open("/tmp/held", "w") if os.environ.get("HOLD") else None
print(f"start pid {os.getpid()} state {hashlib.sha256(blob).hexdigest()[:16]}", flush=True)
out = open("/workspace/" + os.environ.get("OUT", "steps.txt"), "a")
for step in range(1, int(os.environ.get("STEPS", "40")) + 1):
    print(f"step {step}", flush=True)
    out.write(f"{step}\\n"); out.flush()
    time.sleep(float(os.environ.get("STEP_SECONDS", "0.25")))
print(f"done state {hashlib.sha256(blob).hexdigest()[:16]}", flush=True)
`;

const INSTALLED = '/opt/gpurun-criu/installed';

describe('transparent checkpoint: CRIU moves a running container to another host', function () {
  this.timeout(240_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let ws: string;
  const workDirs: string[] = [];

  before(async function () {
    requirePart(this, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
    const img = spawnSync('docker', ['image', 'inspect', 'local/python:3'], { encoding: 'utf8' });
    requirePart(this, 'the image local/python:3', img.status === 0, 'the image local/python:3 is missing; run test/setup/30-ssh-docker.sh');
    dir = scratch('gpurun-criu-');
    const gpu = [{ name: 'NVIDIA L4', memoryMiB: 23034 }];
    const t4 = [{ name: 'Tesla T4', memoryMiB: 15360 }];
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'c1', address: '127.0.12.1', gpus: gpu },
      { name: 'c2', address: '127.0.12.2', gpus: gpu },
      { name: 'c3', address: '127.0.12.3', gpus: gpu },
      // The developer's machine, and two hosts that mount the workspace from it themselves (direct transport: the
      // broker is not in the workspace's path, so a job there outlives a broker restart).
      { name: 'dev', address: '127.0.12.4', gpus: [] },
      { name: 'd1', address: '127.0.12.5', gpus: t4 },
      { name: 'd2', address: '127.0.12.6', gpus: t4 },
    ]);
    const devKnown = join(dir, 'hosts', 'known_hosts_on_gpu_hosts');
    writeFileSync(devKnown, `${set.hosts[3].knownHostsLine}\n`);
    const direct = { transport: 'direct', target: 'root@127.0.12.4:2222', identityFile: set.clientKey, knownHosts: devKnown, sftpServer: `${NODE} ${CLI} sftp-serve` };
    ws = join(dir, 'workspace');
    mkdirSync(ws);
    writeFileSync(join(ws, 'count.py'), COUNTER);
    const hosts = set.hosts.filter((h) => h.name !== 'dev').map((h, i) => {
      workDirs[i] = join(dir, `work-${h.name}`);
      return { type: 'ssh', name: h.name, address: h.address, user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir: workDirs[i], runtime: h.name === 'c3' ? 'process' : 'docker', mount: h.name.startsWith('d') ? direct : { transport: 'relay' } };
    });
    broker = await startBrokerProcess(join(dir, 'home'), { hosts, defaults: { image: 'local/python:3', gpus: 1, memory: '768M' }, migration: { method: 'transparent', checkpointTimeout: '60s' } });
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'alice') };
    await waitFor('the hosts up', async () => {
      const out = (await gpurun(['hosts'], env)).stdout;
      return ['c1', 'c2', 'c3', 'd1', 'd2'].every((n) => new RegExp(`${n}\\s+up`).test(out));
    }, 60_000, 300);
    const c1 = (await hostsJson()).find((h) => h.name === 'c1')!;
    const why = c1.checkpoint?.transparent ?? null;
    if (why !== null && process.env.CI === 'true' && !existsSync(INSTALLED)) {
      console.log(`      skipped: the setup did not install CRIU; the probe says: ${why}`);
      this.skip();
    }
    requirePart(this, 'transparent checkpoint (CRIU and Docker experimental mode)', why === null, `the probe of c1 says: ${why}`);
  });

  after(async function () {
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      removeLeftovers('alice', workDirs);
      cleanup(dir);
    }
  });

  const hostsJson = async (): Promise<HostInfo[]> => JSON.parse((await gpurun(['hosts', '--json'], env)).stdout);
  const pool = async (): Promise<HostInfo[]> => {
    const res = await fetch(`${broker.url}/v1/pool`, { headers: { authorization: `Bearer ${env.GPURUN_TOKEN}` } });
    assert.equal(res.status, 200);
    return ((await res.json()) as { hosts: HostInfo[] }).hosts;
  };
  const show = async (id: string): Promise<Job> => JSON.parse((await gpurun(['show', '--json', id], env)).stdout);
  const logs = async (id: string): Promise<string> => (await gpurun(['logs', id], env)).stdout;
  const ended = (id: string, ms = 180_000): Promise<Job> => waitFor('the job to end', async () => {
    const j = await show(id);
    return ['succeeded', 'failed', 'lost', 'cancelled', 'timed_out'].includes(j.state) && j;
  }, ms, 300);
  /** One process all along (one start line, its state's hash the same at the end), steps 1..n once each; the steps. */
  const assertOneProcess = (log: string, n: number): number[] => {
    const starts = log.split('\n').filter((l) => l.startsWith('start pid '));
    assert.equal(starts.length, 1, log);
    assert.match(log, new RegExp(`^done state ${/ state (\w+)$/.exec(starts[0])![1]}$`, 'm'));
    const steps = log.split('\n').filter((l) => l.startsWith('step ')).map((l) => Number(l.slice(5)));
    assert.deepEqual(steps, Array.from({ length: n }, (_, i) => i + 1), log);
    return steps;
  };
  /** Runs count.py on a host with `gpuType`, with `vars`; once it is at step 6, its id, host and the other host. */
  const counting = async (gpuType: string, vars: string[]): Promise<{ id: string; from: string; to: string }> => {
    const r = await gpurun(['run', '--detach', '--workspace', ws, '--queue', 'offline', '--gpu-type', gpuType, ...vars.flatMap((v) => ['--env', v]), '--', 'python3', '-u', 'count.py'], env);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    await waitFor('step 6', async () => /^step 6$/m.test(await logs(id)), 90_000, 200);
    const from = (await show(id)).host!;
    const pair = gpuType === 'T4' ? ['d1', 'd2'] : ['c1', 'c2'];
    return { id, from, to: from === pair[0] ? pair[1] : pair[0] };
  };

  it('gpurun hosts and GET /v1/pool say how each host can checkpoint, and why not', async () => {
    const out = (await gpurun(['hosts'], env)).stdout;
    assert.match(out, /^c1: checkpoint: transparent \(CRIU\), cooperative$/m);
    assert.match(out, /^c2: checkpoint: transparent \(CRIU\), cooperative$/m);
    const c3 = (await pool()).find((h) => h.name === 'c3')!;
    assert.deepEqual(c3.checkpoint, { cooperative: true, transparent: 'jobs here are plain processes; CRIU is used through Docker only' });
    assert.match(out, /^c3: checkpoint: cooperative \(transparent unavailable: jobs here are plain processes; CRIU is used through Docker only\)$/m);
  });

  it('gpurun migrate checkpoints a 200 MiB Python process on one host and it counts on from the same step on the other', async () => {
    const { id, from, to } = await counting('L4', ['STEPS=40', 'OUT=steps.txt']);
    const follow = gpurun(['logs', '-f', id], env, { timeoutMs: 200_000 });
    const mv = await gpurun(['migrate', id, '--to', to], env, { timeoutMs: 180_000 });
    assert.equal(mv.code, 0, mv.stderr + mv.stdout);
    assert.match(mv.stdout, new RegExp(`moving from ${from} to ${to} \\(gpurun migrate by alice\\)`));
    const done = await ended(id);
    assert.equal(done.state, 'succeeded', done.reason);
    const log = await logs(id);
    // One process all along: it started once, and its 200 MiB of state came through unchanged.
    const steps = assertOneProcess(log, 40);
    assert.match(log, new RegExp(`^── moved from ${from} to ${to}: gpurun migrate by alice; resumed from checkpoint at \\d\\d:\\d\\d:\\d\\d ──$`, 'm'));
    // The file it kept open on the sshfs workspace was written on, at its offset, from both hosts.
    assert.deepEqual(readFileSync(join(ws, 'steps.txt'), 'utf8').trim().split('\n').map(Number), steps);
    assert.equal((await follow).stdout, log);
    assert.deepEqual(done.attempts!.map((a) => [a.n, a.host, a.fault]), [[1, from, 'migrated'], [2, to, null]]);
    const move = done.attempts![0].evidence.move!;
    assert.equal(move.method, 'transparent');
    assert.ok((move.finalBytes ?? 0) > 200 * 1024 * 1024, `CRIU images copied: ${move.finalBytes} bytes`);
    console.log(`      moved: downtime ${move.downtimeSec} s, ${((move.finalBytes ?? 0) / 1048576).toFixed(0)} MiB of CRIU images copied`);
    // The images are removed from both hosts once the job runs on the destination (there they went with the container).
    await waitFor('images removed', () => workDirs.every((w) => !existsSync(join(w, 'criu', id))), 20_000, 200);
  });

  it('a restore that fails on the destination puts the job back into its kept container on the source, from the same checkpoint', async () => {
    // A file the job holds open in its container's own file system is not in the images (CRIU reopens it by path),
    // so a new container on the other host cannot be restored: CRIU's words say why.
    const { id, from, to } = await counting('L4', ['STEPS=40', 'HOLD=1', 'OUT=held-steps.txt']);
    const follow = gpurun(['logs', '-f', id], env, { timeoutMs: 200_000 });
    const mv = await gpurun(['migrate', id, '--to', to], env, { timeoutMs: 180_000 });
    assert.equal(mv.code, 1, mv.stderr + mv.stdout);
    assert.match(mv.stderr, new RegExp(`job ${id} was not moved; it runs on ${from} again \\(attempt 3\\), from its checkpoint: .*${to} could not start it: restoring the job's checkpoint on ${to} failed: .*Can't open file tmp/held`));
    const done = await ended(id);
    assert.equal(done.state, 'succeeded', done.reason);
    const log = await logs(id);
    // The same process all along, in the same container: one start, its state intact, every step once.
    const steps = assertOneProcess(log, 40);
    const back = log.split('\n').filter((l) => l.startsWith('── not moved'));
    assert.equal(back.length, 1, log);
    assert.doesNotMatch(log, /^── moved from/m, 'the job never ran on the destination');
    assert.match(back[0], new RegExp(`^── not moved to ${to} \\(${to} could not start it: restoring the job's checkpoint on ${to} failed: .*Can't open file tmp/held.*\\); resumed on ${from} from checkpoint at \\d\\d:\\d\\d:\\d\\d ──$`));
    assert.deepEqual(readFileSync(join(ws, 'held-steps.txt'), 'utf8').trim().split('\n').map(Number), steps);
    assert.equal((await follow).stdout, log);
    assert.deepEqual(done.attempts!.map((a) => [a.n, a.host, a.fault]), [[1, from, 'migrated'], [2, to, 'migrated'], [3, from, null]]);
    // Nothing of the job is left: its container on the source (removed at its end), the images on both hosts.
    await waitFor('images removed', () => workDirs.every((w) => !existsSync(join(w, 'criu', id))), 20_000, 200);
    await waitFor('container removed', () => spawnSync('docker', ['ps', '-aq', '--filter', `label=gpurun.job=${id}`], { encoding: 'utf8' }).stdout.trim() === '', 20_000, 200);
  });
  // On hosts that mount the workspace themselves: a relay mount ends with the broker (README, "Relay mounts over blips
  // and broker restarts"), and with it a job that writes to its workspace, moving or not.
  for (const when of ['waiting for its checkpoint', 'copying what changed since', 'starting it on the destination'] as const) {
    it(`the broker killed -9 mid transparent move (${when}): after its restart the job runs once, every step once`, async () => {
      const out = `kill-${when.split(' ')[0]}.txt`;
      const { id, to } = await counting('T4', ['STEPS=50', `OUT=${out}`]);
      const mv = await gpurun(['migrate', id, '--to', to, '--no-wait'], env);
      assert.equal(mv.code, 0, mv.stderr + mv.stdout);
      await waitFor(`the move ${when}`, async () => (await show(id)).move?.detail === when, 60_000, 50);
      await broker.kill9();
      broker = await restartBroker(broker);
      const done = await ended(id, 200_000);
      if (done.state !== 'succeeded' || done.attempts!.at(-1)!.host !== to) console.log(broker.log().split('\n').filter((l) => /mov|checkpoint|criu|exit|ended|follow/i.test(l)).slice(-40).join('\n'));
      assert.equal(done.state, 'succeeded', `${done.reason}\n${JSON.stringify(done.attempts, null, 1)}`);
      const log = await logs(id);
      // One process all along (never started a second time beside or after it), every step once and in order.
      const steps = assertOneProcess(log, 50);
      assert.deepEqual(readFileSync(join(ws, out), 'utf8').trim().split('\n').map(Number), steps);
      assert.equal(done.attempts!.at(-1)!.host, to, log);
      // Nothing of the job is left: neither its container on the source nor the one it ended in.
      const left = () => spawnSync('docker', ['ps', '-a', '--filter', `label=gpurun.job=${id}`, '--format', '{{.Names}} {{.Status}}'], { encoding: 'utf8' }).stdout.trim();
      await waitFor('container removed', () => left() === '', 20_000, 200).catch(() => assert.fail(`containers of the job left: ${left()}\n${broker.log().split('\n').filter((l) => l.includes(id)).slice(-30).join('\n')}`));
    });
  }
});
