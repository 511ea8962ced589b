/**
 * Each user's persistent cache on a real Slurm cluster, through the CLI: a folder per user on the cluster's shared
 * storage, XDG_CACHE_HOME/HF_HOME/PIP_CACHE_DIR/TORCH_HOME pointing into it, kept from one job to the next (also of
 * another workspace), never the other user's; `gpurun cache` shows it with its size, `gpurun cache clear` empties it
 * (refused while a job of the user is in the cluster).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createToken, gpurun, gpurunSpawn, waitFor } from '../support/harness.ts';
import { setUpSlurmSuite, tearDownSlurmSuite, type SlurmBroker } from '../support/slurm.ts';
import type { UserCacheInfo } from '../../server/protocol/cache.ts';

const VARS = 'import os; print(" ".join(os.environ.get(k, "-") for k in ("XDG_CACHE_HOME", "HF_HOME", "PIP_CACHE_DIR", "TORCH_HOME")))';
const WRITE = 'import os; d = os.path.join(os.environ["HF_HOME"], "hub"); os.makedirs(d, exist_ok=True); open(os.path.join(d, "model.bin"), "wb").write(b"w" * 1048576); print("wrote")';
const READ = 'import os; p = os.path.join(os.environ["HF_HOME"], "hub", "model.bin"); print(os.path.getsize(p) if os.path.exists(p) else "no file")';

describe('slurm: per-user persistent cache', function () {
  this.timeout(120_000);
  let home: string;
  let ws: string;
  let other: string;
  let s: SlurmBroker;
  let alice: NodeJS.ProcessEnv;
  let bob: NodeJS.ProcessEnv;

  before(async function () {
    ({ home, ws, s } = await setUpSlurmSuite(this, 'gpurun-slurm-cache-'));
    other = join(home, 'other-project');
    mkdirSync(other);
    alice = s.env;
    bob = { ...s.env, GPURUN_TOKEN: await createToken(s.broker, 'bob') };
  });
  after(() => tearDownSlurmSuite(home, s));

  const py = (env: NodeJS.ProcessEnv, code: string, workspace = ws, extra: string[] = []) => gpurun(['run', '--workspace', workspace, '--gpus', '0', '--memory', '100M', ...extra, '--', 'python3', '-c', code], env);
  const caches = async (env: NodeJS.ProcessEnv) => JSON.parse((await gpurun(['cache', '--json'], env)).stdout) as UserCacheInfo[];
  const storage = () => join(home, 'cluster-storage');

  it('points the cache variables into a folder of the user on the shared storage, kept between jobs of any workspace', async () => {
    const v = await py(alice, VARS);
    assert.equal(v.code, 0, v.stderr);
    const dir = join(storage(), 'alice', '.gpurun-cache');
    assert.equal(v.stdout, `${dir} ${dir}/huggingface ${dir}/pip ${dir}/torch\n`);
    const w = await py(alice, WRITE);
    assert.equal(w.code, 0, w.stderr);
    assert.ok(existsSync(join(dir, 'huggingface', 'hub', 'model.bin')), 'the file is on the shared storage');
    // The next job, of another workspace, finds it.
    const r = await py(alice, READ, other);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '1048576\n');
    // A variable the job sets itself wins.
    const own = await py(alice, VARS, ws, ['--env', 'HF_HOME=/tmp/my-hf']);
    assert.equal(own.stdout, `${dir} /tmp/my-hf ${dir}/pip ${dir}/torch\n`);
  });

  it("never gives one user's job another user's cache", async () => {
    const r = await py(bob, `${READ}; print(os.environ["XDG_CACHE_HOME"])`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `no file\n${join(storage(), 'bob', '.gpurun-cache')}\n`);
  });

  it('shows each user their cache on the cluster with its size, and clears it (refused while a job of theirs is there)', async () => {
    const mine = (await caches(alice)).find((c) => c.host === 'test')!;
    assert.equal(mine.kind, 'folder');
    assert.equal(mine.name, join(storage(), 'alice', '.gpurun-cache'));
    assert.ok(mine.bytes! >= 1048576 && mine.bytes! < 1048576 + 65536, String(mine.bytes));
    const table = await gpurun(['cache'], alice);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`\\ntest\\s+1 MiB\\s+folder ${join(storage(), 'alice', '.gpurun-cache')}, in jobs at ${join(storage(), 'alice', '.gpurun-cache')}\\n`));
    const bobs = (await caches(bob)).find((c) => c.host === 'test')!;
    assert.equal(bobs.name, join(storage(), 'bob', '.gpurun-cache'));
    assert.ok(bobs.bytes! < 65536, String(bobs.bytes));

    // A job of alice in the cluster holds the cache.
    const child = gpurunSpawn(['run', '--workspace', ws, '--gpus', '0', '--memory', '100M', '--', 'python3', '-c', 'import time; print("holding", flush=True); time.sleep(300)'], alice);
    // Listened for from the start: the run may end while `gpurun cancel` is still answering.
    const closed = new Promise((r) => child.on('close', r));
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    await waitFor('the job to run', () => out.includes('holding'), 60_000);
    const id = /job (\w+) submitted/.exec(err)![1];
    const busy = await gpurun(['cache', 'clear', '--host', 'test'], alice);
    assert.equal(busy.code, 1, busy.stdout);
    assert.match(busy.stderr, new RegExp(`your cache on test is in use by your running job ${id}\\ngpurun: Clear it when the job has ended`));
    assert.ok(existsSync(join(storage(), 'alice', '.gpurun-cache', 'huggingface', 'hub', 'model.bin')), 'nothing was removed');
    // Bob's clear is his own: alice's job does not hold it, and alice's files stay.
    assert.equal((await gpurun(['cache', 'clear', '--host', 'test'], bob)).code, 0);
    assert.ok(existsSync(join(storage(), 'alice', '.gpurun-cache', 'huggingface', 'hub', 'model.bin')), "bob's clear left alice's cache");
    assert.equal((await gpurun(['cancel', id], alice)).code, 0);
    await closed;

    const c = await gpurun(['cache', 'clear', '--host', 'test'], alice);
    assert.equal(c.code, 0, c.stderr);
    assert.equal(c.stdout, 'cleared your cache on test (1 MiB)\n');
    assert.ok(!existsSync(join(storage(), 'alice', '.gpurun-cache', 'huggingface')), 'the files are gone');
    assert.equal((await caches(alice)).find((x) => x.host === 'test')!.bytes, 0);
    // And the next job starts with an empty cache that works.
    const r = await py(alice, READ);
    assert.equal(r.stdout, 'no file\n');
  });
});
