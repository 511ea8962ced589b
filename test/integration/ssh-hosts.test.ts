/**
 * GPU hosts over SSH, end to end through the CLI against a real broker process: three real sshd hosts on loopback
 * addresses (two trusted, one with an unknown host key) with nvidia-smi stand-ins (2×A100, 4×L4), the real Docker
 * engine, real sshfs over FUSE (relay on one host, direct on the other), and a locally made image.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, CLI, cliJobs, createToken, gpurun, NODE, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, requirePart, type BrokerProc } from '../support/harness.ts';
import { makeSshHosts, mountedUnder, sshfsPidsOf, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';
import { mountPoint } from '../../server/hosts/mount.ts';
import { brokerId } from '../../server/hosts/sshSide.ts';

const A100 = { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 };
const L4 = { name: 'NVIDIA L4', memoryMiB: 23034 };

function containers(label: string): string[] {
  return execFileSync('docker', ['ps', '-a', '--filter', `label=${label}`, '--format', '{{.Names}}'], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

describe('GPU hosts over SSH (sshd + Docker + sshfs)', function () {
  this.timeout(120_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let ws: string;
  let workDir: string;
  let config: Record<string, unknown>;

  before(async function () {
    requirePart(this, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
    dir = scratch('gpurun-ssh-');
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'a100', address: '127.0.0.2', gpus: [A100, A100] },
      { name: 'l4', address: '127.0.0.3', gpus: [L4, L4, L4, L4] },
      { name: 'stranger', address: '127.0.0.4', gpus: [A100], trusted: false },
      { name: 'dev', address: '127.0.0.5', gpus: [] },
    ]);
    // The developer's machine as the GPU hosts reach it (direct transport): its key must be known to them too.
    const dev = set.hosts.find((h) => h.name === 'dev')!;
    const hostKnown = join(dir, 'hosts', 'known_hosts_on_gpu_hosts');
    writeFileSync(hostKnown, `${dev.knownHostsLine}\n`);
    ws = join(dir, 'workspace');
    mkdirSync(ws);
    writeFileSync(join(ws, 'input.txt'), 'hello from the laptop\n');
    workDir = join(dir, 'hostwork');
    const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir };
    config = {
      hosts: [
        { ...common, name: 'a100', address: '127.0.0.2', mount: { transport: 'relay' } },
        {
          ...common,
          name: 'l4',
          address: '127.0.0.3',
          mount: { transport: 'direct', target: 'root@127.0.0.5:2222', identityFile: set.clientKey, knownHosts: hostKnown, sftpServer: `${NODE} ${CLI} sftp-serve` },
        },
        { ...common, name: 'stranger', address: '127.0.0.4' },
      ],
      defaults: { image: 'local/busybox:1', gpus: 1, memory: '256M' },
    };
    broker = await startBrokerProcess(join(dir, 'home'), config);
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'alice') };
  });

  after(async function () {
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      for (const c of containers('gpurun.owner=alice')) spawnSync('docker', ['rm', '-f', c]);
      for (const m of mountedUnder(workDir)) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
      cleanup(dir);
    }
  });

  it('shows each host with its GPUs, and refuses a host whose key is unknown, with its fingerprint and the line to add', async () => {
    const r = await waitFor('hosts up', async () => {
      const h = await gpurun(['hosts'], env);
      return /a100\s+up/.test(h.stdout) && /l4\s+up/.test(h.stdout) && h;
    });
    assert.match(r.stdout, /a100\s+up\s+2\/2/);
    assert.match(r.stdout, /l4\s+up\s+4\/4/);
    assert.match(r.stdout, /l4 GPU 3\s+NVIDIA L4/);
    assert.match(r.stdout, /stranger\s+down/);
    const stranger = set.hosts.find((h) => h.name === 'stranger')!;
    assert.match(r.stdout, /stranger: .*refused its host key ssh-ed25519 SHA256:[A-Za-z0-9+/]{43}/);
    assert.ok(r.stdout.includes(stranger.knownHostsLine), `the line to add is shown:\n${r.stdout}`);
    // The images each Docker host has (the language server completes image= from them).
    const hosts = JSON.parse((await gpurun(['hosts', '--json'], env)).stdout) as Array<{ name: string; images?: string[] }>;
    assert.ok(hosts.find((h) => h.name === 'a100')!.images?.includes('local/busybox:1'), JSON.stringify(hosts));
  });

  it('runs a job on the A100 host (relay mount): it reads a workspace file and writes one that appears locally', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'A100', '--', 'sh', '-c', 'echo "gpus=$CUDA_VISIBLE_DEVICES"; cat input.txt; echo written-by-job > out-relay.txt; pwd'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /gpus=0\n/);
    assert.match(r.stdout, /hello from the laptop/);
    assert.match(r.stdout, /\/workspace/);
    assert.equal(readFileSync(join(ws, 'out-relay.txt'), 'utf8'), 'written-by-job\n');
    const ls = await gpurun(['ls', '--json'], env);
    const job = JSON.parse(ls.stdout)[0];
    assert.equal(job.host, 'a100');
    assert.equal(job.state, 'succeeded');
    assert.deepEqual(containers(`gpurun.job=${job.id}`), [], 'the container is removed');
    assert.deepEqual(mountedUnder(workDir), [], 'the workspace is unmounted');
  });

  const { job, detach, logsOf } = cliJobs(() => ({ env, ws }));

  it('runs a job on the L4 host (direct mount) with hostile arguments passed through unchanged', async () => {
    const hostile = `it's $(touch /tmp/pwned-gpurun) \`id\` "q" ; | & \n newline`;
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'L4', '--', 'sh', '-c', 'cat input.txt; printf "%s\\n" "$1"; echo direct > out-direct.txt', 'sh', hostile], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /hello from the laptop/);
    assert.ok(r.stdout.includes(`${hostile}\n`), r.stdout);
    assert.equal(existsSync('/tmp/pwned-gpurun'), false, 'nothing in the argument ran');
    assert.equal(readFileSync(join(ws, 'out-direct.txt'), 'utf8'), 'direct\n');
    assert.deepEqual(mountedUnder(workDir), []);
  });

  it('a missing image: a clean message naming the host, what to do, and the images the host has', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'L4', '--image', 'nosuch/image:1', '--', 'true'], env);
    assert.equal(r.code, 125, r.stderr);
    assert.match(r.stderr, /image nosuch\/image:1 is not on host \S+/);
    assert.doesNotMatch(r.stderr, /docker run --help/);
    assert.match(r.stderr, /Pull or build it on \S+ .*Images on \S+: .*local\/busybox:1/s);
  });

  it('places by GPU count: 3 GPUs go to the host that has 4', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpus', '3', '--', 'sh', '-c', 'echo "gpus=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES"'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /gpus=0,1,2 nv=0,1,2/);
    const ls = JSON.parse((await gpurun(['ls', '--json'], env)).stdout);
    assert.equal(ls[0].host, 'l4');
  });

  it('gives two jobs disjoint GPUs of one host, queues a third while full, starts it when GPUs free up; cancel cleans up', async () => {
    const cmd = ['--', 'sh', '-c', 'echo "gpus=$CUDA_VISIBLE_DEVICES"; sleep 300'];
    const j1 = await detach(['--gpus', '2', '--gpu-type', 'L4', ...cmd]);
    const j2 = await detach(['--gpus', '2', '--gpu-type', 'L4', ...cmd]);
    await waitFor('both running', async () => (await job(j1)).state === 'running' && (await job(j2)).state === 'running');
    const seen = await waitFor('both print their GPUs', async () => {
      const [a, b] = [await logsOf(j1), await logsOf(j2)];
      return /gpus=/.test(a) && /gpus=/.test(b) && [a.trim(), b.trim()];
    });
    assert.deepEqual(seen.sort(), ['gpus=0,1', 'gpus=2,3']);
    const hosts = (await gpurun(['hosts'], env)).stdout;
    assert.match(hosts, /l4\s+up\s+0\/4/);
    assert.match(hosts, new RegExp(`l4 GPU 0 .*used by (${j1}|${j2})`));
    const j3 = await detach(['--gpus', '1', '--gpu-type', 'L4', ...cmd]);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await job(j3)).state, 'queued', 'no L4 is free');

    const c = await gpurun(['cancel', j1], env);
    assert.equal(c.code, 0, c.stderr);
    assert.equal((await job(j1)).state, 'cancelled');
    await waitFor('the third job starts', async () => (await job(j3)).state === 'running');
    assert.ok((await job(j1)).gpuIndices.includes((await job(j3)).gpuIndices[0]), 'it got a GPU the cancelled job freed');
    assert.deepEqual(containers(`gpurun.job=${j1}`), [], 'the cancelled job has no container left');

    for (const id of [j2, j3]) assert.equal((await gpurun(['cancel', id], env)).code, 0);
    assert.deepEqual(containers('gpurun.owner=alice'), []);
    await waitFor('no mount left', () => mountedUnder(workDir).length === 0);
    assert.match((await gpurun(['hosts'], env)).stdout, /l4\s+up\s+4\/4/);
  });

  it('a job survives kill -9 of the broker: the restarted broker reattaches, output has no gap and no repeat', async () => {
    const id = await detach(['--gpu-type', 'L4', '--', 'sh', '-c', 'for i in 1 2 3 4 5 6 7 8 9 10; do echo "line $i"; sleep 0.4; done']);
    await waitFor('some output', async () => /line 2/.test(await logsOf(id)));
    await broker.kill9();
    assert.equal(containers(`gpurun.job=${id}`).length, 1, 'the container runs on without the broker');
    // Orphans as a crash mid-start leaves them: a container of this broker and a mount for a job it has no record of.
    const brokerLabel = execFileSync('docker', ['inspect', '--format', '{{index .Config.Labels "gpurun.broker"}}', `gpurun-${id}`], { encoding: 'utf8' }).trim();
    execFileSync('docker', ['run', '-d', '--name', 'gpurun-j-orphan', '--label', `gpurun.broker=${brokerLabel}`, '--label', 'gpurun.job=j-orphan', '--label', 'gpurun.owner=alice', 'local/busybox:1', 'sleep', '300']);
    const orphanMnt = mountPoint(workDir, brokerLabel, 'j-orphan');
    mkdirSync(orphanMnt, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', 'gpurun-orphan', orphanMnt]);
    broker = await startBrokerProcess(join(dir, 'home'), config);
    env = { ...env, GPURUN_BROKER: broker.url };
    const r = await gpurun(['logs', '-f', id], env);
    assert.equal(r.stdout, Array.from({ length: 10 }, (_, i) => `line ${i + 1}\n`).join(''));
    const j = await waitFor('it ends', async () => ((await job(id)).state === 'succeeded' ? job(id) : undefined));
    assert.equal(j.exitCode, 0);
    await waitFor('its container is removed', () => containers(`gpurun.job=${id}`).length === 0);
    await waitFor('the orphan container is removed', () => containers('gpurun.job=j-orphan').length === 0);
    await waitFor('the orphan mount is gone', () => !mountedUnder(workDir).includes(orphanMnt) && !existsSync(orphanMnt));
  });

  it('records an out-of-memory kill: the job fails with that reason, exit 137, and its container is removed', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'L4', '--memory', '64M', '--', 'busybox', 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=300M', 'count=1'], env);
    assert.equal(r.code, 137, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /failed: killed for running out of memory \(OOM\)/);
    const j = JSON.parse((await gpurun(['ls', '--json'], env)).stdout)[0];
    assert.equal(j.state, 'failed');
    assert.equal(j.exitCode, 137);
    assert.deepEqual(containers(`gpurun.job=${j.id}`), []);
  });

  it('fails a job whose workspace mount breaks with the reason workspace_lost', async () => {
    const id = await detach(['--gpu-type', 'A100', '--', 'sh', '-c', 'echo started; sleep 300']);
    await waitFor('running', async () => /started/.test(await logsOf(id)));
    const mnt = mountPoint(workDir, brokerId(join(dir, 'home', 'data')), id);
    const sshfs = sshfsPidsOf(mnt);
    assert.ok(sshfs.length > 0, `an sshfs process of ${mnt}`);
    for (const pid of sshfs) process.kill(pid, 'SIGKILL');
    const j = await waitFor('it fails', async () => ((await job(id)).state === 'failed' ? job(id) : undefined), 30_000);
    assert.match(j.reason, /^workspace_lost: /);
    await waitFor('its container is removed', () => containers(`gpurun.job=${id}`).length === 0);
  });

  it('enforces a time limit on a container: timed_out, exit 124, container and mount gone', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'L4', '--time', '2s', '--', 'sh', '-c', 'echo started; sleep 60; echo never'], env);
    assert.equal(r.code, 124, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /started\n/);
    assert.doesNotMatch(r.stdout, /never/);
    const j = JSON.parse((await gpurun(['ls', '--json'], env)).stdout)[0];
    assert.equal(j.state, 'timed_out');
    assert.deepEqual(containers(`gpurun.job=${j.id}`), []);
    await waitFor('the mount to go', () => mountedUnder(workDir).length === 0);
  });

  it('containers of different users cannot reach each other; the same user\'s can', async () => {
    const bobEnv = { ...env, GPURUN_TOKEN: await createToken(broker, 'bob') };
    const server = await detach(['--gpus', '0', '--', 'busybox', 'httpd', '-f', '-p', '8080']);
    await waitFor('the server container runs', async () => (await job(server)).state === 'running');
    const ip = execFileSync('docker', ['inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', `gpurun-${server}`], { encoding: 'utf8' }).trim();
    assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
    const probe = ['--gpus', '0', '--', 'sh', '-c', 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | busybox nc -w 3 "$1" 8080; echo probe-done', 'probe', ip];
    try {
      const fromBob = await gpurun(['run', '--workspace', ws, ...probe], bobEnv);
      assert.match(fromBob.stdout, /probe-done/, fromBob.stderr);
      assert.doesNotMatch(fromBob.stdout, /HTTP\/1\.\d/, 'bob reached alice\'s container');
      const fromAlice = await gpurun(['run', '--workspace', ws, ...probe], env);
      assert.match(fromAlice.stdout, /HTTP\/1\.\d 404/, `alice's own containers share her network:\n${fromAlice.stdout}`);
    } finally {
      await gpurun(['cancel', server], env);
    }
  });

  it('a host whose sshd stops is shown unreachable, with since when and why, and gets no new jobs', async () => {
    const a100 = set.hosts.find((h) => h.name === 'a100')!;
    await a100.stop();
    const h = await waitFor('a100 unreachable', async () => {
      const r = await gpurun(['hosts'], env);
      return /a100\s+unreachable/.test(r.stdout) && r.stdout;
    }, 40_000);
    assert.match(h, /a100: unreachable since \d\d:\d\d:\d\d .*ECONNREFUSED/);
    const id = await detach(['--gpu-type', 'A100', '--', 'echo', 'never']);
    await new Promise((r) => setTimeout(r, 2000));
    const j = await job(id);
    assert.equal(j.state, 'queued');
    assert.equal(j.host, null);
    assert.equal((await gpurun(['cancel', id], env)).code, 0);
  });
});
