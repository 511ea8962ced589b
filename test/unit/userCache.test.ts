import assert from 'node:assert/strict';
import { cacheEnv, cacheVolume, ownerSlug, parseDockerSize, volumeSize } from '../../server/core/userCache.ts';
import { dockerRunArgs, userNetwork, type DockerRunInput } from '../../server/runtimes/docker.ts';
import { validateConfig } from '../../server/config.ts';
import { cacheTable } from '../../server/cli/cache.ts';

const v = (raw: unknown) => validateConfig(raw, 'broker.json', '/etc/gpurun', '/home/u/.local/share/gpurun');

describe('per-user cache', () => {
  it('names one volume per user, never the same for two users', () => {
    assert.match(cacheVolume('alice'), /^gpurun-cache-alice-[0-9a-f]{12}$/);
    assert.notEqual(cacheVolume('Alice'), cacheVolume('alice'));
    assert.notEqual(cacheVolume('a b'), cacheVolume('a_b'));
    assert.match(cacheVolume('../../etc'), /^gpurun-cache-[a-z0-9_.-]+$/);
    // A user named like another's cleaned name with its hash still gets a cache of their own.
    const lookalike = cacheVolume('Alice').slice('gpurun-cache-'.length);
    assert.notEqual(cacheVolume(lookalike), cacheVolume('Alice'));
    // The network keeps its old names (same rule).
    assert.equal(userNetwork('alice'), 'gpurun-u-alice');
    assert.equal(userNetwork('Bob Smith'), `gpurun-u-${ownerSlug('Bob Smith')}`);
  });

  it('points the usual caches into it', () => {
    assert.deepEqual(cacheEnv('/root/.cache'), { XDG_CACHE_HOME: '/root/.cache', HF_HOME: '/root/.cache/huggingface', PIP_CACHE_DIR: '/root/.cache/pip', TORCH_HOME: '/root/.cache/torch' });
  });

  it('mounts the volume in the container when given', () => {
    const base: DockerRunInput = { jobId: 'j', owner: 'alice', brokerId: 'b', image: 'i', command: ['x'], envFile: '/e', gpuMode: 'env', gpuIndices: [], cpus: 1, memoryMiB: 1, mountPoint: '/m', readOnly: false, pidsLimit: 16 };
    const vols = (a: string[]) => a.flatMap((x, i) => (x === '-v' ? [a[i + 1]] : []));
    assert.deepEqual(vols(dockerRunArgs(base)), ['/m:/workspace']);
    assert.deepEqual(vols(dockerRunArgs({ ...base, cache: { volume: 'gpurun-cache-alice', path: '/root/.cache' } })), ['/m:/workspace', 'gpurun-cache-alice:/root/.cache']);
  });

  it('reads the sizes docker system df prints', () => {
    assert.equal(parseDockerSize('0B'), 0);
    assert.equal(parseDockerSize('1.5kB'), 1500);
    assert.equal(parseDockerSize('12.3MB'), 12_300_000);
    assert.equal(parseDockerSize('2GB'), 2e9);
    assert.equal(parseDockerSize('N/A'), null);
    const df = '[{"Name":"gpurun-cache-bob","Size":"3MB"},{"Name":"gpurun-cache-alice","Size":"1.024kB"}]\n';
    assert.equal(volumeSize(df, 'gpurun-cache-alice'), 1024);
    assert.equal(volumeSize(df, 'gpurun-cache-carol'), 0);
  });

  it('is configured under "cache": enabled and a container path outside the workspace', () => {
    assert.deepEqual(v({}).cache, { enabled: true, containerPath: '/root/.cache' });
    assert.deepEqual(v({ cache: { enabled: false, path: '/home/user/.cache' } }).cache, { enabled: false, containerPath: '/home/user/.cache' });
    for (const path of ['relative', '/workspace', '/workspace/c', '/', '/a/../etc', 'x:y', 3]) {
      assert.throws(() => v({ cache: { path } }), /cache\.path.*must be an absolute folder of the container outside \/workspace/);
    }
    assert.throws(() => v({ cache: { size: 3 } }), /cache\.size.*not a setting/);
    assert.throws(() => v({ cache: { enabled: 'yes' } }), /cache\.enabled.*true or false/);
  });

  it('shows each host\'s cache with its size, or why there is none', () => {
    assert.equal(cacheTable([
      { host: 'a100', kind: 'volume', name: 'gpurun-cache-alice', path: '/root/.cache', bytes: 3 * 1024 * 1024 },
      { host: 'local', kind: 'none', name: null, path: null, bytes: null, note: 'local jobs run as you, with your own ~/.cache' },
      { host: 'l4', kind: 'volume', name: 'gpurun-cache-alice', path: '/root/.cache', bytes: null, note: 'the host cannot be reached: timeout' },
    ]), [
      'HOST   SIZE   CACHE',
      'a100   3 MiB  volume gpurun-cache-alice, in jobs at /root/.cache',
      'local  -      none: local jobs run as you, with your own ~/.cache',
      'l4     ?      volume gpurun-cache-alice, in jobs at /root/.cache (the host cannot be reached: timeout)',
      '',
    ].join('\n'));
  });
});
