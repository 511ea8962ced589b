import assert from 'node:assert/strict';
import { NodeCache, RowChanges } from '../../../extension/core/rowChanges.ts';

type Node = { key: string; text: string };

describe('extension core: which rows of a view to redraw', () => {
  const rowsOf = (nodes: Node[]) => nodes.map((node) => ({ key: node.key, node, look: node.text }));

  it('redraws all on the first look and when rows come, go or change places; else only the rows whose text changed', () => {
    const c = new RowChanges<Node>();
    const a = { key: 'a', text: 'a · 1m' }, b = { key: 'b', text: 'b · <1m' };
    assert.equal(c.next('a,b', rowsOf([a, b])), 'all');
    assert.deepEqual(c.next('a,b', rowsOf([a, b])), [], 'nothing changed: nothing redrawn');
    b.text = 'b · 1m';
    assert.deepEqual(c.next('a,b', rowsOf([a, b])), [b], 'only the row whose text changed');
    assert.equal(c.next('b,a', rowsOf([b, a])), 'all', 'rows changed places');
    assert.equal(c.next('b', rowsOf([b])), 'all', 'a row left');
  });

  it('hands out one node object per key, brought up to date, and forgets keys that left', () => {
    const cache = new NodeCache<{ kind: 'job'; n: number }>();
    const first = cache.get('j1', () => ({ kind: 'job', n: 1 }), { n: 1 });
    const again = cache.get('j1', () => ({ kind: 'job', n: 0 }), { n: 2 });
    assert.equal(again, first, 'the same object: VS Code finds the row to redraw by it');
    assert.equal(first.n, 2);
    cache.prune(new Set());
    assert.notEqual(cache.get('j1', () => ({ kind: 'job', n: 3 }), { n: 3 }), first);
  });
});
