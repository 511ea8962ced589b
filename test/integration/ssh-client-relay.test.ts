/**
 * A client-served workspace, end to end: the broker runs where it CANNOT read the workspace (its own mount
 * namespace, `unshare --mount`, with a tmpfs over the workspace's parent folder), and `gpurun run --serve-workspace`
 * serves the files over its connection to the broker, which relays them to a real sshd host's `sshfs -o passive`
 * (real Docker, real FUSE, busybox image). Loopback addresses 127.0.0.12–13, apart from the other SSH suites.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { cleanup, createToken, gpurun, gpurunSpawn, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, requirePart, type BrokerProc } from '../support/harness.ts';
import { hiddenFrom, makeSshHosts, mountedUnder, sshHostsMissing, unshareMissing, type TestHostSet } from '../support/sshHosts.ts';

const L4 = { name: 'NVIDIA L4', memoryMiB: 23034 };

function containers(label: string): string[] {
  return execFileSync('docker', ['ps', '-a', '--filter', `label=${label}`, '--format', '{{.Names}}'], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

describe('client-served workspace through a broker that cannot read it (sshd + Docker + sshfs)', function () {
  this.timeout(120_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let laptop: string;
  let ws: string;
  let workDir: string;

  before(async function () {
    const missing = sshHostsMissing() ?? unshareMissing();
    requirePart(this, 'sshd, sshfs, Docker and unshare', missing === null, missing ?? '');
    dir = scratch('gpurun-client-relay-');
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'gpu1', address: '127.0.0.12', gpus: [L4, L4] },
      { name: 'gpu2', address: '127.0.0.13', gpus: [L4] },
    ]);
    laptop = join(dir, 'laptop');
    ws = join(laptop, 'workspace');
    mkdirSync(ws, { recursive: true });
    writeFileSync(join(ws, 'input.txt'), 'only on the laptop\n');
    workDir = join(dir, 'hostwork');
    const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir, mount: { transport: 'relay' } };
    // The broker's own mount namespace hides the laptop folder under an empty tmpfs: it cannot read the workspace.
    broker = await startBrokerProcess(
      join(dir, 'home'),
      { hosts: [{ ...common, name: 'gpu1', address: '127.0.0.12' }, { ...common, name: 'gpu2', address: '127.0.0.13' }], defaults: { image: 'local/busybox:1', gpus: 1, memory: '256M' } },
      {},
      { wrap: hiddenFrom(laptop) },
    );
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'carol') };
  });

  after(async function () {
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      for (const c of containers('gpurun.owner=carol')) spawnSync('docker', ['rm', '-f', c]);
      for (const m of mountedUnder(workDir)) spawnSync('fusermount3', ['-uz', m]);
      cleanup(dir);
    }
  });

  /** What the VS Code extension does: submit through the HTTP API; the workspace is served by another process. */
  async function submitViaApi(command: string[], workspaceFrom: 'client' | 'broker' = 'client', workspace = ws): Promise<string> {
    const r = await fetch(`${broker.url}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${env.GPURUN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command, workspace, workspaceFrom, gpus: 1 }),
    });
    assert.equal(r.status, 201, await r.clone().text());
    return ((await r.json()) as { id: string }).id;
  }

  it('the broker really cannot see the workspace', () => {
    const r = spawnSync('nsenter', ['-t', String(broker.proc.pid), '-m', 'ls', '-A', laptop], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '', 'the broker sees an empty folder where the workspace is');
    assert.ok(existsSync(join(ws, 'input.txt')), 'the client sees it');
  });

  it('runs a job whose files the CLI serves: it reads input.txt and writes out.txt locally; output streams; exit 0', async () => {
    await waitFor('hosts up', async () => /gpu1\s+up/.test((await gpurun(['hosts'], env)).stdout));
    const r = await gpurun(['run', '--serve-workspace', '--workspace', ws, '--', 'sh', '-c', 'echo "from $(pwd)"; cat input.txt; echo written-by-job > out.txt; echo done'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /from \/workspace\n/);
    assert.match(r.stdout, /only on the laptop\n/);
    assert.match(r.stdout, /done\n/);
    assert.match(r.stderr, /serving .*workspace to host gpu\d/);
    assert.equal(readFileSync(join(ws, 'out.txt'), 'utf8'), 'written-by-job\n');
    const job = JSON.parse((await gpurun(['ls', '--json'], env)).stdout)[0];
    assert.equal(job.state, 'succeeded');
    assert.equal(job.workspaceFrom, 'client');
    assert.deepEqual(containers(`gpurun.job=${job.id}`), [], 'the container is removed');
    assert.deepEqual(mountedUnder(workDir), [], 'the workspace is unmounted');
  });

  it('without --serve-workspace the same broker cannot give the job its files (the point of the feature)', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--', 'cat', 'input.txt'], env);
    assert.notEqual(r.code, 0, `the broker-served job could not have read the file:\n${r.stdout}`);
    assert.doesNotMatch(r.stdout, /only on the laptop/);
  });

  it('gpurun serve-workspace ID serves a job submitted through the API: it reads input.txt, writes out2.txt locally; exits 0 when the job ends', async () => {
    await waitFor('hosts up', async () => /gpu1\s+up/.test((await gpurun(['hosts'], env)).stdout));
    const id = await submitViaApi(['sh', '-c', 'cat input.txt; echo served-by-serve-workspace > out2.txt; sleep 1; echo finished']);
    // No --workspace: the folder is the job's own workspace, as the broker reports it.
    const r = await gpurun(['serve-workspace', id], env, { timeoutMs: 90_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`serving ${ws} to host gpu\\d`));
    assert.match(r.stderr, new RegExp(`job ${id} succeeded; stopped serving`));
    assert.equal(readFileSync(join(ws, 'out2.txt'), 'utf8'), 'served-by-serve-workspace\n');
    const logs = await gpurun(['logs', id], env);
    assert.equal(logs.stdout, 'only on the laptop\nfinished\n');
    assert.deepEqual(mountedUnder(workDir), [], 'the workspace is unmounted');

    const over = await gpurun(['serve-workspace', id], env);
    assert.equal(over.code, 1);
    assert.match(over.stderr, new RegExp(`job ${id} has already ended \\(succeeded\\); there is nothing to serve`));
  });

  it('gpurun serve-workspace refuses another user\'s job and a job the broker serves', async () => {
    const id = await submitViaApi(['sleep', '3']);
    const mallory = { ...env, GPURUN_TOKEN: await createToken(broker, 'mallory') };
    const notMine = await gpurun(['serve-workspace', '--workspace', ws, id], mallory);
    assert.equal(notMine.code, 1);
    assert.match(notMine.stderr, new RegExp(`gpurun: error: no job ${id}`));
    // The owner serves it after all, so that the job ends well.
    const served = await gpurun(['serve-workspace', id], env, { timeoutMs: 90_000 });
    assert.equal(served.code, 0, served.stderr);

    // A broker-served job needs a folder the broker can see (it refuses one it cannot at submit).
    const visible = join(dir, 'broker-visible');
    mkdirSync(visible, { recursive: true });
    const brokerServed = await submitViaApi(['true'], 'broker', visible);
    const r = await gpurun(['serve-workspace', brokerServed], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`job ${brokerServed} does not take its workspace from the client`));
  });

  it('refuses --serve-workspace with --detach', async () => {
    const r = await gpurun(['run', '--serve-workspace', '--detach', '--workspace', ws, '--', 'true'], env);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--serve-workspace and --detach do not go together/);
  });

  it('refuses a workspace stream for a job that is not the caller\'s', async () => {
    const other = { ...env, GPURUN_TOKEN: await createToken(broker, 'mallory') };
    const p = gpurunSpawn(['run', '--serve-workspace', '--workspace', ws, '--', 'sleep', '5'], env);
    const closed = new Promise((r) => p.on('close', r));
    let err = '';
    p.stderr!.on('data', (d) => (err += d));
    const id = await waitFor('submitted', () => /job (\w+) submitted/.exec(err)?.[1]);
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${broker.url}/v1/jobs/${id}/workspace`, { headers: { authorization: `Bearer ${other.GPURUN_TOKEN}`, connection: 'Upgrade', upgrade: 'gpurun-sftp' } });
      req.on('upgrade', (_res, sock) => (sock.destroy(), resolve(101)));
      req.on('response', (res) => (res.resume(), resolve(res.statusCode ?? 0)));
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 404, 'another user is told there is no such job');
    await closed;
  });

  it('killing the CLI mid-job ends the job with workspace_lost; no container, no mount is left', async () => {
    const p = gpurunSpawn(['run', '--serve-workspace', '--workspace', ws, '--', 'sh', '-c', 'echo started; sleep 60; echo never'], env);
    let out = '';
    let err = '';
    p.stdout!.on('data', (d) => (out += d));
    p.stderr!.on('data', (d) => (err += d));
    const id = await waitFor('submitted', () => /job (\w+) submitted/.exec(err)?.[1]);
    await waitFor('the job to start', () => out.includes('started'), 30_000);
    process.kill(p.pid!, 'SIGKILL');
    const job = await waitFor('the job to end', async () => {
      const j = JSON.parse((await gpurun(['ls', '--json', '--all'], env)).stdout).find((x: { id: string }) => x.id === id);
      return j && ['failed', 'lost'].includes(j.state) && j;
    }, 60_000);
    assert.equal(job.state, 'failed');
    assert.match(job.reason, /^workspace_lost: the client that served the workspace disconnected/);
    await waitFor('the container to go', () => containers(`gpurun.job=${id}`).length === 0);
    await waitFor('the mount to go', () => mountedUnder(workDir).length === 0);
    assert.ok(!readdirSync(join(workDir, 'mnt')).some((b) => readdirSync(join(workDir, 'mnt', b)).includes(id)), 'the mount point is removed');
  });

  it('fails a job whose client never attaches after 30 s, saying why; nothing is left on the host', async function () {
    this.timeout(90_000);
    // What a client that submits and then goes away (or is not gpurun) looks like: the API, no workspace stream.
    const id = await submitViaApi(['echo', 'never']);
    const started = Date.now();
    const job = await waitFor('the job to fail', async () => {
      await new Promise((res) => setTimeout(res, 500));
      const j = (await (await fetch(`${broker.url}/v1/jobs/${id}`, { headers: { authorization: `Bearer ${env.GPURUN_TOKEN}` } })).json()) as { state: string; reason: string };
      return ['succeeded', 'failed', 'cancelled', 'timed_out', 'lost'].includes(j.state) && j;
    }, 75_000);
    assert.ok(Date.now() - started >= 25_000, `it waited for the client: ${JSON.stringify(job)}`);
    assert.equal(job.state, 'failed');
    assert.match(job.reason, /the client did not serve the workspace within 30 s/);
    assert.deepEqual(containers(`gpurun.job=${id}`), []);
    assert.deepEqual(mountedUnder(workDir), []);
    const logs = await gpurun(['logs', id], env);
    assert.doesNotMatch(logs.stdout, /never/);
  });
});
