import assert from 'node:assert/strict';
import { poolSnapshot, type PoolInput } from '../../server/core/pool.ts';
import { host } from './lsp-fixtures.ts';

describe('pool snapshot', () => {
  const base: PoolInput = {
    hosts: [],
    queues: { online: { maxTimeSec: 0, defaultTimeSec: 0 }, offline: { maxTimeSec: 0, defaultTimeSec: 0 } },
    queued: [],
    clusters: [],
    hasHosts: true,
    defaultBackend: 'hosts',
    now: new Date('2026-12-01T00:00:00Z'),
  };

  it("lists the default image first, then the images of up hosts, each once; a host that is down adds none", () => {
    const p = poolSnapshot({
      ...base,
      defaultImage: 'local/busybox:1',
      hosts: [host('a', 'NVIDIA L4', 1, 0, { images: ['zeta:1', 'local/busybox:1'] }), host('b', 'NVIDIA L4', 1, 0, { images: ['alpha:2'] }), host('c', 'NVIDIA L4', 1, 0, { state: 'unreachable', images: ['gone:1'] })],
    });
    assert.deepEqual(p.images, ['local/busybox:1', 'alpha:2', 'zeta:1']);
    assert.equal(p.defaultImage, 'local/busybox:1');
    assert.deepEqual(poolSnapshot(base).images, []);
  });
});
