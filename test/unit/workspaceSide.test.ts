import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTreeRecords, treeRecords } from '../../server/hosts/snapshotPlan.ts';
import { devSnapshotArgs, walkTree } from '../../server/hosts/workspaceSide.ts';
import { refusedPath } from '../../server/hosts/workspaceSide.ts';
import type { MountConfig } from '../../server/hosts/sshConfig.ts';

const direct: MountConfig = { transport: 'direct', readOnly: false, options: [], snapshot: false, cacheDays: 14, target: 'dev@laptop.example:2200', identityFile: '/k/id', knownHosts: '/k/known', sftpServer: '/usr/bin/env gpurun sftp-serve' };

describe('the developer\'s side of a snapshot mount', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gpurun-side-'));
    mkdirSync(join(dir, 'ws', 'sub dir', 'ünï'), { recursive: true });
    writeFileSync(join(dir, 'ws', 'sub dir', 'ünï', 'a.py'), 'A = 1\n');
    writeFileSync(join(dir, 'ws', 'empty'), '');
    symlinkSync('/etc', join(dir, 'ws', 'out'));
    symlinkSync('sub dir', join(dir, 'ws', 'in'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('sends a tree as records and reads it back unchanged, modes included; unsafe paths are dropped', () => {
    const t = walkTree(join(dir, 'ws'));
    const back = parseTreeRecords(treeRecords(t));
    assert.deepEqual(back, t);
    assert.equal(back.get('out')?.type, 'l');
    const hostile = parseTreeRecords('f\x001\x001\x00644\x00../x\x00f\x001\x001\x00644\x00/etc/passwd\x00f\x001\x001\x00644\x00ok\x00');
    assert.deepEqual([...hostile.keys()], ['ok']);
  });

  it('refuses paths that are not plain relative ones or that lead through a link, also one to a folder inside', () => {
    const ws = join(dir, 'ws');
    assert.equal(refusedPath(ws, 'sub dir/ünï/a.py'), null);
    assert.equal(refusedPath(ws, 'out'), null, 'a link itself is sent as a link');
    assert.match(refusedPath(ws, 'out/passwd')!, /leads through "out"/);
    assert.match(refusedPath(ws, 'in/ünï/a.py')!, /leads through "in"/);
    assert.match(refusedPath(ws, '../secret')!, /not a relative path/);
    assert.match(refusedPath(ws, '/etc/passwd')!, /not a relative path/);
    assert.match(refusedPath(ws, 'gone/x')!, /is gone/);
  });

  it('has the host run ssh to the developer\'s machine with the direct mount\'s key, checked host key, and the workspace quoted', () => {
    const a = devSnapshotArgs({ ...direct }, "/home/dev/it's here", 'tar');
    assert.deepEqual(a.slice(0, 3), ['ssh', '-p', '2200']);
    assert.ok(a.includes('StrictHostKeyChecking=yes') && a.includes('BatchMode=yes') && a.includes('IdentityFile=/k/id') && a.includes('UserKnownHostsFile=/k/known'));
    assert.equal(a.at(-2), '--');
    assert.equal(a.at(-3), 'dev@laptop.example');
    // The remote command line, as the developer's login shell splits it.
    const words = spawnSync('sh', ['-c', `for w in ${a.at(-1)}; do printf '%s\\n' "$w"; done`], { encoding: 'utf8' }).stdout;
    assert.ok(a.at(-1)!.endsWith(' --snapshot tar'));
    assert.ok(a.at(-1)!.includes(`'/home/dev/it'\\''s here'`), a.at(-1));
    assert.match(words, /^\/usr\/bin\/env\ngpurun\nsftp-serve\n--root\n/);
    assert.throws(() => devSnapshotArgs({ ...direct, target: 'x; rm -rf /' }, '/w', 'list'), /not user@host/);
  });
});
