/**
 * The snapshot mount (hosts/snapshot.ts) on each transport and runtime, through the CLI against real broker
 * processes: real sshd hosts on 127.0.33.x, the real Docker engine with the Python image of test/setup/30-ssh-docker.sh,
 * real sshfs and overlayfs. The relay runs on a process host (the broker reads the files); the direct transport runs
 * on a Docker and a process host under a broker that cannot read the workspace at all (its mount namespace hides the
 * developer's folder): the host's cache is filled and the edits are watched from the developer's machine (played by
 * its own sshd), through `gpurun sftp-serve --snapshot …` there. A client-served workspace (`--serve-workspace`) goes
 * through that same broker: the CLI serves the files, the cache's fill and the watch included, over its connection.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, CLI, createToken, gpurun, gpurunSpawn, NODE, requirePart, restartBroker, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';
import { makeSshHosts, mountedUnder, sshHostsMissing, unshareMissing, type TestHostSet } from '../support/sshHosts.ts';
import { A100, H100, L4, T4, makeTree, TREE_PY } from '../support/workspaceTree.ts';

/** Where each case runs: the host's name and GPU, and which broker (`reads`: the broker reads the workspace). */
const CASES = [
  { what: 'relay, process host', host: 'relay-proc', gpu: 'H100', reads: true },
  { what: 'direct, Docker host', host: 'direct-docker', gpu: 'A100', reads: false },
  { what: 'direct, process host', host: 'direct-proc', gpu: 'L4', reads: false },
  // `gpurun run --serve-workspace`: the CLI serves the files over its connection to the broker, which cannot read them.
  { what: 'client-served, Docker host', host: 'direct-docker', gpu: 'A100', reads: false, serve: true },
  { what: 'client-served, process host', host: 'direct-proc', gpu: 'L4', reads: false, serve: true },
] as const;

describe('the snapshot mount on each transport and runtime (sshd + Docker + sshfs + overlayfs)', function () {
  this.timeout(120_000);
  let [dir, laptop, ws, workDir] = ['', '', '', ''];
  let set: TestHostSet;
  let reading: BrokerProc;
  let hidden: BrokerProc;
  const envs: Record<'reads' | 'hidden', NodeJS.ProcessEnv> = { reads: {}, hidden: {} };

  before(async function () {
    const missing = sshHostsMissing() ?? unshareMissing();
    requirePart(this, 'sshd, sshfs, Docker and unshare', missing === null, missing ?? '');
    const img = spawnSync('docker', ['image', 'inspect', 'local/python:3']);
    requirePart(this, 'the image local/python:3', img.status === 0, 'run test/setup/30-ssh-docker.sh');
    dir = scratch('gpurun-snapshot-');
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'dev', address: '127.0.33.1', gpus: [T4] },
      { name: 'relay-proc', address: '127.0.33.2', gpus: [H100] },
      { name: 'direct-docker', address: '127.0.33.3', gpus: [A100] },
      { name: 'direct-proc', address: '127.0.33.4', gpus: [L4] },
      { name: 'direct-ro', address: '127.0.33.5', gpus: [T4] },
    ]);
    // The developer's machine as the GPU hosts reach it (direct transport): its key must be known to them.
    const hostKnown = join(dir, 'hosts', 'known_hosts_on_gpu_hosts');
    writeFileSync(hostKnown, `${set.hosts[0].knownHostsLine}\n`);
    laptop = join(dir, 'laptop');
    ws = join(laptop, 'workspace');
    makeTree(ws);
    mkdirSync(join(laptop, 'secret'));
    writeFileSync(join(laptop, 'secret', 'key'), 'SECRET-ON-THE-DEV-MACHINE');
    symlinkSync(join(laptop, 'secret'), join(ws, 'out'));
    symlinkSync('../secret', join(ws, 'up'));
    workDir = join(dir, 'hostwork');
    const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir };
    const direct = { transport: 'direct', target: 'root@127.0.33.1:2222', identityFile: set.clientKey, knownHosts: hostKnown, sftpServer: `${NODE} ${CLI} sftp-serve`, snapshot: true };
    const defaults = { image: 'local/python:3', gpus: 1, memory: '512M' };
    reading = await startBrokerProcess(join(dir, 'home-r'), {
      hosts: [{ ...common, name: 'relay-proc', address: '127.0.33.2', runtime: 'process', mount: { transport: 'relay', snapshot: true } }],
      defaults,
    });
    hidden = await startBrokerProcess(
      join(dir, 'home-h'),
      {
        hosts: [
          { ...common, name: 'direct-docker', address: '127.0.33.3', mount: direct },
          { ...common, name: 'direct-proc', address: '127.0.33.4', runtime: 'process', mount: direct },
          { ...common, name: 'direct-ro', address: '127.0.33.5', mount: { ...direct, readOnly: true } },
        ],
        defaults,
      },
      {},
      { wrap: emptyInstead(laptop, ws) },
    );
    envs.reads = { ...testEnv(join(dir, 'home-r')), GPURUN_BROKER: reading.url, GPURUN_TOKEN: await createToken(reading, 'snap-tester') };
    envs.hidden = { ...testEnv(join(dir, 'home-h')), GPURUN_BROKER: hidden.url, GPURUN_TOKEN: await createToken(hidden, 'snap-tester') };
  });

  after(async function () {
    await stopBroker(reading);
    await stopBroker(hidden);
    await set?.stopAll();
    if (dir) {
      for (const c of execFileSync('docker', ['ps', '-aq', '--filter', 'label=gpurun.owner=snap-tester'], { encoding: 'utf8' }).split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
      for (const m of mountedUnder(workDir).reverse()) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
      cleanup(dir);
    }
  });

  for (const c of CASES) {
    describe(c.what, () => {
      const env = () => (c.reads ? envs.reads : envs.hidden);
      const served = 'serve' in c ? ['--serve-workspace'] : [];
      /** Names the files of this case apart from another case on the same host. */
      const tag = `${c.host}${'serve' in c ? '-served' : ''}`;
      const run = (cmd: string[]) => gpurun(['run', ...served, '--workspace', ws, '--gpu-type', c.gpu, '--', ...cmd], env());
      /** A job that prints "ready", then waits (up to 30 s) until `check` (a shell condition) holds, and prints "seen". */
      function waitingJob(check: string): { proc: ChildProcess; out: () => string; ready: Promise<void>; done: Promise<number | null> } {
        const proc = gpurunSpawn(['run', ...served, '--workspace', ws, '--gpu-type', c.gpu, '--', 'sh', '-c', `echo ready; i=0; until ${check}; do i=$((i+1)); [ $i -gt 300 ] && exit 3; sleep 0.1; done; echo seen`], env());
        let out = '';
        proc.stdout!.on('data', (d) => (out += d));
        proc.stderr!.on('data', (d) => (out += d));
        const done = new Promise<number | null>((resolve) => proc.on('close', resolve));
        return { proc, out: () => out, ready: waitFor('the job to start', () => out.includes('ready'), 60_000).then(() => {}), done };
      }

      it('reads what is on disk (links, empty files, a 50 MB file, names with spaces and unicode), from a snapshot', async () => {
        const local = spawnSync('python3', ['-c', TREE_PY], { cwd: join(ws, 'tree'), encoding: 'utf8' });
        const r = await run(['sh', '-c', 'cd tree && python3 -c "$1"', 'sh', TREE_PY]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.equal(r.stdout, local.stdout);
        assert.match(r.stdout, /F \.\/big\.bin [0-9a-f]{64}/);
        // This job's own mount was a snapshot (the broker's log names the job): for a client-served one, filled by the CLI.
        const id = /job (\w+) submitted/.exec(r.stderr)?.[1];
        assert.ok(id, r.stderr);
        const broker = c.reads ? reading : hidden;
        const line = broker.log().split('\n').find((l) => l.includes(id) && l.includes('workspace snapshot'));
        assert.ok(line, `no snapshot for job ${id} in the broker's log`);
        assert.match(line, /sent \d+ small files/);
        const hosts = await gpurun(['hosts'], env());
        assert.match(hosts.stdout, new RegExp(`^${c.host}: workspace: snapshot \\(every name on the host; large files read through sshfs\\)$`, 'm'), hosts.stdout);
        await waitFor('nothing mounted', () => mountedUnder(workDir).length === 0, 30_000);
      });

      it('sees an edit made on the developer\'s disk while the job runs', async () => {
        const name = `live-${tag}.txt`;
        writeFileSync(join(ws, name), 'before\n');
        const j = waitingJob(`grep -q after ${name}`);
        await j.ready;
        writeFileSync(join(ws, name), 'after\n');
        assert.equal(await j.done, 0, j.out());
        assert.match(j.out(), /seen/);
      });

      it('has a file the job wrote on the developer\'s disk while the job still runs', async () => {
        const name = `progress-${tag}.txt`;
        const stop = `stop-${tag}`;
        const j = waitingJob(`echo progress > ${name} && [ -e ${stop} ]`);
        await j.ready;
        await waitFor(`${name} on the developer's disk`, () => existsSync(join(ws, name)) && readFileSync(join(ws, name), 'utf8') === 'progress\n', 60_000);
        writeFileSync(join(ws, stop), '');
        assert.equal(await j.done, 0, j.out());
        rmSync(join(ws, stop));
      });

      it('a file the job keeps appending to ends on the developer\'s disk with every line, none taken for an edit there', async () => {
        // Each write-back lands on the developer's disk and is noticed there; a copy that carried a later version
        // than the listing it came from once looked like an edit, and the job's file was replaced by it.
        const name = `append-${tag}.txt`;
        const r = await run(['python3', '-c', `import time\nf = open(${JSON.stringify(name)}, 'a')\nfor i in range(1, 301):\n    f.write(f'{i}\\n'); f.flush(); time.sleep(0.01)\nprint('wrote 300')`]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /wrote 300/);
        assert.deepEqual(readFileSync(join(ws, name), 'utf8').trim().split('\n').map(Number), Array.from({ length: 300 }, (_, i) => i + 1));
      });

      if (!c.host.endsWith('-proc')) {
        it('an edit under a folder the job replaced with a link to a host folder writes nothing on the host', async () => {
          // The job (root in its container) makes `esc` a link to a folder of the GPU host; the link cannot replace
          // the folder on the developer's disk, where an edit of esc/f.txt follows. Pushed into the job's view by
          // a tar on the host, that edit would land in the host's folder, as root.
          const esc = `esc-${tag}`;
          const victim = join(dir, `host-victim-${esc}`);
          mkdirSync(victim);
          mkdirSync(join(ws, esc));
          writeFileSync(join(ws, esc, 'f.txt'), 'v0\n');
          const j = waitingJob(`{ [ -L ${esc} ] || { rm -rf ${esc} && ln -s ${victim} ${esc} && echo swapped; }; } && [ -e stop-${esc} ]`);
          await j.ready;
          await waitFor('the job to swap the folder', () => j.out().includes('swapped'), 30_000);
          await new Promise((r) => setTimeout(r, 1000));
          writeFileSync(join(ws, esc, 'f.txt'), 'pushed into the host\n');
          await new Promise((r) => setTimeout(r, 3000));
          writeFileSync(join(ws, `stop-${esc}`), '');
          assert.equal(await j.done, 0, j.out());
          assert.deepEqual(readdirSync(victim), [], 'nothing was written in the host\'s folder');
        });
      }

      if (!c.reads && !('serve' in c)) {
        it('a broker killed (kill -9) and started again takes the mount over: the job goes on, its writes and an edit made meanwhile both arrive', async () => {
          const go = `go-${tag}`;
          const during = `during-${tag}.txt`;
          const edit = `edit-${tag}.txt`;
          writeFileSync(join(ws, edit), 'v0\n');
          const script = `echo ready; until [ -e ${go} ]; do sleep 0.1; done; echo written-while-no-broker > ${during}; i=0; until grep -q edited ${edit}; do i=$((i+1)); [ $i -gt 600 ] && exit 3; sleep 0.1; done; echo seen`;
          const sub = await gpurun(['run', '--detach', '--workspace', ws, '--gpu-type', c.gpu, '--', 'sh', '-c', script], env());
          const id = /job (\w+) submitted/.exec(sub.stdout + sub.stderr)?.[1] ?? sub.stdout.trim();
          assert.match(id, /^\w+$/, sub.stdout + sub.stderr);
          await waitFor('the job to start', async () => (await gpurun(['logs', id], env())).stdout.includes('ready'), 60_000);
          await hidden.kill9();
          writeFileSync(join(ws, go), '');
          await new Promise((r) => setTimeout(r, 1500));
          writeFileSync(join(ws, edit), 'edited\n');
          hidden = await restartBroker(hidden, {}, { wrap: emptyInstead(laptop, ws) });
          const job = await waitFor('the job to end', async () => {
            const j = JSON.parse((await gpurun(['ls', '--json', '--all'], env())).stdout).find((x: { id: string }) => x.id === id);
            return j && !['queued', 'running'].includes(j.state) && j;
          }, 90_000);
          const logs = (await gpurun(['logs', id], env())).stdout;
          assert.equal(job.state, 'succeeded', `${job.state} ${job.reason}\n${logs}`);
          assert.match(logs, /seen/, 'the edit made while no broker ran reached the job');
          assert.equal(readFileSync(join(ws, during), 'utf8'), 'written-while-no-broker\n', 'the write made while no broker ran is on the disk');
          assert.match(hidden.log(), new RegExp(`took over the snapshot mount.*${id}|${id}.*took over the snapshot mount`));
          rmSync(join(ws, go));
        });
      }

      it('shows links that lead out as links, never the developer\'s files behind them', async () => {
        // A process host resolves an absolute link in its own file system, which on these test hosts is the
        // developer's machine too: only the relative link is followed there.
        const follow = c.host.endsWith('-proc') ? 'up/key' : 'out/key up/key';
        const r = await run(['sh', '-c', `readlink out; readlink up; cat ${follow} 2>&1; echo done`]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.ok(r.stdout.includes(`${join(laptop, 'secret')}\n../secret\n`), r.stdout);
        assert.doesNotMatch(r.stdout, /SECRET-ON-THE-DEV-MACHINE/);
        assert.match(r.stdout, /done/);
      });
    });
  }

  it('direct, read-only host: reads the workspace, refuses the job\'s writes', async () => {
    const r = await gpurun(['run', '--workspace', ws, '--gpu-type', 'T4', '--', 'sh', '-c', 'cat tree/empty "tree/sub dir/a file.txt"; echo x > ro-write.txt || echo refused'], envs.hidden);
    assert.match(r.stdout, /with spaces/);
    assert.match(r.stdout, /refused/);
    assert.equal(existsSync(join(ws, 'ro-write.txt')), false);
  });

  it('the developer\'s side streams nothing outside the workspace: a path out, or through a link, is refused', async () => {
    for (const bad of ['../secret/key', 'out/key', '/etc/passwd']) {
      const r = spawnSync(NODE, [CLI, 'sftp-serve', '--root', ws, '--snapshot', 'tar'], { input: `tree/empty\0${bad}\0`, encoding: 'latin1' });
      assert.notEqual(r.status, 0, bad);
      assert.match(r.stderr, /refused/, bad);
      assert.doesNotMatch(r.stdout, /SECRET-ON-THE-DEV-MACHINE|root:/, bad);
    }
    const ok = spawnSync(NODE, [CLI, 'sftp-serve', '--root', ws, '--snapshot', 'tar'], { input: 'tree/sub dir/a file.txt\0out\0' });
    assert.equal(ok.status, 0, ok.stderr.toString());
    const listed = spawnSync('tar', ['-t', '-v', '-f', '-'], { input: ok.stdout, encoding: 'utf8' });
    assert.match(listed.stdout, /tree\/sub dir\/a file\.txt/);
    assert.match(listed.stdout, /out -> /, 'a link is sent as a link');
  });
});

/**
 * The `wrap` argv (startBrokerProcess) that runs the broker in its own mount namespace with an empty tmpfs over
 * `folder` and an empty `workspace` folder in it: the broker finds the workspace's path (a direct mount's workspace
 * must exist where the broker checks it) but none of its files, as a broker on another machine would.
 */
function emptyInstead(folder: string, workspace: string): string[] {
  return ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount -t tmpfs gpurun-hidden "$1" && mkdir -p "$2" && shift 2 && exec "$@"', 'gpurun-hide', folder, workspace];
}

