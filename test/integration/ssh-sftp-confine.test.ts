/**
 * `gpurun sftp-serve` (the SFTP side of both mount transports) driven by OpenSSH's own sftp client: files inside the
 * workspace are served; a path outside, `..`, and a symlink leading out are refused; --read-only refuses writes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, CLI, NODE, requirePart, scratch } from '../support/harness.ts';

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
});
