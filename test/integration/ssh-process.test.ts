/**
 * SSH hosts without Docker (`runtime: "process"`), end to end through the CLI against a real broker process: two
 * real sshd hosts on 127.0.0.14–15 (apart from the other SSH suites) with nvidia-smi stand-ins (2×A100, 4×L4), real
 * sshfs over FUSE (relay on one host; direct on the other, whose developer machine is the first host's sshd), jobs
 * as plain processes on the host. The hosts are this machine, so the test sees their processes and mounts directly.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { cleanup, CLI, cliJobs, createToken, gpurun, gpurunSpawn, NODE, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, requirePart, type BrokerProc } from '../support/harness.ts';
import { makeSshHosts, mountedUnder, sshfsPidsOf, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';
import { brokerId } from '../../server/hosts/sshSide.ts';
import { launchArgs } from '../../server/runtimes/sshProcessArgs.ts';
import { mountPoint } from '../../server/hosts/mount.ts';

const A100 = { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 };
const L4 = { name: 'NVIDIA L4', memoryMiB: 23034 };

/** Processes whose command line contains `marker` (pgrep -f), other than pgrep itself. */
function processesWith(marker: string): string[] {
  const r = spawnSync('pgrep', ['-af', marker], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.trim() && !/\bpgrep\b/.test(l));
}

function runDirs(workDir: string): string[] {
  return existsSync(join(workDir, 'jobs')) ? readdirSync(join(workDir, 'jobs')) : [];
}

const mark = () => `gpurun-mark-${randomBytes(6).toString('hex')}`;

describe('SSH hosts without Docker: jobs as plain processes (sshd + sshfs)', function () {
  this.timeout(120_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let ws: string;
  let work1: string;
  let work2: string;
  let config: Record<string, unknown>;

  before(async function () {
    const missing = sshHostsMissing({ docker: false });
    requirePart(this, 'sshd, sshfs, setsid and GNU tail', missing === null, missing ?? '');
    dir = scratch('gpurun-ssh-process-');
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'p1', address: '127.0.0.14', gpus: [A100, A100] },
      { name: 'p2', address: '127.0.0.15', gpus: [L4, L4, L4, L4] },
    ]);
    // p2 mounts directly from the developer's machine, played by p1's sshd: p1's key must be known on p2.
    const hostKnown = join(dir, 'hosts', 'known_hosts_on_gpu_hosts');
    writeFileSync(hostKnown, `${set.hosts[0].knownHostsLine}\n`);
    ws = join(dir, 'workspace');
    mkdirSync(ws);
    writeFileSync(join(ws, 'input.txt'), 'hello from the laptop\n');
    work1 = join(dir, 'work-p1');
    work2 = join(dir, 'work-p2');
    const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, runtime: 'process' };
    config = {
      hosts: [
        { ...common, name: 'p1', address: '127.0.0.14', workDir: work1, mount: { transport: 'relay' } },
        {
          ...common,
          name: 'p2',
          address: '127.0.0.15',
          workDir: work2,
          mount: { transport: 'direct', target: 'root@127.0.0.14:2222', identityFile: set.clientKey, knownHosts: hostKnown, sftpServer: `${NODE} ${CLI} sftp-serve` },
        },
      ],
      defaults: { gpus: 1, memory: '256M' },
    };
    broker = await startBrokerProcess(join(dir, 'home'), config);
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'dana') };
    await waitFor('hosts up', async () => /p1\s+up/.test((await gpurun(['hosts'], env)).stdout) && /p2\s+up/.test((await gpurun(['hosts'], env)).stdout));
  });

  after(async function () {
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      // Whatever a failed test left running on the hosts (its command line names this test's folder).
      for (const line of processesWith(`${dir}/work-p`)) process.kill(Number(line.split(' ')[0]), 'SIGKILL');
      for (const m of [...mountedUnder(work1), ...mountedUnder(work2)]) spawnSync('fusermount3', ['-uz', m]);
      cleanup(dir);
    }
  });

  const { job, detach, logsOf } = cliJobs(() => ({ env, ws }));
  const nothingLeft = async (id: string) => {
    await waitFor('no mount and no run directory left', () => mountedUnder(work1).length + mountedUnder(work2).length === 0 && !runDirs(work1).includes(id) && !runDirs(work2).includes(id));
  };

  it('shows both process hosts up with their GPUs', async () => {
    const r = await gpurun(['hosts'], env);
    assert.match(r.stdout, /p1\s+up\s+2\/2.*ssh-process/);
    assert.match(r.stdout, /p2\s+up\s+4\/4.*ssh-process/);
    assert.match(r.stdout, /p2 GPU 3\s+NVIDIA L4/);
  });

  it('runs a job in the mounted workspace (relay): reads a file, writes one that appears locally, sees only its GPU, exit code 3 comes back', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'A100', '--', 'sh', '-c', 'echo "gpus=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES"; cat input.txt; echo written-by-job > out-relay.txt; pwd; echo "to stderr" >&2; exit 3'], env);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stdout, /^gpus=0 nv=0\n/);
    assert.match(r.stdout, /hello from the laptop\n/);
    assert.match(r.stdout, /to stderr\n/);
    const j = JSON.parse((await gpurun(['ls', '--json', '--all'], env)).stdout)[0];
    assert.ok(r.stdout.includes(`${mountPoint(work1, brokerId(join(dir, 'home', 'data')), j.id)}\n`), `it ran in its mount:\n${r.stdout}`);
    assert.equal(readFileSync(join(ws, 'out-relay.txt'), 'utf8'), 'written-by-job\n');
    assert.equal(j.host, 'p1');
    assert.equal(j.state, 'failed');
    assert.equal(j.exitCode, 3);
    await nothingLeft(j.id);
  });

  it('streams output while the job runs', async () => {
    const child = gpurunSpawn(['run', '--workspace', ws, '--gpu-type', 'A100', '--', 'sh', '-c', 'echo first; sleep 3; echo second'], env);
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    await waitFor('the first line, before the job ends', () => out.includes('first\n'));
    assert.ok(!out.includes('second'), 'the second line is not there yet');
    assert.equal(await exited, 0);
    assert.equal(out, 'first\nsecond\n');
  });

  it('passes hostile arguments through unchanged (direct mount)', async () => {
    const hostile = `it's $(touch /tmp/pwned-gpurun-process) \`id\` "q" ; | & \n newline  two  spaces`;
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'L4', '--env', `HOSTILE=${hostile}`, '--', 'sh', '-c', 'cat input.txt; printf "[%s]\\n" "$1" "$HOSTILE"; echo direct > out-direct.txt', 'sh', hostile], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /hello from the laptop/);
    assert.ok(r.stdout.includes(`[${hostile}]\n[${hostile}]\n`), r.stdout);
    assert.equal(existsSync('/tmp/pwned-gpurun-process'), false, 'nothing in the argument ran');
    assert.equal(readFileSync(join(ws, 'out-direct.txt'), 'utf8'), 'direct\n');
    assert.deepEqual(mountedUnder(work2), []);
  });

  it('gives two jobs disjoint GPUs of one host', async () => {
    const cmd = ['--', 'sh', '-c', 'echo "gpus=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES"; sleep 2'];
    const [j1, j2] = [await detach(['--gpus', '2', '--gpu-type', 'L4', ...cmd]), await detach(['--gpus', '2', '--gpu-type', 'L4', ...cmd])];
    const seen = await waitFor('both print their GPUs', async () => {
      const [a, b] = [await logsOf(j1), await logsOf(j2)];
      return /gpus=/.test(a) && /gpus=/.test(b) && [a.trim(), b.trim()];
    });
    assert.deepEqual(seen.sort(), ['gpus=0,1 nv=0,1', 'gpus=2,3 nv=2,3']);
    await waitFor('both end', async () => (await job(j1)).state === 'succeeded' && (await job(j2)).state === 'succeeded');
  });

  it('cancel stops the job and its children: no process, no mount, no run directory left', async () => {
    const m = mark();
    const id = await detach(['--gpu-type', 'A100', '--', 'sh', '-c', 'sh -c "while :; do sleep 1; done" "$0-child" & echo started; wait', m]);
    await waitFor('running', async () => /started/.test(await logsOf(id)));
    assert.equal(processesWith(`${m}-child`).length, 1, 'the job\'s child runs on the host');
    const c = await gpurun(['cancel', id], env);
    assert.equal(c.code, 0, c.stderr);
    await waitFor('cancelled', async () => (await job(id)).state === 'cancelled');
    assert.deepEqual(processesWith(m), []);
    await nothingLeft(id);
  });

  it('--time 2s stops the job: timed_out, exit 124, nothing left running', async () => {
    const m = mark();
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'A100', '--time', '2s', '--', 'sh', '-c', 'echo begin; sleep 60', m], env);
    assert.equal(r.code, 124, r.stderr);
    assert.match(r.stdout, /begin/);
    const j = JSON.parse((await gpurun(['ls', '--json', '--all'], env)).stdout)[0];
    assert.equal(j.state, 'timed_out');
    assert.deepEqual(processesWith(m), []);
    await nothingLeft(j.id);
  });

  it('a command that is not on the host fails to start, with the reason in the output', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'A100', '--', 'no-such-command-gpurun', 'x'], env);
    assert.equal(r.code, 125, r.stderr);
    assert.match(r.stdout, /no-such-command-gpurun: command not found on this host/);
    const j = JSON.parse((await gpurun(['ls', '--json', '--all'], env)).stdout)[0];
    assert.match(j.reason, /^could not start: the command was not found/);
  });

  it('serves the workspace from the client (--serve-workspace) to a process host', async () => {
    const r = await gpurun(['run', '--serve-workspace', '--workspace', ws, '--gpu-type', 'L4', '--', 'sh', '-c', 'cat input.txt; echo served > out-served.txt'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /hello from the laptop/);
    assert.equal(readFileSync(join(ws, 'out-served.txt'), 'utf8'), 'served\n');
    assert.deepEqual(mountedUnder(work2), []);
  });

  it('fails a job whose workspace mount breaks with the reason workspace_lost, and stops it', async () => {
    const m = mark();
    const id = await detach(['--gpu-type', 'A100', '--', 'sh', '-c', 'echo started; sleep 300', m]);
    await waitFor('running', async () => /started/.test(await logsOf(id)));
    const mnt = mountPoint(work1, brokerId(join(dir, 'home', 'data')), id);
    const sshfs = sshfsPidsOf(mnt);
    assert.ok(sshfs.length > 0, `an sshfs process of ${mnt}`);
    for (const pid of sshfs) process.kill(pid, 'SIGKILL');
    const j = await waitFor('it fails', async () => ((await job(id)).state === 'failed' ? job(id) : undefined), 30_000);
    assert.match(j.reason, /^workspace_lost: /);
    assert.deepEqual(processesWith(m), []);
    await nothingLeft(id);
  });

  it('a job survives kill -9 of the broker: the restarted broker follows it on, every line once; orphans are swept', async () => {
    const m = mark();
    const id = await detach(['--gpu-type', 'L4', '--', 'sh', '-c', 'for i in 1 2 3 4 5 6 7 8 9 10; do echo "line $i"; sleep 0.4; done', m]);
    await waitFor('some output', async () => /line 2/.test(await logsOf(id)));
    await broker.kill9();
    assert.ok(processesWith(m).length > 0, 'the job runs on without the broker');
    // A run directory of this broker that belongs to no job, with a process in it, as a crash mid-start leaves one.
    const orphanMark = mark();
    const orphan = join(work2, 'jobs', 'orphan1');
    mkdirSync(mountPoint(work2, brokerId(join(dir, 'home', 'data')), 'orphan1'), { recursive: true });
    const launch = launchArgs({ dir: orphan, brokerId: brokerId(join(dir, 'home', 'data')), cwd: mountPoint(work2, brokerId(join(dir, 'home', 'data')), 'orphan1'), env: {}, command: ['sh', '-c', 'sleep 300', orphanMark] });
    execFileSync(launch[0], launch.slice(1));
    assert.ok(processesWith(orphanMark).length > 0);

    broker = await startBrokerProcess(join(dir, 'home'), config);
    env = { ...env, GPURUN_BROKER: broker.url };
    const r = await gpurun(['logs', '-f', id], env);
    assert.equal(r.stdout, Array.from({ length: 10 }, (_, i) => `line ${i + 1}\n`).join(''));
    const j = await waitFor('it ends', async () => ((await job(id)).state === 'succeeded' ? job(id) : undefined));
    assert.equal(j.exitCode, 0);
    await nothingLeft(id);
    await waitFor('the orphan is swept', () => processesWith(orphanMark).length === 0 && !existsSync(orphan) && !existsSync(mountPoint(work2, brokerId(join(dir, 'home', 'data')), 'orphan1')));
  });
});
