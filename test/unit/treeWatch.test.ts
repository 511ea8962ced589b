import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TreeWatch } from '../../server/hosts/treeWatch.ts';

/** Waits until `names` holds every one of `want` (inotify reports come a little later). */
async function until(names: Set<string>, want: string[]): Promise<void> {
  for (let i = 0; i < 200 && !want.every((w) => names.has(w)); i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(want.filter((w) => !names.has(w)), [], `reported: ${[...names].join(', ')}`);
}

describe('tree watch (one watch per folder)', () => {
  let root = '';
  let w: TreeWatch | undefined;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'gpurun-watch-'));
    mkdirSync(join(root, 'pkg', 'sub'), { recursive: true });
    for (let i = 0; i < 50; i++) writeFileSync(join(root, 'pkg', `m${i}.py`), 'x\n');
  });
  afterEach(() => {
    w?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('watches folders, not files, and reports nothing at start', async () => {
    const names = new Set<string>();
    w = new TreeWatch(root, (n) => names.add(n), (e) => assert.fail(e));
    w.start(['pkg', 'pkg/sub']);
    assert.equal(w.size, 3);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual([...names], []);
    writeFileSync(join(root, 'pkg', 'sub', 'deep.py'), 'y\n');
    writeFileSync(join(root, 'pkg', 'm3.py'), 'changed\n');
    await until(names, ['pkg/sub/deep.py', 'pkg/m3.py']);
  });

  it('reports what is in a folder that appears, and watches it; a removed folder is reported and let go', async () => {
    const names = new Set<string>();
    w = new TreeWatch(root, (n) => names.add(n), (e) => assert.fail(e));
    w.start(['pkg', 'pkg/sub']);
    mkdirSync(join(root, 'tmp-new', 'inner'), { recursive: true });
    writeFileSync(join(root, 'tmp-new', 'inner', 'a.txt'), 'a\n');
    renameSync(join(root, 'tmp-new'), join(root, 'new'));
    await until(names, ['new', 'new/inner', 'new/inner/a.txt']);
    names.clear();
    writeFileSync(join(root, 'new', 'inner', 'b.txt'), 'b\n');
    await until(names, ['new/inner/b.txt']);
    rmSync(join(root, 'pkg', 'sub'), { recursive: true });
    await until(names, ['pkg/sub']);
    assert.equal(w.size, 4, 'root, pkg, new, new/inner');
  });
});
