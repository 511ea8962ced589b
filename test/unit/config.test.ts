import assert from 'node:assert/strict';
import { validateConfig } from '../../server/config.ts';

const v = (raw: unknown) => validateConfig(raw, 'broker.json', '/etc/gpurun', '/home/u/.local/share/gpurun');

describe('broker config', () => {
  it('has sensible defaults for an empty file', () => {
    const c = v({});
    assert.deepEqual(c.listen, { kind: 'tcp', host: '127.0.0.1', port: 8750 });
    assert.equal(c.dataDir, '/home/u/.local/share/gpurun');
    assert.deepEqual(c.hosts, [{ name: 'local', type: 'local', labels: {} }]);
    assert.equal(c.defaults.gpus, 'auto');
    assert.equal(c.killGraceMs, 10_000);
    assert.deepEqual(c.restartBackoff, { firstMs: 5000, maxMs: 300_000 });
    assert.equal(c.auth.trustUnixSocket, false);
  });

  it('reads every documented field', () => {
    const c = v({
      listen: 'unix:/run/gpurun.sock',
      dataDir: 'data',
      hosts: [{ name: 'box', type: 'local', cpus: 8, memory: '32G', labels: { site: 'lab' } }],
      queues: { online: { maxTime: '8h', defaultTime: '1h' }, offline: { maxTime: '7d', restarts: 3 } },
      defaults: { gpus: 0, cpus: 2, memory: '4G', image: 'python:3.12' },
      killGrace: '5s',
      restartBackoff: { first: '2s', max: '1m' },
      auth: { trustUnixSocket: true, localUser: 'ci' },
    });
    assert.deepEqual(c.listen, { kind: 'unix', path: '/run/gpurun.sock' });
    assert.equal(c.dataDir, '/etc/gpurun/data');
    assert.deepEqual(c.hosts[0], { name: 'box', type: 'local', cpus: 8, memoryMiB: 32768, labels: { site: 'lab' } });
    assert.deepEqual(c.queues.online, { maxTimeSec: 28800, defaultTimeSec: 3600, restarts: 0 });
    assert.equal(c.queues.offline.restarts, 3);
    assert.deepEqual(c.restartBackoff, { firstMs: 2000, maxMs: 60_000 });
    assert.deepEqual(c.defaults, { image: 'python:3.12', gpus: 0, cpus: 2, memoryMiB: 4096 });
    assert.equal(c.killGraceMs, 5000);
    assert.deepEqual(c.auth, { trustUnixSocket: true, localUser: 'ci' });
  });

  const bad: Array<[unknown, RegExp]> = [
    [[], /broker.json: \(top level\): must be an object/],
    [{ listen: 'localhost' }, /listen: "localhost" is not HOST:PORT or unix:\/path/],
    [{ listen: 'unix:rel.sock' }, /listen: a Unix socket path must be absolute/],
    [{ hosts: [] }, /hosts: must be a non-empty list/],
    [{ hosts: [{ name: 'a' }, { name: 'a' }] }, /hosts\[1\].name: "a" is used by another host/],
    [{ hosts: [{ name: 'a', type: 'cloud' }] }, /hosts\[0\].type: unknown host type "cloud"/],
    [{ hosts: [{ name: 'a', cpus: 0 }] }, /hosts\[0\].cpus: must be a whole number ≥ 1/],
    [{ queues: { online: { maxTime: 'forever' } } }, /queues.online.maxTime: "forever" is not a duration/],
    [{ queues: { urgent: {} } }, /queues.urgent: unknown setting; known here: online, offline/],
    [{ queues: { online: { maxTime: '1h', defaultTime: '2h' } } }, /queues.online.defaultTime: is longer than maxTime/],
    [{ defaults: { memory: 'lots' } }, /defaults.memory: "lots" is not a memory size/],
    [{ colour: 'blue' }, /colour: unknown setting/],
    [{ queues: { offline: { restarts: -1 } } }, /queues.offline.restarts: must be a whole number ≥ 0/],
    [{ queues: { offline: { restarts: 1000 } } }, /queues.offline.restarts: must be at most 100/],
    [{ restartBackoff: { first: '1m', max: '5s' } }, /restartBackoff.max: is shorter than first/],
  ];
  for (const [raw, re] of bad) {
    it(`refuses ${JSON.stringify(raw)} naming the field`, () => {
      assert.throws(() => v(raw), (e: Error & { code?: string; hint?: string }) => e.code === 'E_CONFIG' && re.test(e.message) && !!e.hint);
    });
  }
});
