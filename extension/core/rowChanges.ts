/**
 * What of a tree view to redraw after its data moved on: nothing, some rows, or all of it.
 *
 * VS Code rebuilds a row's inline buttons each time it redraws the row, and a click whose press and release land on
 * two different builds of a button is lost: a view that redraws every row every few seconds (elapsed times, GPU
 * usage) loses clicks on Cancel or Show Output now and then. So a view redraws a row only when what the row shows
 * has changed, and the whole tree only when its shape (which rows, in which order, under which parent) has. Pure:
 * views/ use it.
 */

/** A row as shown: a stable key, its node (the object the view handed VS Code), and the text it shows. */
export interface RowLook<N> {
  key: string;
  node: N;
  look: string;
}

export class RowChanges<N> {
  private shape: string | undefined;
  private looks = new Map<string, string>();

  /**
   * Given the tree as it would be shown now (`shape`: one string for which rows there are and where; `rows`: each
   * row's look), returns `'all'` when the shape changed (or on the first call), else the nodes whose look changed
   * (empty: nothing to redraw). Remembers what it was given for the next call.
   */
  next(shape: string, rows: Iterable<RowLook<N>>): 'all' | N[] {
    const looks = new Map<string, string>();
    const changed: N[] = [];
    for (const r of rows) {
      looks.set(r.key, r.look);
      if (this.looks.get(r.key) !== r.look) changed.push(r.node);
    }
    const all = shape !== this.shape;
    this.shape = shape;
    this.looks = looks;
    return all ? 'all' : changed;
  }
}

/**
 * A stable node per key: VS Code finds the row to redraw by the node object it was given, so a view hands out the
 * same object for the same row, with its data brought up to date.
 */
export class NodeCache<N extends object> {
  private nodes = new Map<string, N>();

  /** The node for `key`: the cached one with `data` assigned over it, or `make()` when there is none yet. */
  get(key: string, make: () => N, data: Partial<N>): N {
    const n = this.nodes.get(key);
    if (n) return Object.assign(n, data);
    const fresh = make();
    this.nodes.set(key, fresh);
    return fresh;
  }

  /** Drops the nodes whose key is not in `keep` (rows that left the tree). */
  prune(keep: Set<string>): void {
    for (const k of [...this.nodes.keys()]) if (!keep.has(k)) this.nodes.delete(k);
  }
}
