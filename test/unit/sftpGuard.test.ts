import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkRequest, confined, PacketFramer, SSH_FXP, statusPacket } from '../../server/hosts/sftpGuard.ts';
import { sftpPacket, sftpString } from '../support/sftpPackets.ts';


describe('SFTP confinement', () => {
  let root: string;
  let outside: string;
  before(() => {
    const base = mkdtempSync(join(tmpdir(), 'gpurun-guard-'));
    root = join(base, 'ws');
    outside = join(base, 'secret');
    mkdirSync(join(root, 'pkg'), { recursive: true });
    mkdirSync(outside);
    writeFileSync(join(outside, 'key'), 'x');
    writeFileSync(join(root, 'pkg', 'a.py'), 'x');
    symlinkSync(outside, join(root, 'out'));
    symlinkSync('pkg/a.py', join(root, 'inside-link'));
  });
  after(() => rmSync(join(root, '..'), { recursive: true, force: true }));

  it('allows paths inside, refuses .., absolute paths elsewhere and symlinks that lead out', () => {
    assert.equal(confined(root, root, `${root}/pkg/a.py`, true), true);
    assert.equal(confined(root, root, 'pkg/new-file', true), true);
    assert.equal(confined(root, root, root, true), true);
    assert.equal(confined(root, root, `${root}/inside-link`, true), true);
    assert.equal(confined(root, root, `${root}/../secret/key`, true), false);
    assert.equal(confined(root, root, '/etc/passwd', true), false);
    assert.equal(confined(root, root, `${root}/out/key`, true), false);
    assert.equal(confined(root, root, `${root}/out`, true), false);
    // lstat/readlink/remove of the link itself stay inside.
    assert.equal(confined(root, root, `${root}/out`, false), true);
    assert.equal(confined(root, root, `${root}/out/new`, false), false);
  });

  it('answers a refused request with PERMISSION_DENIED for its id, and forwards allowed ones', () => {
    const bad = checkRequest(sftpPacket(SSH_FXP.OPEN, 42, sftpString(`${root}/out/key`), Buffer.alloc(8)), root, root);
    assert.equal(bad.forward, false);
    if (bad.forward) return;
    assert.equal(bad.reply.readUInt8(4), SSH_FXP.STATUS);
    assert.equal(bad.reply.readUInt32BE(5), 42);
    assert.equal(bad.reply.readUInt32BE(9), 3);
    assert.equal(checkRequest(sftpPacket(SSH_FXP.STAT, 7, sftpString(`${root}/pkg`)), root, root).forward, true);
    assert.equal(checkRequest(sftpPacket(SSH_FXP.RENAME, 8, sftpString(`${root}/pkg/a.py`), sftpString(`${root}/../a.py`)), root, root).forward, false);
    assert.equal(checkRequest(sftpPacket(SSH_FXP.EXTENDED, 9, sftpString('posix-rename@openssh.com'), sftpString(`${root}/pkg/a.py`), sftpString('/tmp/x')), root, root).forward, false);
    assert.equal(checkRequest(sftpPacket(SSH_FXP.EXTENDED, 10, sftpString('home-directory'), sftpString('me')), root, root).forward, false);
    assert.equal(checkRequest(sftpPacket(SSH_FXP.EXTENDED, 11, sftpString('statvfs@openssh.com'), sftpString(root)), root, root).forward, true);
    assert.equal(checkRequest(sftpPacket(SSH_FXP.READ, 12, sftpString('handle'), Buffer.alloc(12)), root, root).forward, true);
  });

  it('frames packets split and joined arbitrarily', () => {
    const a = sftpPacket(SSH_FXP.STAT, 1, sftpString('/x'));
    const b = statusPacket(2, 0, 'ok');
    const all = Buffer.concat([a, b]);
    const f = new PacketFramer();
    const out = [...f.push(all.subarray(0, 3)), ...f.push(all.subarray(3, a.length + 2)), ...f.push(all.subarray(a.length + 2))];
    assert.deepEqual(out, [a, b]);
    assert.throws(() => new PacketFramer().push(Buffer.from([0xff, 0xff, 0xff, 0xff, 1])), /bad SFTP packet length/);
  });
});
