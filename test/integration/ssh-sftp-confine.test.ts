/**
 * `gpurun sftp-serve` (the SFTP side of both mount transports) driven by OpenSSH's own sftp client: files inside the
 * workspace are served; a path outside, `..`, and a symlink leading out are refused; --read-only refuses writes.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, CLI, NODE, requirePart, scratch } from '../support/harness.ts';
import { PacketFramer, SSH_FXP } from '../../server/hosts/sftpGuard.ts';
import { sftpPacket, sftpString, sftpU32 } from '../support/sftpPackets.ts';

describe('gpurun sftp-serve confinement (with the real sftp client)', () => {
  let dir: string;
  let ws: string;
  before(function () {
    requirePart(this, 'OpenSSH sftp client and sftp-server', existsSync('/usr/bin/sftp') && existsSync('/usr/lib/openssh/sftp-server'), 'apt-get install openssh-client openssh-server');
    dir = scratch('gpurun-sftp-');
    ws = join(dir, 'ws');
    mkdirSync(ws);
    mkdirSync(join(dir, 'secret'));
    writeFileSync(join(dir, 'secret', 'key'), 'SECRET');
    writeFileSync(join(ws, 'input.txt'), 'inside\n');
    symlinkSync(join(dir, 'secret'), join(ws, 'out'));
  });
  after(() => dir && cleanup(dir));

  function sftp(batch: string[], extra: string[] = []): { code: number | null; out: string } {
    const r = spawnSync('sftp', ['-b', '-', '-D', [NODE, CLI, 'sftp-serve', '--root', ws, ...extra].join(' ')], { input: batch.join('\n') + '\n', encoding: 'utf8', cwd: dir });
    return { code: r.status, out: r.stdout + r.stderr };
  }

  it('serves the workspace and refuses everything outside it', () => {
    const r = sftp([
      `get input.txt ${dir}/got.txt`,
      `-get ${dir}/secret/key ${dir}/leak-abs`,
      `-get ../secret/key ${dir}/leak-dotdot`,
      `-get out/key ${dir}/leak-symlink`,
      `-ls ${dir}`,
      `-put ${dir}/secret/key ../planted`,
      `put ${ws}/input.txt copy.txt`,
    ]);
    assert.equal(r.code, 0, r.out);
    assert.equal(readFileSync(join(dir, 'got.txt'), 'utf8'), 'inside\n');
    for (const f of ['leak-abs', 'leak-dotdot', 'leak-symlink', 'planted']) assert.equal(existsSync(join(dir, f)), false, `${f} must not exist\n${r.out}`);
    assert.match(r.out, /refused: .*secret\/key/);
    assert.equal(readFileSync(join(ws, 'copy.txt'), 'utf8'), 'inside\n');
  });

  it('refuses writes when read-only', () => {
    const r = sftp([`-put ${ws}/input.txt ro-copy.txt`, `get input.txt ${dir}/got-ro.txt`], ['--read-only']);
    assert.equal(r.code, 0, r.out);
    assert.equal(existsSync(join(ws, 'ro-copy.txt')), false, r.out);
    assert.equal(readFileSync(join(dir, 'got-ro.txt'), 'utf8'), 'inside\n');
  });

  it('checks a path only after earlier pipelined renames and symlinks have run (no swap to a symlink out)', async () => {
    mkdirSync(join(ws, 'a'));
    writeFileSync(join(ws, 'a', 'key'), 'harmless');
    const serve = spawn(NODE, [CLI, 'sftp-serve', '--root', ws], { stdio: ['pipe', 'pipe', 'pipe'] });
    const replies = new Map<number, Buffer>();
    const framer = new PacketFramer();
    let stderr = '';
    serve.stderr.on('data', (d) => (stderr += d));
    const got = new Promise<void>((resolve) => {
      serve.stdout.on('data', (d: Buffer) => {
        for (const p of framer.push(d)) if (p.readUInt8(4) !== 2) replies.set(p.readUInt32BE(5), p);
        if (replies.has(5)) resolve();
      });
    });
    // One write: the path of the OPEN is checked while `a` is still a real folder unless the guard waits for the
    // rename and the symlink to be answered first.
    serve.stdin.write(Buffer.concat([
      sftpPacket(SSH_FXP.INIT, null, sftpU32(3)),
      sftpPacket(SSH_FXP.RENAME, 1, sftpString(join(ws, 'a')), sftpString(join(ws, 'b'))),
      // a → out (a link already in the workspace that leads out: allowed to point at, refused to follow).
      sftpPacket(SSH_FXP.SYMLINK, 2, sftpString('out'), sftpString(join(ws, 'a'))),
      sftpPacket(SSH_FXP.OPEN, 3, sftpString(join(ws, 'a', 'key')), sftpU32(1 /* READ */), sftpU32(0)),
      sftpPacket(SSH_FXP.STAT, 4, sftpString(join(ws, 'b', 'key'))),
      sftpPacket(SSH_FXP.LSTAT, 5, sftpString(join(ws, 'a'))),
    ]));
    await got;
    // The refusal is logged on stderr, which may come after the last reply: read it once the server has exited.
    const exited = new Promise((resolve) => serve.once('close', resolve));
    serve.stdin.end();
    await exited;
    const type = (id: number) => replies.get(id)!.readUInt8(4);
    assert.equal(type(1), SSH_FXP.STATUS);
    assert.equal(replies.get(1)!.readUInt32BE(9), 0, 'the rename inside the workspace is done');
    assert.equal(replies.get(2)!.readUInt32BE(9), 0, 'the symlink is made (following it is what is checked)');
    assert.equal(type(3), SSH_FXP.STATUS, `the open through the new symlink must be refused, not given a handle\n${stderr}`);
    assert.equal(replies.get(3)!.readUInt32BE(9), 3 /* PERMISSION_DENIED */);
    assert.notEqual(type(4), SSH_FXP.STATUS, 'a path inside is still served');
    assert.match(stderr, /refused: .*a\/key/);
  });

  it('reads the text of a link that leads out (the host resolves it itself), and refuses to follow it', async () => {
    const serve = spawn(NODE, [CLI, 'sftp-serve', '--root', ws], { stdio: ['pipe', 'pipe', 'pipe'] });
    const replies = new Map<number, Buffer>();
    const framer = new PacketFramer();
    const got = new Promise<void>((resolve) => {
      serve.stdout.on('data', (d: Buffer) => {
        for (const p of framer.push(d)) if (p.readUInt8(4) !== 2) replies.set(p.readUInt32BE(5), p);
        if (replies.size >= 3) resolve();
      });
    });
    serve.stdin.write(Buffer.concat([
      sftpPacket(SSH_FXP.INIT, null, sftpU32(3)),
      sftpPacket(SSH_FXP.READLINK, 1, sftpString(join(ws, 'out'))),
      sftpPacket(SSH_FXP.LSTAT, 2, sftpString(join(ws, 'out'))),
      sftpPacket(SSH_FXP.STAT, 3, sftpString(join(ws, 'out'))),
    ]));
    await got;
    serve.stdin.end();
    assert.equal(replies.get(1)!.readUInt8(4), 104 /* NAME */);
    assert.ok(replies.get(1)!.includes(Buffer.from(join(dir, 'secret'))), 'the link text is answered as it is');
    assert.equal(replies.get(2)!.readUInt8(4), 105 /* ATTRS */, 'the link itself can be looked at');
    assert.equal(replies.get(3)!.readUInt8(4), SSH_FXP.STATUS, 'following it is refused');
    assert.equal(replies.get(3)!.readUInt32BE(9), 3 /* PERMISSION_DENIED */);
  });
});
