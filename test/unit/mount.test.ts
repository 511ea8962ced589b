import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fuseOptValue, isFuseType, mountPoint, overlayOf, sshfsDirectArgs, sshfsLinksAsIs, sshfsRelayArgs, unmountArgs, TUNED_OPTIONS } from '../../server/hosts/mount.ts';
import type { MountConfig } from '../../server/hosts/sshConfig.ts';
import { expireCachesArgs, overlayMountArgs, snapshotPaths } from '../../server/hosts/snapshot.ts';

const relay: MountConfig = { transport: 'relay', readOnly: false, options: [], snapshot: false, cacheDays: 14, sftpServer: '/usr/bin/env gpurun sftp-serve' };
const direct: MountConfig = { ...relay, transport: 'direct', target: 'dev@10.0.0.9:2200', identityFile: '/root/.ssh/id_dev', knownHosts: '/etc/gpurun/known_hosts' };

describe('workspace mount commands', () => {
  it('relay: sshfs in the foreground in passive mode, tuned for small files', () => {
    const a = sshfsRelayArgs(relay, '/home/al/proj', '/var/tmp/gpurun/mnt/j1');
    assert.deepEqual(a, ['sshfs', '-f', '-o', ['passive', 'allow_other', 'idmap=none', ...TUNED_OPTIONS].join(','), ':/home/al/proj', '/var/tmp/gpurun/mnt/j1']);
  });

  it('direct: reconnects, keeps alive, checks the host key, and runs the confined SFTP server on the dev machine', () => {
    const a = sshfsDirectArgs({ ...direct, readOnly: true }, '/home/al/my proj,v2', '/m/j1');
    assert.deepEqual(a.slice(0, 5), ['sshfs', 'dev@10.0.0.9:/home/al/my proj,v2', '/m/j1', '-p', '2200']);
    const o = a[6];
    for (const want of ['reconnect', 'ServerAliveInterval=5', 'StrictHostKeyChecking=yes', 'IdentityFile=/root/.ssh/id_dev', 'UserKnownHostsFile=/etc/gpurun/known_hosts', 'ro', 'allow_other']) {
      assert.ok(o.split(',').includes(want), `${want} in ${o}`);
    }
    // The workspace is quoted for the dev machine's shell, and its comma escaped for libfuse's option list.
    assert.ok(o.endsWith(`sftp_server=/usr/bin/env gpurun sftp-serve --root '/home/al/my proj\\,v2' --read-only`), o);
  });

  it('passes symlink text through unchanged where sshfs would refuse absolute links, and only there', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpurun-sshfs-'));
    try {
      // A stand-in sshfs that prints its argv, and whose -h lists no_contain_symlinks or not (Debian's or upstream).
      const run = (helpText: string) => {
        writeFileSync(join(dir, 'sshfs'), `#!/bin/sh\nif [ "$1" = -h ]; then echo '${helpText}' >&2; exit 0; fi\nprintf '%s\\n' "$@"\n`);
        chmodSync(join(dir, 'sshfs'), 0o755);
        const [cmd, ...args] = sshfsLinksAsIs(['sshfs', '-f', '-o', 'passive', ':/w s', '/m']);
        return spawnSync(cmd, args, { encoding: 'utf8', env: { PATH: `${dir}:/usr/bin:/bin` } }).stdout.split('\n').filter(Boolean);
      };
      assert.deepEqual(run('    -o no_contain_symlinks allow all symlink targets'), ['-o', 'no_contain_symlinks', '-f', '-o', 'passive', ':/w s', '/m']);
      assert.deepEqual(run('    -o follow_symlinks'), ['-f', '-o', 'passive', ':/w s', '/m']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('escapes commas and backslashes in an option value', () => {
    assert.equal(fuseOptValue('a,b\\c'), 'a\\,b\\\\c');
  });

  it('unmounts lazily and removes the mount point, passing the path as an argument', () => {
    const a = unmountArgs('/m/x y');
    assert.equal(a[0], 'sh');
    assert.deepEqual(a.slice(-2), ['/m/x y', '/snap/x y'], 'the mount point, then the folder of its snapshot parts');
    assert.ok(!a[2].includes('/m/x y'), 'the path is not in the script');
  });

  it('snapshot: the sshfs mount under the cache as a data-only layer, or as a plain lower one; a cache per layout', () => {
    const names = snapshotPaths('/w/mnt/b1/j1', 'alice', '/home/alice/ws', 'names');
    const opaque = snapshotPaths('/w/mnt/b1/j1', 'alice', '/home/alice/ws', 'opaque');
    assert.notEqual(names.cache, opaque.cache);
    assert.equal(names.lazy, '/w/snap/j1/lazy');
    assert.match(overlayMountArgs(names, '/w/mnt/b1/j1', 'names').join(' '), /-o lowerdir=\/w\/cache\/[0-9a-f]+\.names::\/w\/snap\/j1\/lazy,upperdir=\/w\/snap\/j1\/upper,workdir=\/w\/snap\/j1\/work \/w\/mnt\/b1\/j1$/);
    assert.match(overlayMountArgs(opaque, '/w/mnt/b1/j1').join(' '), /lowerdir=\/w\/cache\/[0-9a-f]+:\/w\/snap\/j1\/lazy,/);
    assert.throws(() => overlayMountArgs(snapshotPaths('/w:x/mnt/b1/j1', 'a', '/ws'), '/m'), /must not contain/);
  });

  it('finds a snapshot overlay\'s layers in /proc/mounts (for a broker that takes the mount over), in both layouts', () => {
    const names = snapshotPaths('/w w/mnt/b1/j1', 'alice', '/home/alice/ws', 'names');
    const opaque = snapshotPaths('/w/mnt/b1/j2', 'alice', '/home/alice/ws', 'opaque');
    const line = (p: typeof names, mnt: string, sep: string) => `overlay ${mnt.replace(/ /g, '\\040')} overlay rw,relatime,lowerdir=${p.cache.replace(/ /g, '\\040')}${sep}${p.lazy.replace(/ /g, '\\040')},upperdir=${p.upper.replace(/ /g, '\\040')},workdir=${p.work.replace(/ /g, '\\040')},uuid=on 0 0`;
    const table = ['sysfs /sys sysfs rw 0 0', line(names, '/w w/mnt/b1/j1', '::'), line(opaque, '/w/mnt/b1/j2', ':'), `root@dev:/ws ${opaque.lazy} fuse.sshfs rw 0 0`].join('\n');
    assert.deepEqual(overlayOf(table, '/w w/mnt/b1/j1'), { cache: names.cache, lazy: names.lazy, upper: names.upper, work: names.work, layout: 'names' });
    assert.deepEqual(overlayOf(table, '/w/mnt/b1/j2'), { cache: opaque.cache, lazy: opaque.lazy, upper: opaque.upper, work: opaque.work, layout: 'opaque' });
    assert.equal(overlayOf(table, '/w/mnt/b1/j3'), undefined, 'no overlay there (a plain direct mount)');
    assert.equal(overlayOf(table, opaque.lazy), undefined, 'an sshfs mount is not an overlay');
  });

  it('removes the snapshot caches no job used for the given days, and only those', () => {
    const w = mkdtempSync(join(tmpdir(), 'gpurun-caches-'));
    try {
      const old = Date.now() / 1000 - 20 * 86400;
      for (const k of ['stale', 'fresh', 'unstamped', 'stale with space']) {
        mkdirSync(join(w, 'cache', k, 'pkg'), { recursive: true });
        writeFileSync(join(w, 'cache', k, 'pkg', 'm.py'), 'x = 1\n');
        if (k === 'unstamped') continue;
        mkdirSync(join(w, 'cache-used'), { recursive: true });
        writeFileSync(join(w, 'cache-used', k), '');
        if (k !== 'fresh') utimesSync(join(w, 'cache-used', k), old, old);
      }
      const r = spawnSync('sh', expireCachesArgs(w, 14).slice(1), { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, `${join(w, 'cache', 'stale')}\n`, 'prints what it removed');
      assert.equal(existsSync(join(w, 'cache', 'stale')), false);
      assert.equal(existsSync(join(w, 'cache-used', 'stale')), false);
      assert.equal(existsSync(join(w, 'cache', 'fresh', 'pkg', 'm.py')), true, 'used within the days');
      assert.equal(existsSync(join(w, 'cache', 'unstamped', 'pkg', 'm.py')), true, 'no stamp yet: its age counts from now');
      assert.equal(existsSync(join(w, 'cache-used', 'unstamped')), true);
      assert.equal(existsSync(join(w, 'cache', 'stale with space')), true, '/proc/mounts would show this path escaped: kept');
    } finally {
      rmSync(w, { recursive: true, force: true });
    }
  });

  it('recognises a live FUSE mount from stat -f', () => {
    assert.equal(isFuseType('fuseblk\n'), true);
    assert.equal(isFuseType('fuse.sshfs\n'), true);
    assert.equal(isFuseType('ext2/ext3\n'), false);
    assert.equal(mountPoint('/var/tmp/gpurun', 'b0123456789a', 'j1'), '/var/tmp/gpurun/mnt/b0123456789a/j1');
  });
});
