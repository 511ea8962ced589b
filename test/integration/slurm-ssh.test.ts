/**
 * A Slurm cluster whose login node is reached over SSH, through the CLI and a real broker process: a real sshd on a
 * loopback address (127.0.0.9) is the login node — the same machine, so its sbatch reaches this machine's real
 * slurmctld — and the workspace is staged over that connection's SFTP into a folder this machine's slurmd reads.
 * A second login node (127.0.0.10) has a host key the broker does not know.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, gpurun, gpurunSpawn, requirePart, scratch, waitFor } from '../support/harness.ts';
import { requireSlurm, scancelAllGpurun, slurmState, startSlurmBroker, type SlurmBroker } from '../support/slurm.ts';
import { makeSshHosts, type TestHostSet } from '../support/sshHosts.ts';
import type { Job } from '../../server/protocol/jobs.ts';

/** Why a loopback sshd login node cannot be made here, or null. */
function sshdMissing(): string | null {
  if (process.getuid?.() !== 0) return 'the test sshd runs as root';
  for (const f of ['/usr/sbin/sshd', '/usr/bin/ssh-keygen']) if (!existsSync(f)) return `${f} is missing (apt-get install openssh-server)`;
  return null;
}

describe('slurm: login node over SSH, staging over SFTP (sshd + slurmctld)', function () {
  this.timeout(120_000);
  let dir: string;
  let set: TestHostSet;
  let s: SlurmBroker;
  let ws: string;
  let storage: string;

  before(async function () {
    requireSlurm(this);
    requirePart(this, 'sshd', sshdMissing() === null, sshdMissing() ?? '');
    dir = scratch('gpurun-slurm-ssh-');
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'login', address: '127.0.0.9', gpus: [], sshdConfig: ['Subsystem sftp internal-sftp'] },
      { name: 'stranger', address: '127.0.0.10', gpus: [], trusted: false, sshdConfig: ['Subsystem sftp internal-sftp'] },
    ]);
    ws = join(dir, 'my project');
    mkdirSync(join(ws, 'lib'), { recursive: true });
    mkdirSync(join(ws, '.git'));
    writeFileSync(join(ws, 'main.py'), 'import sys\nprint(open("input.txt").read().strip(), flush=True)\nprint("util:", open("lib/util.py").read().strip())\nsys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)\n');
    writeFileSync(join(ws, 'input.txt'), 'version one\n');
    writeFileSync(join(ws, 'lib', 'util.py'), 'X = 1\n');
    writeFileSync(join(ws, '.git', 'config'), '[core]\n');
    storage = join(dir, 'cluster-storage');
    const login = (address: string) => ({ address, port: 2222, user: 'root', identityFile: set.clientKey, knownHosts: set.knownHosts });
    const cluster = { partitions: { online: 'online', offline: 'offline' }, gres: 'gpu', pollInterval: '1s' };
    s = await startSlurmBroker(join(dir, 'home'), {
      clusters: [
        { name: 'test', login: login('127.0.0.9'), stagingDir: storage, ...cluster },
        { name: 'stranger', login: login('127.0.0.10'), stagingDir: join(dir, 'stranger-storage'), ...cluster },
      ],
      defaultBackend: 'test',
    });
  });
  after(async () => {
    await s?.broker.stop();
    await set?.stopAll();
    scancelAllGpurun();
    if (dir) cleanup(dir);
  });

  const run = (cmd: string[], extra: string[] = []) => gpurun(['run', '--workspace', ws, '--gpus', '0', '--memory', '100M', ...extra, '--', ...cmd], s.env);
  async function job(id: string): Promise<Job> {
    const r = await gpurun(['ls', '--all', '--json'], s.env);
    return (JSON.parse(r.stdout) as Job[]).find((j) => j.id === id)!;
  }
  const jobId = (stderr: string) => /job (\w+) submitted/.exec(stderr)![1];

  it('runs the job through sbatch over SSH, streams its output while it runs, and propagates its exit code', async () => {
    const child = gpurunSpawn(['run', '--workspace', ws, '--gpus', '0', '--memory', '100M', '--', 'python3', '-c', 'import time, sys; print("first", flush=True); time.sleep(3); print("second"); sys.exit(3)'], s.env);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    await waitFor('the first line', () => out.includes('first\n'), 60_000);
    assert.ok(!out.includes('second'), out);
    // The first submit copied the workspace over SFTP (.git left out).
    assert.match(err, /workspace staged on cluster test: 3 files copied, 0 unchanged/);
    const id = jobId(err);
    assert.equal((await job(id)).state, 'running');
    const code = await new Promise<number | null>((r) => child.on('close', r));
    assert.equal(code, 3, err);
    assert.equal(out, 'first\nsecond\n');
    const done = await job(id);
    assert.equal(done.state, 'failed');
    assert.equal(done.exitCode, 3);
    assert.equal(done.backend, 'test');
    // The real Slurm ran it: it knows the job the broker submitted over SSH.
    assert.equal(slurmState(done.cluster!.slurmJobId!), 'FAILED');
  });

  it('stages the workspace over SFTP with the mtimes kept; a second submit after one edit copies one file', async () => {
    const r1 = await run(['python3', 'main.py']);
    assert.equal(r1.code, 0, r1.stderr);
    assert.match(r1.stderr, /workspace staged on cluster test: 0 files copied, 3 unchanged/);
    assert.equal(r1.stdout, 'version one\nutil: X = 1\n');
    // The staged copy is on the cluster's storage, without .git, each file with the developer's mtime (seconds).
    const staged = join(storage, 'alice', readdir1(join(storage, 'alice')));
    assert.equal(readFileSync(join(staged, 'lib', 'util.py'), 'utf8'), 'X = 1\n');
    assert.ok(!existsSync(join(staged, '.git')));
    assert.equal(Math.floor(statSync(join(staged, 'main.py')).mtimeMs / 1000), Math.floor(statSync(join(ws, 'main.py')).mtimeMs / 1000));

    writeFileSync(join(ws, 'input.txt'), 'version two\n');
    const r2 = await run(['python3', 'main.py', '4']);
    assert.equal(r2.code, 4, r2.stderr);
    assert.match(r2.stderr, /workspace staged on cluster test: 1 file copied, 2 unchanged/);
    assert.equal(r2.stdout, 'version two\nutil: X = 1\n');
    assert.equal((await job(jobId(r2.stderr))).cluster!.staged!.copied, 1);
  });

  it('brings back a file the job wrote, over SFTP', async () => {
    const r = await run(['python3', '-c', 'import os; os.makedirs("out", exist_ok=True); open("out/result.txt", "w").write("42\\n")']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(join(ws, 'out', 'result.txt'), 'utf8'), '42\n');
    assert.deepEqual((await job(jobId(r.stderr))).cluster!.returned, { copied: 1, keptNewer: [] });
    const again = await run(['true']);
    assert.match(again.stderr, /0 files copied, 4 unchanged/);
  });

  it('refuses a login node whose host key is unknown, with its fingerprint, and submits nothing', async () => {
    const stranger = set.hosts.find((h) => h.name === 'stranger')!;
    const fingerprint = spawnSync('ssh-keygen', ['-lf', join(dir, 'hosts', 'stranger', 'ssh_host_ed25519_key.pub')], { encoding: 'utf8' }).stdout.split(' ')[1];
    assert.match(fingerprint, /^SHA256:/);
    const r = await run(['python3', 'main.py'], ['--backend', 'stranger']);
    assert.notEqual(r.code, 0);
    const id = jobId(r.stderr);
    const failed = await job(id);
    assert.equal(failed.state, 'failed');
    assert.match(failed.reason ?? '', new RegExp(`cluster stranger's login node \\(${stranger.address.replace(/\./g, '\\.')}:2222\\): refused its host key ssh-ed25519 ${fingerprint.replace(/[+/]/g, '\\$&')}: the key is not in `));
    assert.ok(r.stderr.includes(fingerprint), r.stderr);
    // The admin finds the line to add to known_hosts in the broker's log.
    assert.ok(s.broker.log().includes(`add this line to ${join(dir, 'hosts', 'known_hosts')}:\\n  ${stranger.knownHostsLine}`), s.broker.log().slice(-2000));
    // Nothing reached Slurm or the stranger's storage.
    const queued = spawnSync('squeue', ['-h', '--states=all', `--name=gpurun-${id}`, '-o', '%i'], { encoding: 'utf8' }).stdout.trim();
    assert.equal(queued, '');
    assert.ok(!existsSync(join(dir, 'stranger-storage')));
  });
});

function readdir1(d: string): string {
  const ents = readdirSync(d).filter((e) => !e.startsWith('.'));
  assert.equal(ents.length, 1, ents.join(', '));
  return ents[0];
}
