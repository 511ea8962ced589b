import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cachePlan, noLongerOpaque, opaqueDirs, opaqueTar, parseListing, safeRelative, SMALL_FILE_MAX, stubTar, withoutSubtrees, writeBacks, type Tree, type TreeEntry } from '../../server/hosts/snapshotPlan.ts';

const f = (size: number, mtimeMs = 1000): TreeEntry => ({ type: 'f', size, mtimeMs });
const d: TreeEntry = { type: 'd', size: 4096, mtimeMs: 5 };
const tree = (o: Record<string, TreeEntry>): Tree => new Map(Object.entries(o));

describe('snapshot plan', () => {
  it('parses find -printf listings, dropping paths that could name something outside', () => {
    const out = 'f\x0012\x001700000000.2500000000\x00pkg/a b.py\x00d\x004096\x001700000000.0000000000\x00pkg\x00c\x000\x001.0\x00gone\x00f\x001\x001\x00../x\x00';
    const t = parseListing(out);
    assert.deepEqual(t.get('pkg/a b.py'), { type: 'f', size: 12, mtimeMs: 1700000000250 });
    assert.equal(t.get('pkg')?.type, 'd');
    assert.equal(t.get('gone')?.type, 'c');
    assert.equal(t.has('../x'), false);
    assert.equal(safeRelative('a/./b'), false);
    assert.equal(safeRelative('/etc'), false);
    assert.equal(safeRelative('ünï côde/ok'), true);
  });

  it('sends small files that are new or changed, never large ones, and removes what is gone or grew large', () => {
    const local = tree({ pkg: d, 'pkg/a.py': f(10), 'pkg/b.py': f(11, 2000), 'data.bin': f(SMALL_FILE_MAX + 1), 'grown.bin': f(SMALL_FILE_MAX + 1), empty: f(0) });
    const host = tree({ pkg: d, 'pkg/a.py': f(10), 'pkg/b.py': f(11, 1000), old: d, 'old/x.py': f(1), 'grown.bin': f(5) });
    const plan = cachePlan(local, host);
    assert.deepEqual(plan.send, ['empty', 'pkg/b.py']);
    assert.deepEqual(plan.remove.sort(), ['grown.bin', 'old']);
    assert.equal(plan.bytes, 11);
    assert.deepEqual(cachePlan(local, new Map()).send, ['empty', 'pkg', 'pkg/a.py', 'pkg/b.py']);
  });

  it("carries the job's writes back, not what the serving side pushed, and removes what the job removed", () => {
    const prev = tree({ out: d, 'out/tmp.txt': f(3) });
    const cur = tree({ out: d, 'out/log.txt': f(5, 3000), 'edited.py': f(7, 4000), 'old.py': { type: 'c', size: 0, mtimeMs: 0 }, 'pushed-gone.py': { type: 'c', size: 0, mtimeMs: 0 }, new: d });
    const pushed = new Map<string, TreeEntry | 'removed'>([['edited.py', f(7, 4000)], ['pushed-gone.py', 'removed']]);
    assert.deepEqual(writeBacks(prev, cur, pushed), [
      { op: 'm', path: 'new' },
      { op: 'c', path: 'out/log.txt' },
      { op: 'r', path: 'out/tmp.txt' },
      { op: 'r', path: 'old.py' },
    ]);
    // Nothing changed since the last listing: nothing to do.
    assert.deepEqual(writeBacks(cur, cur, pushed), []);
  });

  it('makes opaque only folders with no large file under them, and notices folders that stop being so', () => {
    const local = tree({ a: d, 'a/b': d, 'a/b/x.py': f(1), 'a/data': d, 'a/data/big.bin': f(SMALL_FILE_MAX + 1), c: d });
    assert.deepEqual(opaqueDirs(local), ['a/b', 'c']);
    assert.deepEqual(noLongerOpaque(['a/b', 'a/data', 'c'], ['a/b', 'c']), ['a/data']);
    assert.deepEqual([...withoutSubtrees(local, ['a/data']).keys()], ['a', 'a/b', 'a/b/x.py', 'c']);
  });

  it('writes a tar of opaque folder entries that GNU tar reads, long unicode names included', () => {
    const long = `${'ü'.repeat(80)}/sub dir`;
    const t = opaqueTar([{ path: 'pkg', mode: 0o755, mtimeMs: 1_700_000_000_000 }, { path: long, mode: 0o700, mtimeMs: 1_700_000_000_000 }]);
    assert.equal(t.length % 512, 0);
    const r = spawnSync('tar', ['-t', '-v', '--xattrs', '-f', '-'], { input: t, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /drwxr-xr-x .* pkg\/?\n/);
    assert.ok(r.stdout.includes(long), r.stdout);
  });

  it('with every name on the host, sends stubs of large files and replaces a file that crossed the size limit', () => {
    const big = SMALL_FILE_MAX + 1;
    const local = tree({ pkg: d, 'pkg/a.py': f(10), 'pkg/w.bin': f(big), 'same.bin': f(big, 7), 'shrunk.bin': f(4), 'grown.bin': f(big) });
    const host = tree({ pkg: d, 'pkg/a.py': f(10), 'same.bin': f(big, 7), 'shrunk.bin': f(big), 'grown.bin': f(5) });
    const plan = cachePlan(local, host, 'names');
    assert.deepEqual(plan.send, ['shrunk.bin']);
    assert.deepEqual(plan.stubs, ['grown.bin', 'pkg/w.bin']);
    assert.deepEqual(plan.remove.sort(), ['grown.bin', 'shrunk.bin']);
    assert.equal(plan.bytes, 4, 'a stub sends no content');
    // The older layout never names large files.
    assert.deepEqual(cachePlan(local, new Map()).stubs, []);
  });

  it('writes stubs that GNU tar extracts as sparse files of the right size, mtime and overlay marks', function () {
    if (spawnSync('tar', ['--version']).status !== 0) this.skip();
    const out = mkdtempSync(join(tmpdir(), 'gpurun-stub-'));
    try {
      const name = 'sub dir/ünï.bin';
      const t = stubTar([{ path: name, size: 5 << 30, mode: 0o640, mtimeMs: 1_700_000_000_250.5 }]);
      assert.equal(t.length % 512, 0);
      // Extracted without --xattrs here (trusted.* needs root): the file itself is what a host gets.
      const r = spawnSync('sh', ['-c', 'mkdir -p "$1/sub dir" && tar -x -f - -C "$1"', 'x', out], { input: t, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      const st = statSync(join(out, name));
      assert.equal(st.size, 5 << 30);
      assert.equal(st.blocks, 0, 'no data written');
      assert.equal(st.mode & 0o777, 0o640);
      assert.ok(Math.abs(st.mtimeMs - 1_700_000_000_250.5) < 1, String(st.mtimeMs));
      const list = spawnSync('tar', ['-t', '-v', '--xattrs', '-f', '-'], { input: t, encoding: 'utf8' });
      assert.ok(list.stdout.includes(name), list.stdout);
      assert.ok(t.includes(Buffer.from(`SCHILY.xattr.trusted.overlay.redirect=/${name}\n`)), 'the stub points at its path in the sshfs layer');
      assert.ok(t.includes(Buffer.from('SCHILY.xattr.trusted.overlay.metacopy=\n')));
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
