import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jailedArgs } from '../../server/hosts/snapshotPlan.ts';

/** Whether this machine can make the jail (root, util-linux unshare): on a laptop as a user it cannot. */
const canJail = process.getuid?.() === 0 && spawnSync('unshare', ['--mount', 'true']).status === 0;

describe('the jail of host-side steps in trees a job can shape', function () {
  let base: string;
  before(function () {
    if (!canJail) {
      if (process.env.CI === 'true') throw new Error('the jail needs root and util-linux unshare, which CI has');
      console.log('      skipped: needs root and util-linux unshare');
      this.skip();
    }
  });
  beforeEach(() => {
    base = mkdtempSync(join(tmpdir(), 'gpurun-jail-test-'));
    mkdirSync(join(base, 'mnt'));
    mkdirSync(join(base, 'victim'));
    writeFileSync(join(base, 'victim', 'secret'), 'SECRET-OF-THE-HOST');
    // What a job can make in its workspace: links to the host's folders.
    symlinkSync(join(base, 'victim'), join(base, 'mnt', 'a'));
    symlinkSync('/', join(base, 'mnt', 'root'));
  });
  afterEach(() => rmSync(base, { recursive: true, force: true }));

  const jailed = (script: string, input?: string) => {
    const a = jailedArgs([join(base, 'mnt')], ['sh', '-c', script, 'step', join(base, 'mnt')]);
    return spawnSync(a[0], a.slice(1), { encoding: 'utf8', input });
  };

  it('writes and reads in the bound folder, and nowhere a symlink in it leads', () => {
    const r = jailed('cd "$1"; echo pwned > a/passwd; cat a/secret; echo x > root/tmp/gpurun-escaped; echo ok > ok.txt; tar --version >/dev/null && echo tar-runs');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /tar-runs/, 'the system\'s programs run in the jail');
    assert.doesNotMatch(r.stdout, /SECRET-OF-THE-HOST/);
    assert.equal(existsSync(join(base, 'victim', 'passwd')), false, 'nothing written through the link');
    assert.equal(existsSync('/tmp/gpurun-escaped'), false);
    assert.equal(readFileSync(join(base, 'mnt', 'ok.txt'), 'utf8'), 'ok\n');
  });

  it('GNU tar extracting a/passwd through the link writes nothing outside (on the host it would)', () => {
    const src = join(base, 'src');
    mkdirSync(join(src, 'a'), { recursive: true });
    writeFileSync(join(src, 'a', 'passwd'), 'pwned\n');
    const tar = spawnSync('tar', ['-c', '-f', '-', '-C', src, 'a/passwd']);
    const a = jailedArgs([join(base, 'mnt')], ['tar', '-x', '-f', '-', '--no-same-owner', '-C', join(base, 'mnt')]);
    const r = spawnSync(a[0], a.slice(1), { input: tar.stdout });
    assert.notEqual(r.status, 0, 'the member through the link fails');
    assert.equal(existsSync(join(base, 'victim', 'passwd')), false);
    // The same extraction on the host follows the link: what the jail is for.
    const bare = spawnSync('tar', ['-x', '-f', '-', '--no-same-owner', '-C', join(base, 'mnt')], { input: tar.stdout });
    assert.equal(bare.status, 0);
    assert.equal(existsSync(join(base, 'victim', 'passwd')), true);
  });

  it('the system folders are read-only in it, and it leaves no mount or folder behind', () => {
    const r = jailed('touch /usr/gpurun-escaped 2>/dev/null && echo wrote || echo refused');
    assert.equal(r.stdout.trim(), 'refused');
    assert.equal(existsSync('/usr/gpurun-escaped'), false);
    assert.doesNotMatch(readFileSync('/proc/mounts', 'utf8'), /gpurun-jail/);
    assert.deepEqual(readdirSync(tmpdir()).filter((n) => n.startsWith('gpurun-jail.')), []);
  });

  it('passes the command\'s exit status and stdin through', () => {
    assert.equal(jailed('exit 7').status, 7);
    assert.equal(jailed('cat').status, 0);
    assert.equal(jailed('cat', 'through\n').stdout, 'through\n');
  });
});
