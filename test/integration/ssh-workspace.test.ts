/**
 * The mounted workspace as a job sees it, through the CLI against a real broker process: real sshd hosts on loopback
 * (127.0.7.x, 127.0.20.1), the real Docker engine with the Python image from test/setup/30-ssh-docker.sh, and real sshfs (relay
 * on a Docker host and on a process host). Symlinks reach the job as they are on the developer's disk: a
 * virtualenv's `bin/python3 -> /usr/bin/python3` runs; a link that leads out of the workspace still does not expose
 * the developer's files (the host resolves it in its own file system; the SFTP side refuses to follow it).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, createToken, gpurun, gpurunSpawn, scratch, waitFor, startBrokerProcess, stopBroker, testEnv, requirePart, type BrokerProc } from '../support/harness.ts';
import { bytesSentTo, makeSshHosts, mountedUnder, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';
import { A100, H100, L4, T4, V100, makeTree, TREE_PY } from '../support/workspaceTree.ts';

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
      { name: 'snap', address: '127.0.7.3', gpus: [L4] },
      { name: 'snap-ro', address: '127.0.7.4', gpus: [T4] },
      { name: 'snap-opaque', address: '127.0.20.1', gpus: [V100] },
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
    const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir, mount: { transport: 'relay', snapshot: false } };
    broker = await startBrokerProcess(join(dir, 'home'), {
      hosts: [
        { ...common, name: 'docker', address: '127.0.7.1' },
        { ...common, name: 'proc', address: '127.0.7.2', runtime: 'process' },
        { ...common, name: 'snap', address: '127.0.7.3', mount: { transport: 'relay', snapshot: true } },
        { ...common, name: 'snap-ro', address: '127.0.7.4', mount: { transport: 'relay', snapshot: true, readOnly: true } },
        { ...common, name: 'snap-opaque', address: '127.0.20.1', mount: { transport: 'relay', snapshot: 'opaque' } },
      ],
      defaults: { image: 'local/python:3', gpus: 1, memory: '512M' },
    });
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'ws-tester') };
  });

  after(async function () {
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      for (const c of execFileSync('docker', ['ps', '-aq', '--filter', 'label=gpurun.owner=ws-tester'], { encoding: 'utf8' }).split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
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

  describe('snapshot mount (small files from a cache on the host, large ones through sshfs)', () => {
    const snap = (cmd: string[], extra: string[] = []) => gpurun(['run', '--workspace', ws, '--gpu-type', 'L4', ...extra, '--', ...cmd], env);
    /** A job that prints "ready", then waits (up to 30 s) until `check` (a shell condition) holds, and prints "seen". */
    function waitingJob(check: string): { proc: ChildProcess; out: () => string; ready: Promise<void>; done: Promise<number | null> } {
      const proc = gpurunSpawn(['run', '--workspace', ws, '--gpu-type', 'L4', '--', 'sh', '-c', `echo ready; i=0; until ${check}; do i=$((i+1)); [ $i -gt 300 ] && exit 3; sleep 0.1; done; echo seen`], env);
      let out = '';
      proc.stdout!.on('data', (d) => (out += d));
      proc.stderr!.on('data', (d) => (out += d));
      const done = new Promise<number | null>((resolve) => proc.on('close', resolve));
      return { proc, out: () => out, ready: waitFor('the job to start', () => out.includes('ready'), 60_000).then(() => {}), done };
    }

    it('reads what is on disk: links, empty files, a 50 MB file, names with spaces and unicode', async () => {
      makeTree(ws);
      const local = spawnSync('python3', ['-c', TREE_PY], { cwd: join(ws, 'tree'), encoding: 'utf8' });
      const r = await snap(['sh', '-c', 'cd tree && python3 -c "$1"', 'sh', TREE_PY]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout, local.stdout);
      assert.match(r.stdout, /F \.\/big\.bin [0-9a-f]{64}/);
      assert.deepEqual(mountedUnder(workDir), [], 'nothing stays mounted');
    });

    it('reads the same in the layout for kernels without data-only overlay layers (mount.snapshot "opaque")', async () => {
      makeTree(ws);
      const local = spawnSync('python3', ['-c', TREE_PY], { cwd: join(ws, 'tree'), encoding: 'utf8' });
      const r = await snap(['sh', '-c', 'cd tree && python3 -c "$1"', 'sh', TREE_PY], ['--gpu-type', 'V100']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout, local.stdout);
      assert.deepEqual(mountedUnder(workDir), [], 'nothing stays mounted');
    });

    it('moves only the part of a large file that the job reads (bytes the broker sent)', async () => {
      mkdirSync(join(ws, 'data'), { recursive: true });
      execFileSync('truncate', ['-s', '2G', join(ws, 'data', 'huge.bin')]);
      try {
        for (const [gpu, address] of [['L4', '127.0.7.3'], ['V100', '127.0.20.1']]) {
          const before = bytesSentTo(address);
          const r = await snap(['sh', '-c', 'dd if=data/huge.bin of=/dev/null bs=1M skip=1024 count=10 2>&1 | tail -1; wc -c < data/huge.bin'], ['--gpu-type', gpu]);
          const moved = bytesSentTo(address) - before;
          assert.equal(r.code, 0, r.stdout + r.stderr);
          assert.match(r.stdout, /10485760 bytes/);
          assert.match(r.stdout, /^2147483648$/m, 'the job sees the file\'s size');
          assert.ok(moved >= 10e6 && moved < 20e6, `${gpu}: the broker sent ${moved} bytes to the host for a 10 MB read of a 2 GB file`);
        }
      } finally {
        rmSync(join(ws, 'data'), { recursive: true, force: true });
      }
    });

    it('says in gpurun hosts how each host mounts workspaces, once a snapshot job checked it', async () => {
      const r = await gpurun(['hosts'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^snap: workspace: snapshot \(every name on the host; large files read through sshfs\)$/m, r.stdout);
      assert.match(r.stdout, /^snap-opaque: workspace: snapshot, opaque layout \(mount\.snapshot is "opaque"\)$/m, r.stdout);
      assert.doesNotMatch(r.stdout, /^docker: workspace:/m, 'a host without snapshot says nothing new');
    });


    it('sees an edit made before submit, on the first run and on a later one', async () => {
      writeFileSync(join(ws, 'version.py'), 'V = 1\n');
      const a = await snap(['python3', '-c', 'import version; print("V", version.V)']);
      assert.match(a.stdout, /V 1\n/, a.stderr);
      writeFileSync(join(ws, 'version.py'), 'V = 22\n');
      const b = await snap(['python3', '-c', 'import version; print("V", version.V)']);
      assert.match(b.stdout, /V 22\n/, b.stderr);
    });

    it('sees an edit made on the developer\'s disk while the job runs', async () => {
      writeFileSync(join(ws, 'live.txt'), 'before\n');
      const j = waitingJob('grep -q after live.txt');
      await j.ready;
      writeFileSync(join(ws, 'live.txt'), 'after\n');
      assert.equal(await j.done, 0, j.out());
      assert.match(j.out(), /seen/);
    });

    it('sees files removed and renamed on the developer\'s disk while the job runs', async () => {
      writeFileSync(join(ws, 'doomed.txt'), 'x\n');
      writeFileSync(join(ws, 'rename-me.txt'), 'moving\n');
      const j = waitingJob('[ ! -e doomed.txt ] && [ ! -e rename-me.txt ] && grep -q moving renamed.txt');
      await j.ready;
      rmSync(join(ws, 'doomed.txt'));
      renameSync(join(ws, 'rename-me.txt'), join(ws, 'renamed.txt'));
      assert.equal(await j.done, 0, j.out());
    });

    it('carries what the job writes, removes and renames to the developer\'s disk', async () => {
      writeFileSync(join(ws, 'job-removes.txt'), 'x\n');
      writeFileSync(join(ws, 'job-renames.txt'), 'renamed by the job\n');
      const r = await snap(['sh', '-c', 'mkdir -p results && echo written-by-job > results/out.txt && rm job-removes.txt && mv job-renames.txt job-renamed.txt && echo tmp > scratch.tmp && rm scratch.tmp']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(readFileSync(join(ws, 'results', 'out.txt'), 'utf8'), 'written-by-job\n');
      assert.equal(existsSync(join(ws, 'job-removes.txt')), false);
      assert.equal(existsSync(join(ws, 'job-renames.txt')), false);
      assert.equal(readFileSync(join(ws, 'job-renamed.txt'), 'utf8'), 'renamed by the job\n');
      assert.equal(existsSync(join(ws, 'scratch.tmp')), false, 'a file the job made and removed is not left behind');
    });

    it('has a file the job wrote on the developer\'s disk while the job still runs', async () => {
      // The job writes its file, then waits until the test, having seen it locally, answers with a file of its own.
      const j = waitingJob('echo progress > progress.txt && [ -e stop-now ]');
      await j.ready;
      await waitFor('progress.txt on the developer\'s disk', () => existsSync(join(ws, 'progress.txt')) && readFileSync(join(ws, 'progress.txt'), 'utf8') === 'progress\n', 60_000);
      writeFileSync(join(ws, 'stop-now'), '');
      assert.equal(await j.done, 0, j.out());
      assert.match(j.out(), /seen/);
    });

    it('carries the job\'s writes back after the host\'s listing of them was killed', async () => {
      const j = waitingJob('[ -e go-on ] && echo after-restart > relisted.txt && [ -e stop-relisted ]');
      await j.ready;
      const listers = processesWith((argv) => argv[0] === 'sh' && argv[3] === 'gpurun-upper' && !!argv[4]?.startsWith(join(workDir, 'snap')));
      assert.equal(listers.length, 1, 'one listing of the upper layer runs on the host');
      process.kill(Number(listers[0]), 'SIGKILL');
      writeFileSync(join(ws, 'go-on'), '');
      await waitFor('relisted.txt on the developer\'s disk', () => existsSync(join(ws, 'relisted.txt')) && readFileSync(join(ws, 'relisted.txt'), 'utf8') === 'after-restart\n', 60_000);
      writeFileSync(join(ws, 'stop-relisted'), '');
      assert.equal(await j.done, 0, j.out());
    });

    it('does not show the developer\'s files behind a link out', async () => {
      const r = await snap(['sh', '-c', 'cat out/key up/key 2>&1; echo done']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout, /SECRET-ON-THE-DEV-MACHINE/);
    });

    it('refuses writes on a read-only host', async () => {
      const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'T4', '--', 'sh', '-c', 'cat version.py; echo x > ro-write.txt || echo refused'], env);
      assert.match(r.stdout, /V = 22/);
      assert.match(r.stdout, /refused/);
      assert.equal(existsSync(join(ws, 'ro-write.txt')), false);
    });

    it('fails the job workspace_lost when the connection breaks, and leaves nothing mounted', async () => {
      const j = waitingJob('false');
      await j.ready;
      // The host's sshfs of this job's relay, found by its mount point under the snapshot folders; killed by its id.
      const [pid] = processesWith((argv) => argv[0] === 'sshfs' && argv.some((a) => a.startsWith(join(workDir, 'snap')) && a.endsWith('/lazy')));
      assert.ok(pid, 'the relay sshfs runs');
      process.kill(Number(pid), 'SIGKILL');
      await j.done;
      assert.match(j.out(), /workspace_lost/);
      await waitFor('nothing mounted', () => mountedUnder(workDir).length === 0, 30_000);
    });
  });
});

/** Ids of this machine's processes (the test hosts' included) whose argv matches. */
function processesWith(match: (argv: string[]) => boolean): string[] {
  return readdirSync('/proc').filter((e) => /^\d+$/.test(e)).filter((e) => {
    try {
      return match(readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0'));
    } catch {
      return false;
    }
  });
}
