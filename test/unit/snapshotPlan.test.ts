import assert from 'node:assert/strict';
import { cachePlan, parseListing, safeRelative, SMALL_FILE_MAX, writeBacks, type Tree, type TreeEntry } from '../../server/hosts/snapshotPlan.ts';

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
});
