import assert from 'node:assert/strict';
import { validateConfig } from '../../server/config.ts';
import { lookupSshAlias } from '../../server/hosts/sshConfig.ts';

const v = (hosts: unknown[]) => validateConfig({ hosts }, 'broker.json', '/etc/gpurun', '/var/lib/gpurun').hosts;

describe('ssh host config', () => {
  it('fills defaults and resolves paths against the config folder', () => {
    const [h] = v([{ name: 'gpu1', type: 'ssh', address: '10.0.0.2', user: 'gpurun', identityFile: 'keys/id', knownHosts: 'kh' }]);
    assert.equal(h.type, 'ssh');
    if (h.type !== 'ssh') return;
    assert.equal(h.port, 22);
    assert.equal(h.identityFile, '/etc/gpurun/keys/id');
    assert.equal(h.knownHosts, '/etc/gpurun/kh');
    assert.equal(h.agent, false);
    assert.equal(h.runtime, 'docker');
    assert.equal(h.gpuMode, 'nvidia');
    assert.equal(h.mount.transport, 'relay');
    assert.equal(h.mount.sftpServer, '/usr/bin/env gpurun sftp-serve');
    assert.equal(h.workDir, '/var/tmp/gpurun');
  });

  it('takes runtime "process" for hosts without Docker; its GPUs are handed over by variables', () => {
    const [h] = v([{ name: 'g', type: 'ssh', address: 'a', runtime: 'process' }]);
    assert.ok(h.type === 'ssh');
    assert.equal(h.runtime, 'process');
    assert.equal(h.gpuMode, 'env');
    const [e] = v([{ name: 'g', type: 'ssh', address: 'a', runtime: 'process', gpuMode: 'env' }]);
    assert.ok(e.type === 'ssh' && e.gpuMode === 'env');
  });

  it('names the bad field', () => {
    assert.throws(() => v([{ name: 'g', type: 'ssh' }]), /hosts\[0\]\.address: is required/);
    assert.throws(() => v([{ name: 'g', type: 'ssh', address: 'a', gpuMode: 'cuda' }]), /hosts\[0\]\.gpuMode: must be "nvidia"/);
    assert.throws(() => v([{ name: 'g', type: 'ssh', address: 'a', port: 70000 }]), /hosts\[0\]\.port/);
    assert.throws(() => v([{ name: 'g', type: 'ssh', address: 'a', runtime: 'podman' }]), /hosts\[0\]\.runtime: must be "docker" .* or "process"/);
    assert.throws(() => v([{ name: 'g', type: 'ssh', address: 'a', runtime: 'process', gpuMode: 'nvidia' }]), /hosts\[0\]\.gpuMode: "nvidia" needs containers/);
    assert.throws(() => v([{ name: 'g', type: 'ssh', address: 'a', mount: { transport: 'direct' } }]), /hosts\[0\]\.mount\.target: is required for the direct transport/);
    assert.throws(() => v([{ name: 'g', type: 'ssh', address: 'a', mount: { snapshot: 'yes' } }]), /hosts\[0\]\.mount\.snapshot: must be true, false or "opaque"/);
    const [s] = v([{ name: 'g', type: 'ssh', address: 'a', mount: { snapshot: 'opaque' } }]);
    assert.equal(s.type === 'ssh' && s.mount.snapshot, 'opaque');
    // On by default for relay; off by default for direct, whose plain mount outlives a broker restart.
    const [r, d] = v([
      { name: 'r', type: 'ssh', address: 'a' },
      { name: 'd', type: 'ssh', address: 'b', mount: { transport: 'direct', target: 'me@laptop' } },
    ]);
    assert.equal(r.type === 'ssh' && r.mount.snapshot, true);
    assert.equal(d.type === 'ssh' && d.mount.snapshot, false);
    assert.throws(() => v([{ name: 'g', type: 'ssh', address: 'a', mount: { options: ['a,b'] } }]), /hosts\[0\]\.mount\.options\[0\]/);
    assert.throws(() => v([{ name: 'g', type: 'ssh', address: 'a', bogus: 1 }]), /hosts\[0\]\.bogus: unknown setting/);
    assert.throws(() => v([{ name: 'g', type: 'local', address: 'a' }]), /hosts\[0\]\.address: unknown setting/);
  });

  it('reads an alias from ~/.ssh/config text the way OpenSSH does (first value wins)', () => {
    const text = 'Host gpu*\n  User lab\n  Port 2200\nHost gpu2\n  HostName 10.9.9.2\n  User other\n  IdentityFile ~/.ssh/id_lab\nHost *\n  User fallback\n';
    const a = lookupSshAlias(text, 'gpu2');
    assert.equal(a.hostName, '10.9.9.2');
    assert.equal(a.user, 'lab');
    assert.equal(a.port, 2200);
    assert.match(a.identityFile!, /\/\.ssh\/id_lab$/);
    assert.deepEqual(lookupSshAlias(text, 'cpu1'), { user: 'fallback' });
  });
});
