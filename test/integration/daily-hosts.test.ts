/**
 * The daily loop on a team broker's hosts, through the real CLI against a real broker process: a Docker host over
 * SSH (real sshd on 127.0.14.1, the real Docker engine, sshfs relay), a host without Docker (127.0.14.2: jobs are
 * plain processes there) and the local host, each with an nvidia-smi
 * stand-in whose GPUs read 0 %. Two users, dana and dario. A workspace virtualenv whose python links to a Python the
 * image lacks; each user's persistent cache (kept between jobs, never seen by the other user, its size, clearing it);
 * idle GPUs in `gpurun ls`/`show`; the GPU usage history across a broker restart.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, cliJobs, createToken, fakeNvidiaSmi, gpurun, requirePart, restartBroker, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';
import { makeSshHosts, mountedUnder, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';
import type { UserCacheInfo } from '../../server/protocol/cache.ts';
import { cacheVolume } from '../../server/core/userCache.ts';
import type { HostInfo } from '../../server/protocol/jobs.ts';

const A100 = { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 };
const H100 = { name: 'NVIDIA H100 80GB HBM3', memoryMiB: 81559 };
const VOLUMES = [cacheVolume('dana'), cacheVolume('dario')];

function removeLeftovers(...workDirs: string[]): void {
  for (const owner of ['dana', 'dario']) {
    const ids = execFileSync('docker', ['ps', '-aq', '--filter', `label=gpurun.owner=${owner}`], { encoding: 'utf8' }).split('\n').filter(Boolean);
    if (ids.length) spawnSync('docker', ['rm', '-f', ...ids]);
  }
  spawnSync('docker', ['volume', 'rm', '-f', ...VOLUMES]);
  for (const m of workDirs.flatMap((w) => mountedUnder(w))) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
}

describe('daily loop on hosts: venv interpreter, per-user caches, idle GPUs, usage across a restart', function () {
  this.timeout(180_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let dana: NodeJS.ProcessEnv;
  let dario: NodeJS.ProcessEnv;
  let ws: string;
  let workDir: string;
  let localPath: string;

  before(async function () {
    const missing = sshHostsMissing() ?? sshHostsMissing({ docker: false });
    requirePart(this, 'sshd, sshfs, Docker, setsid and GNU tail', missing === null, missing ?? '');
    dir = scratch('gpurun-daily-hosts-');
    workDir = join(dir, 'hostwork');
    removeLeftovers(workDir, join(dir, 'plainwork'));
    set = await makeSshHosts(join(dir, 'hosts'), [{ name: 'box', address: '127.0.14.1', gpus: [A100, A100] }, { name: 'plain', address: '127.0.14.2', gpus: [H100] }]);
    // The local host's GPU: an L4 (so --gpu-type picks the host), reading 0 % like the others.
    localPath = `${fakeNvidiaSmi(join(dir, 'local'), [{ name: 'NVIDIA L4', memoryMiB: 23034 }])}:${process.env.PATH}`;
    ws = join(dir, 'workspace');
    // A virtualenv made on the developer's machine: its python links to that machine's Python.
    mkdirSync(join(ws, '.venv', 'bin'), { recursive: true });
    symlinkSync('/opt/nowhere/bin/python3.12', join(ws, '.venv', 'bin', 'python3.12'));
    symlinkSync('python3.12', join(ws, '.venv', 'bin', 'python'));
    writeFileSync(join(ws, '.venv', 'pyvenv.cfg'), 'home = /opt/nowhere/bin\ninclude-system-site-packages = false\nversion = 3.12.1\n');
    const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir, runtime: 'docker' };
    broker = await startBrokerProcess(join(dir, 'home'), {
      hosts: [
        { name: 'local', type: 'local', cpus: 4, memory: '8G' },
        { ...common, name: 'box', address: '127.0.14.1', mount: { transport: 'relay' } },
        // A host without Docker: jobs run there as plain processes of its SSH user.
        { ...common, name: 'plain', address: '127.0.14.2', runtime: 'process', workDir: join(dir, 'plainwork'), mount: { transport: 'relay' } },
      ],
      defaults: { image: 'local/busybox:1', gpus: 1, memory: '256M' },
    }, { PATH: localPath });
    dana = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'dana') };
    dario = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'dario') };
    await waitFor('the hosts up', async () => /box\s+up[\s\S]*plain\s+up/.test((await gpurun(['hosts'], dana)).stdout), 60_000);
  });

  after(async function () {
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      removeLeftovers(workDir, join(dir, 'plainwork'));
      cleanup(dir);
    }
  });

  const run = (env: NodeJS.ProcessEnv, type: 'A100' | 'L4' | 'H100', cmd: string[]) => gpurun(['run', '--workspace', ws, '--gpu-type', type, '--', ...cmd], env);

  it('a venv whose python links to a Python the image lacks: the interpreter, its link, the venv\'s Python and what to do', async () => {
    const r = await run(dana, 'A100', ['.venv/bin/python', '-c', 'print(1)']);
    assert.equal(r.code, 125, r.stderr);
    assert.match(r.stderr, /could not start: the job's interpreter \.venv\/bin\/python is a link to \/opt\/nowhere\/bin\/python3\.12, which the image local\/busybox:1 does not have\. A virtualenv's python is a link to the Python of the machine that made it \(pyvenv\.cfg of \.venv: Python 3\.12\.1 at \/opt\/nowhere\/bin\), not a copy\. Use an image that has Python 3\.12\.1 at \/opt\/nowhere\/bin \(--image\), or make the virtualenv with the image's own Python/);
    assert.doesNotMatch(r.stderr, /exit 127\)/);
    // The same job on the local host (a plain process): this machine lacks the Python.
    const l = await run(dana, 'L4', ['.venv/bin/python', '-c', 'print(1)']);
    assert.equal(l.code, 125, l.stderr);
    assert.match(l.stderr, /the job's interpreter \.venv\/bin\/python is a link to \/opt\/nowhere\/bin\/python3\.12, which this machine does not have\. .* Install Python 3\.12\.1 at \/opt\/nowhere\/bin on this machine/);
    // On a host without Docker (a plain process there): the host lacks it.
    const p = await run(dana, 'H100', ['.venv/bin/python', '-c', 'print(1)']);
    assert.equal(p.code, 125, p.stderr);
    assert.match(p.stderr, /the job's interpreter \.venv\/bin\/python is a link to \/opt\/nowhere\/bin\/python3\.12, which host plain does not have\. .* Install Python 3\.12\.1 at \/opt\/nowhere\/bin on host plain, or make the virtualenv with host plain's own Python/);
    // A command that is simply missing keeps the runtime's words.
    const m = await run(dana, 'A100', ['no-such-command']);
    assert.match(m.stderr, /the command was not found or could not be run in the image \(exit 127\)/);
  });

  it("keeps a user's cache between their jobs on a Docker host; another user's job never sees it", async () => {
    const w = await run(dana, 'A100', ['sh', '-c', 'echo "$XDG_CACHE_HOME $HF_HOME $PIP_CACHE_DIR $TORCH_HOME"; mkdir -p "$HF_HOME/hub" && echo weights > "$HF_HOME/hub/model.bin"']);
    assert.equal(w.code, 0, w.stderr);
    assert.equal(w.stdout, '/root/.cache /root/.cache/huggingface /root/.cache/pip /root/.cache/torch\n');
    const again = await run(dana, 'A100', ['cat', '/root/.cache/huggingface/hub/model.bin']);
    assert.equal(again.stdout, 'weights\n', again.stderr);
    const b = await run(dario, 'A100', ['sh', '-c', 'ls -A /root/.cache; find / -name model.bin 2>/dev/null; cat /root/.cache/huggingface/hub/model.bin 2>/dev/null || echo "no file"']);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(b.stdout, 'no file\n');
    // A job's own variable wins over the cache's.
    const own = await gpurun(['run', '--workspace', ws, '--gpu-type', 'A100', '--env', 'HF_HOME=/workspace/hf', '--', 'sh', '-c', 'echo $HF_HOME'], dana);
    assert.equal(own.stdout, '/workspace/hf\n');
  });

  it("keeps a user's cache on the local host of a team broker, in a folder of their own", async () => {
    const w = await run(dana, 'L4', ['sh', '-c', 'echo data > "$XDG_CACHE_HOME/f"; echo "$HF_HOME"']);
    assert.equal(w.code, 0, w.stderr);
    assert.match(w.stdout, /\/cache\/dana-[0-9a-f]{12}\/huggingface\n$/);
    assert.equal((await run(dana, 'L4', ['sh', '-c', 'cat "$XDG_CACHE_HOME/f"'])).stdout, 'data\n');
    const b = await run(dario, 'L4', ['sh', '-c', 'cat "$XDG_CACHE_HOME/f" 2>/dev/null || echo "no file"; echo "$XDG_CACHE_HOME"']);
    assert.match(b.stdout, /^no file\n.*\/cache\/dario-[0-9a-f]{12}\n$/);
  });

  it('shows each user their own cache with its size, and clears it (refused while a job of theirs runs there)', async () => {
    const mine = JSON.parse((await gpurun(['cache', '--json'], dana)).stdout) as UserCacheInfo[];
    const box = mine.find((c) => c.host === 'box')!;
    assert.equal(box.kind, 'volume');
    assert.equal(box.name, cacheVolume('dana'));
    assert.ok(box.bytes! > 0, JSON.stringify(mine));
    assert.equal(mine.find((c) => c.host === 'local')!.bytes, 5);
    const darios = JSON.parse((await gpurun(['cache', '--json'], dario)).stdout) as UserCacheInfo[];
    assert.equal(darios.find((c) => c.host === 'box')!.name, cacheVolume('dario'));
    assert.equal(darios.find((c) => c.host === 'box')!.bytes, 0);
    const table = await gpurun(['cache'], dana);
    assert.match(table.stdout, /^HOST\s+SIZE\s+CACHE\n/);
    assert.match(table.stdout, /\nbox\s+\d+(\.\d)? (B|KiB)\s+volume gpurun-cache-dana-[0-9a-f]{12}, in jobs at \/root\/\.cache\n/);

    const { detach } = cliJobs(() => ({ env: dana, ws }));
    const id = await detach(['--gpu-type', 'A100', '--', 'sleep', '60']);
    await waitFor('the job to run', async () => (await gpurun(['ls'], dana)).stdout.includes(`${id}`) && /running/.test((await gpurun(['ls'], dana)).stdout));
    const busy = await gpurun(['cache', 'clear', '--host', 'box'], dana);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, new RegExp(`your cache on box is in use by your running job ${id}\\ngpurun: Clear it when the job has ended`));
    await gpurun(['cancel', id], dana);
    const c = await gpurun(['cache', 'clear', '--host', 'box'], dana);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /^cleared your cache on box \(\d+(\.\d)? (B|KiB)\)\n$/);
    const gone = await run(dana, 'A100', ['sh', '-c', 'cat /root/.cache/huggingface/hub/model.bin 2>/dev/null || echo "no file"']);
    assert.equal(gone.stdout, 'no file\n');
    // Dario's clearing never touches dana's.
    assert.equal((await run(dana, 'L4', ['sh', '-c', 'cat "$XDG_CACHE_HOME/f"'])).stdout, 'data\n');
    assert.equal((await gpurun(['cache', 'clear'], dario)).code, 0);
    assert.equal((await run(dana, 'L4', ['sh', '-c', 'cat "$XDG_CACHE_HOME/f"'])).stdout, 'data\n');
    const bad = await gpurun(['cache', 'clear', '--host', 'nosuch'], dana);
    assert.match(bad.stderr, /no host nosuch\ngpurun: Hosts: local, box, plain\./);
    // A host without Docker keeps none (its jobs run as its SSH user), and says so.
    assert.match(table.stdout, /\nplain\s+-\s+none: jobs on hosts without Docker run as the host's SSH user, with its ~\/\.cache\n/);
  });

  it("says when a running job's GPUs sit idle (the stand-in reads 0 %), after the window the user sets; keeps the usage history across a broker restart", async () => {
    const { detach } = cliJobs(() => ({ env: dana, ws }));
    const id = await detach(['--gpu-type', 'A100', '--', 'sleep', '120']);
    const quick = { ...dana, GPURUN_IDLE_AFTER: '2s' };
    const ls = await waitFor('ls to say idle', async () => {
      const r = await gpurun(['ls'], quick);
      return new RegExp(`${id}.*running.*0:0% 0M/80G idle \\d+s`).test(r.stdout) && r;
    }, 30_000, 500);
    assert.ok(ls);
    const show = await gpurun(['show', id], quick);
    assert.match(show.stdout, /its GPUs have sat idle \(0 %\) for \d+s: a data-loading bottleneck, or a hung job\?/);
    // The default window (10 minutes) has not passed; "off" never says it.
    assert.doesNotMatch((await gpurun(['ls'], dana)).stdout, /idle/);
    assert.doesNotMatch((await gpurun(['show', id], { ...dana, GPURUN_IDLE_AFTER: 'off' })).stdout, /sat idle/);
    const badWindow = await gpurun(['ls'], { ...dana, GPURUN_IDLE_AFTER: 'soon' });
    assert.equal(badWindow.code, 2);
    assert.match(badWindow.stderr, /GPURUN_IDLE_AFTER=soon: idle window: /);

    const gpuOf = async (): Promise<HostInfo['gpus'][number]> => {
      const hosts = JSON.parse((await gpurun(['hosts', '--json'], dana)).stdout) as HostInfo[];
      return hosts.find((h) => h.name === 'box')!.gpus.find((g) => g.jobId === id)!;
    };
    const before = await gpuOf();
    assert.ok(before.idleSince, JSON.stringify(before));
    await stopBroker(broker);
    broker = await restartBroker(broker, { PATH: localPath });
    const after = await waitFor('the job again on its GPU', async () => (await gpuOf().catch(() => undefined)) ?? false, 30_000, 200);
    // Restored, not started over: the same idle start, and at least the samples there were.
    assert.equal(after.idleSince, before.idleSince);
    assert.ok((after.history ?? []).length >= (before.history ?? []).length, `${JSON.stringify(before.history)} → ${JSON.stringify(after.history)}`);
    assert.match((await gpurun(['ls'], quick)).stdout, new RegExp(`${id}.*idle`));
    await gpurun(['cancel', id], dana);
  });
});
