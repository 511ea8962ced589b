/** The one shell-quoting function (server/core/shellQuote.ts), checked against real shells with hostile words. */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { quoteShell, shellCommand } from '../../server/core/shellQuote.ts';

// Every hostile word of the SSH hosts' and the Slurm backend's former quoting tests.
const HOSTILE = [
  "it's", '"double"', '$(touch /tmp/gpurun-quote-pwned)', '`id`', '$HOME', '${PATH}', 'a;b', 'a && b', 'a | b', 'x\ny', "'", "''", '\\', '\\\'', '*', '?', '~', '#c', '!', '-n', ' lead', 'trail ', '\t', 'ünïcödé', 'a\r\nb',
  'a b', '$(id)', '; rm -rf /', '&& echo pwned', '\r\n', '"q"', '[a]', '', ' ', '--', '#not a comment', '%s', 'é ü 日本', '\x01\x7f', '>out', '|cat', 'A=b', '--lr=3e-4',
];

describe('quoteShell', () => {
  for (const shell of ['/bin/sh', '/bin/bash', '/bin/dash']) {
    it(`every hostile word comes back byte for byte through ${shell}, running nothing`, function () {
      if (!existsSync(shell)) this.skip();
      // printf prints each argument followed by a NUL: exactly the argv the shell built.
      const r = spawnSync(shell, ['-c', `printf '%s\\0' ${HOSTILE.map(quoteShell).join(' ')}`], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(r.stdout.split('\0').slice(0, -1), HOSTILE);
      assert.throws(() => execFileSync('test', ['-e', '/tmp/gpurun-quote-pwned']));
    });
  }

  it('leaves plain words alone and quotes the rest', () => {
    assert.equal(quoteShell('docker'), 'docker');
    assert.equal(quoteShell('train.py'), 'train.py');
    assert.equal(quoteShell('/var/tmp/gpurun/mnt/abc'), '/var/tmp/gpurun/mnt/abc');
    assert.equal(quoteShell(''), "''");
    assert.equal(quoteShell('a b'), "'a b'");
    assert.equal(quoteShell("it's"), `'it'\\''s'`);
  });

  it('quotes words with "=", so that a first word is never read as an assignment', () => {
    assert.equal(quoteShell('gpurun.job=x1'), "'gpurun.job=x1'");
    assert.equal(quoteShell('--lr=3e-4'), "'--lr=3e-4'");
    assert.equal(spawnSync('sh', ['-c', `${shellCommand(['A=b', 'x'])}; echo "[$A]"`], { encoding: 'utf8' }).stdout, '[]\n');
  });

  it('refuses a NUL byte, which no argument can carry', () => {
    assert.throws(() => quoteShell('a\0b'), /NUL byte/);
  });

  it('joins an argv into one command line', () => {
    assert.equal(shellCommand(['docker', 'logs', '-f', 'gpurun-x']), 'docker logs -f gpurun-x');
    assert.equal(shellCommand(['sh', '-c', 'echo "$1"', 'x', "a'b"]), `sh -c 'echo "$1"' x 'a'\\''b'`);
    assert.throws(() => shellCommand([]), /empty argv/);
  });
});
