/**
 * The mounted workspace as a job sees it, through the CLI against a real broker process: real sshd hosts on loopback
 * (127.0.7.x), the real Docker engine with the Python image from test/setup/30-ssh-docker.sh, and real sshfs (relay
 * on a Docker host and on a process host). Symlinks reach the job as they are on the developer's disk: a
 * virtualenv's `bin/python3 -> /usr/bin/python3` runs; a link that leads out of the workspace still does not expose
 * the developer's files (the host resolves it in its own file system; the SFTP side refuses to follow it).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, createToken, gpurun, scratch, startBrokerProcess, stopBroker, testEnv, requirePart, type BrokerProc } from '../support/harness.ts';
import { makeSshHosts, mountedUnder, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';

const A100 = { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 };
const H100 = { name: 'NVIDIA H100', memoryMiB: 81559 };

describe('the mounted workspace: symlinks and virtualenvs (sshd + Docker + sshfs)', function () {
  this.timeout(120_000);
  // dir: the test's scratch folder; ws: the developer's workspace; workDir: the hosts' gpurun folder.
  let [dir, ws, workDir] = ['', '', ''];
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;

  before(async function () {
    requirePart(this, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
    const img = spawnSync('docker', ['image', 'inspect', 'local/python:3']);
    requirePart(this, 'the image local/python:3', img.status === 0, 'run test/setup/30-ssh-docker.sh');
    dir = scratch('gpurun-ws-');
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'docker', address: '127.0.7.1', gpus: [A100] },
      { name: 'proc', address: '127.0.7.2', gpus: [H100] },
    ]);
    ws = join(dir, 'workspace');
    // A virtualenv as `python3 -m venv` makes it: bin/python3 is a link to the system's interpreter.
    mkdirSync(join(ws, '.venv', 'bin'), { recursive: true });
    mkdirSync(join(ws, '.venv', 'lib', 'python3.11', 'site-packages', 'hello'), { recursive: true });
    symlinkSync('/usr/bin/python3', join(ws, '.venv', 'bin', 'python3'));
    symlinkSync('python3', join(ws, '.venv', 'bin', 'python'));
    symlinkSync('lib', join(ws, '.venv', 'lib64'));
    writeFileSync(join(ws, '.venv', 'pyvenv.cfg'), 'home = /usr/bin\ninclude-system-site-packages = false\n');
    writeFileSync(join(ws, '.venv', 'lib', 'python3.11', 'site-packages', 'hello', '__init__.py'), 'WORD = "from the venv"\n');
    mkdirSync(join(dir, 'secret'));
    writeFileSync(join(dir, 'secret', 'key'), 'SECRET-ON-THE-DEV-MACHINE');
    symlinkSync(join(dir, 'secret'), join(ws, 'out'));
    symlinkSync('../secret', join(ws, 'up'));
    workDir = join(dir, 'hostwork');
    const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir, mount: { transport: 'relay' } };
    broker = await startBrokerProcess(join(dir, 'home'), {
      hosts: [
        { ...common, name: 'docker', address: '127.0.7.1' },
        { ...common, name: 'proc', address: '127.0.7.2', runtime: 'process' },
      ],
      defaults: { image: 'local/python:3', gpus: 1, memory: '512M' },
    });
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'alice') };
  });

  after(async function () {
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      for (const c of execFileSync('docker', ['ps', '-aq', '--filter', 'label=gpurun.owner=alice'], { encoding: 'utf8' }).split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
      for (const m of mountedUnder(workDir)) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
      cleanup(dir);
    }
  });

  const venvJob = ['--', '.venv/bin/python', '-c', 'import sys, hello; print("venv:", sys.prefix, hello.WORD)'];

  it('runs the virtualenv in the workspace in a container (its python3 links to /usr/bin/python3)', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'A100', ...venvJob], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /venv: \/workspace\/\.venv from the venv/);
    assert.deepEqual(mountedUnder(workDir), []);
  });

  it('runs the virtualenv in the workspace on a process host', async function () {
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'H100', ...venvJob], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /venv: .*\/\.venv from the venv/);
  });

  it('shows links that lead out as links, and never the developer\'s files behind them', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'A100', '--', 'sh', '-c', 'readlink out; readlink up; cat out/key up/key 2>&1; echo done'], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(r.stdout.includes(`${join(dir, 'secret')}\n../secret\n`), r.stdout);
    assert.doesNotMatch(r.stdout, /SECRET-ON-THE-DEV-MACHINE/);
    assert.match(r.stdout, /done/);
  });
});
