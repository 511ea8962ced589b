/**
 * `.gpurun-ignore` rules, the `clusters` config, and staging / bringing back on real folders (the cluster's storage
 * is a local folder here, as for a broker on the login node).
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { compileIgnore } from '../../server/slurm/ignore.ts';
import { validateConfig } from '../../server/config.ts';
import { LocalClusterFiles } from '../../server/slurm/files.ts';
import { bringBack, stageWorkspace } from '../../server/slurm/staging.ts';
import { scratch } from '../support/harness.ts';

describe('slurm: .gpurun-ignore', () => {
  const r = compileIgnore('# comment\n\ndata/\n*.log\n/build\nckpt/**/*.pt\n!keep.log\nsrc/gen?.py\n');
  const cases: Array<[string, boolean, boolean]> = [
    ['.git', true, true],
    ['sub/.git', true, true],
    ['data', true, true],
    ['data', false, false], // "data/" is for folders only
    ['a/data', true, true],
    ['x.log', false, true],
    ['deep/x.log', false, true],
    ['build', true, true],
    ['sub/build', true, false], // anchored at the root
    ['ckpt/a/b/m.pt', false, true],
    ['ckpt/m.pt', false, true],
    ['src/gen1.py', false, true],
    ['src/gen10.py', false, false],
    ['train.py', false, false],
  ];
  for (const [rel, isDir, want] of cases) it(`${rel}${isDir ? '/' : ''} → ${want ? 'ignored' : 'staged'}`, () => assert.equal(r.ignores(rel, isDir), want));
  it('reports what it does not support', () => assert.deepEqual(r.errors, ['line 7: negation ("!keep.log") is not supported; the pattern is left out']));
});

describe('slurm: clusters config', () => {
  const v = (raw: unknown) => validateConfig(raw, 'b.json', '/etc', '/var/lib/gpurun');
  const ok = { name: 'hpc', login: 'local', stagingDir: '/shared/gpurun' };

  it('fills defaults, and without hosts the cluster is the default backend', () => {
    const c = v({ clusters: [ok] });
    assert.deepEqual(c.hosts, []);
    assert.equal(c.defaultBackend, 'hpc');
    assert.deepEqual(c.clusters[0], { name: 'hpc', login: 'local', partitions: { online: 'online', offline: 'offline' }, gres: 'gpu', stagingDir: '/shared/gpurun', pollMs: 2000 });
  });

  it('with hosts, the host pool stays the default unless defaultBackend says otherwise', () => {
    assert.equal(v({ hosts: [{ name: 'local' }], clusters: [ok] }).defaultBackend, 'hosts');
    assert.equal(v({ hosts: [{ name: 'local' }], clusters: [ok], defaultBackend: 'hpc' }).defaultBackend, 'hpc');
    assert.equal(v({}).defaultBackend, 'hosts');
  });

  it('names the field that is wrong', () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ clusters: [{ ...ok, stagingDir: 'rel/dir' }] }, /clusters\[0\]\.stagingDir: must be an absolute path/],
      [{ clusters: [{ ...ok, stagingDir: '/my dir' }] }, /clusters\[0\]\.stagingDir: may hold only/],
      [{ clusters: [{ ...ok, login: 'me@login1' }] }, /clusters\[0\]\.login: "me@login1" is neither of these: "local" \(the broker runs on the login node\) or an SSH login node/],
      [{ clusters: [{ ...ok, partitions: { online: 'a', batch: 'b' } }] }, /clusters\[0\]\.partitions\.batch: unknown queue/],
      [{ clusters: [{ ...ok, container: 'docker' }] }, /clusters\[0\]\.container: must be "pyxis"/],
      [{ clusters: [{ ...ok, pollInterval: '0' }] }, /clusters\[0\]\.pollInterval: must be at least 1s/],
      [{ clusters: [{ ...ok, name: 'hosts' }] }, /clusters\[0\]\.name: "hosts" is already the name of another backend/],
      [{ clusters: [ok, ok] }, /clusters\[1\]\.name: "hpc" is already/],
      [{ clusters: [{ ...ok, queue: 'x' }] }, /clusters\[0\]\.queue: unknown setting/],
      [{ clusters: [ok], defaultBackend: 'hosts' }, /defaultBackend: "hosts" is not a backend; known: hpc/],
    ];
    for (const [raw, re] of bad) assert.throws(() => v(raw), re);
  });
});

describe('slurm: staging on real folders', () => {
  let root: string;
  let ws: string;
  let staged: string;
  let manifest: string;
  const files = new LocalClusterFiles();
  beforeEach(() => {
    root = scratch('gpurun-stage-unit-');
    ws = join(root, 'ws');
    staged = join(root, 'cluster', 'ws');
    manifest = join(root, 'manifest.json');
    mkdirSync(join(ws, 'a', 'b'), { recursive: true });
    mkdirSync(join(ws, '.git'));
    writeFileSync(join(ws, 'a', 'b', 'c.txt'), 'c');
    writeFileSync(join(ws, 'top.txt'), 'top');
    writeFileSync(join(ws, '.git', 'HEAD'), 'ref');
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('copies new and changed files only, removes deleted ones, keeps mtimes', async () => {
    const r1 = await stageWorkspace(files, ws, staged, manifest);
    assert.deepEqual([r1.copied, r1.unchanged, r1.removed, r1.bytes], [2, 0, 0, 4]);
    assert.equal(readFileSync(join(staged, 'a', 'b', 'c.txt'), 'utf8'), 'c');
    assert.ok(!existsSync(join(staged, '.git')));
    const r2 = await stageWorkspace(files, ws, staged, manifest);
    assert.deepEqual([r2.copied, r2.unchanged], [0, 2]);
    writeFileSync(join(ws, 'top.txt'), 'TOP!');
    rmSync(join(ws, 'a', 'b', 'c.txt'));
    const r3 = await stageWorkspace(files, ws, staged, manifest);
    assert.deepEqual([r3.copied, r3.unchanged, r3.removed], [1, 0, 1]);
    assert.equal(readFileSync(join(staged, 'top.txt'), 'utf8'), 'TOP!');
    assert.ok(!existsSync(join(staged, 'a', 'b', 'c.txt')));
  });

  it('an edit that keeps the size but changes the mtime is copied', async () => {
    await stageWorkspace(files, ws, staged, manifest);
    writeFileSync(join(ws, 'top.txt'), 'pot');
    const later = new Date(Date.now() + 5000);
    utimesSync(join(ws, 'top.txt'), later, later);
    assert.equal((await stageWorkspace(files, ws, staged, manifest)).copied, 1);
    assert.equal(readFileSync(join(staged, 'top.txt'), 'utf8'), 'pot');
  });

  it('brings back what the job wrote, never over a newer edit', async () => {
    await stageWorkspace(files, ws, staged, manifest);
    const later = new Date(Date.now() + 5000);
    // The job: a new file, a changed file, and a change to a file the developer also edits.
    mkdirSync(join(staged, 'out'));
    writeFileSync(join(staged, 'out', 'model.bin'), 'weights');
    writeFileSync(join(staged, 'a', 'b', 'c.txt'), 'job wrote c');
    writeFileSync(join(staged, 'top.txt'), 'job wrote top');
    utimesSync(join(staged, 'top.txt'), later, later);
    // The developer, meanwhile.
    writeFileSync(join(ws, 'top.txt'), 'my edit');
    const back = await bringBack(files, ws, staged, manifest);
    assert.deepEqual(back, { copied: 2, keptNewer: ['top.txt'] });
    assert.equal(readFileSync(join(ws, 'out', 'model.bin'), 'utf8'), 'weights');
    assert.equal(readFileSync(join(ws, 'a', 'b', 'c.txt'), 'utf8'), 'job wrote c');
    assert.equal(readFileSync(join(ws, 'top.txt'), 'utf8'), 'my edit');
    // Nothing brought back is staged again; the developer's edit is.
    const again = await stageWorkspace(files, ws, staged, manifest);
    assert.deepEqual([again.copied, again.unchanged], [1, 2]);
    assert.equal(readFileSync(join(staged, 'top.txt'), 'utf8'), 'my edit');
  });
});
