import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { quoteShell, shellCommand } from '../../server/hosts/shellQuote.ts';

/** What `sh` makes of the quoted words: each argument on its own, NUL-separated. */
function roundTrip(words: string[]): string[] {
  const out = execFileSync('sh', ['-c', `printf '%s\\0' ${words.map(quoteShell).join(' ')}`], { encoding: 'utf8' });
  return out.split('\0').slice(0, -1);
}

describe('quoteShell', () => {
  it('leaves plain words alone and quotes the rest', () => {
    assert.equal(quoteShell('docker'), 'docker');
    assert.equal(quoteShell('/var/tmp/gpurun/mnt/abc'), '/var/tmp/gpurun/mnt/abc');
    assert.equal(quoteShell('gpurun.job=x1'), 'gpurun.job=x1');
    assert.equal(quoteShell(''), "''");
    assert.equal(quoteShell('a b'), "'a b'");
    assert.equal(quoteShell("it's"), `'it'\\''s'`);
  });

  it('survives hostile strings through a real sh unchanged, running nothing', () => {
    const hostile = [
      "it's", '"double"', '$(touch /tmp/gpurun-quote-pwned)', '`id`', '$HOME', '${PATH}', 'a;b', 'a && b', 'a | b', 'x\ny', "'", "''", '\\', '\\\'', '*', '?', '~', '#c', '!', '-n', ' lead', 'trail ', '\t', 'ünïcödé', 'a\r\nb',
    ];
    assert.deepEqual(roundTrip(hostile), hostile);
    assert.throws(() => execFileSync('test', ['-e', '/tmp/gpurun-quote-pwned']));
  });

  it('refuses a NUL byte, which no argument can carry', () => {
    assert.throws(() => quoteShell('a\0b'), /NUL/);
  });

  it('joins an argv into one command line', () => {
    assert.equal(shellCommand(['docker', 'logs', '-f', 'gpurun-x']), 'docker logs -f gpurun-x');
    assert.equal(shellCommand(['sh', '-c', 'echo "$1"', 'x', "a'b"]), `sh -c 'echo "$1"' x 'a'\\''b'`);
  });
});
