/** What a user may name as a workspace on a team broker, tried with hostile input on a real folder tree. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { authorizeWorkspace, normalAbsolute, type WorkspacePolicy } from '../../server/core/workspaceAuthority.ts';

describe('workspace authority', () => {
  let t: string;
  let policy: WorkspacePolicy;
  const rp = (p: string) => realpathSync.native(p);
  const allow = (user: string, path: string) => authorizeWorkspace(user, path, policy, rp);
  const refused = (user: string, path: string, re: RegExp) => assert.throws(() => allow(user, path), (e: Error & { code?: string }) => re.test(e.message) && /E_FORBIDDEN|E_BAD_REQUEST/.test(e.code ?? ''));

  before(() => {
    t = realpathSync(mkdtempSync(join(tmpdir(), 'gpurun-authority-')));
    for (const d of ['home/alice/proj', 'home/bob/proj', 'data/alice', 'broker/data/logs', 'broker/keys', 'broker/conf']) mkdirSync(join(t, d), { recursive: true });
    symlinkSync(join(t, 'broker/data'), join(t, 'home/bob/proj/data-link'));
    symlinkSync(join(t, 'home/alice'), join(t, 'home/bob/alice-link'));
    symlinkSync('/', join(t, 'home/bob/root-link'));
    policy = {
      roots: { '*': [join(t, 'home/{user}')], alice: [join(t, 'data/alice')] },
      protectedDirs: [join(t, 'broker/data'), join(t, 'broker/conf'), join(t, 'broker/keys')],
    };
  });
  after(() => rmSync(t, { recursive: true, force: true }));

  it("allows a user's own folders, as real paths (trailing slashes, `.` and `..` inside the root resolved)", () => {
    assert.equal(allow('bob', join(t, 'home/bob/proj')), join(t, 'home/bob/proj'));
    assert.equal(allow('bob', `${join(t, 'home/bob/proj')}///`), join(t, 'home/bob/proj'));
    assert.equal(allow('bob', `${join(t, 'home/bob')}/./x/../proj`), join(t, 'home/bob/proj'));
    assert.equal(allow('alice', join(t, 'data/alice')), join(t, 'data/alice'), 'a root of her own, besides "*"');
    assert.equal(allow('alice', join(t, 'home/alice/proj')), join(t, 'home/alice/proj'));
  });

  it("refuses another user's folder, also through `..` and symlinks", () => {
    refused('bob', join(t, 'home/alice'), /outside the folders bob may use/);
    refused('bob', `${join(t, 'home/bob')}/../alice/proj`, /outside the folders bob may use/);
    refused('bob', join(t, 'home/bob/alice-link'), /outside the folders bob may use/);
    refused('bob', join(t, 'data/alice'), /outside/);
  });

  it("refuses the broker's own folders, inside or above them, whatever the roots say", () => {
    const open: WorkspacePolicy = { ...policy, roots: { '*': ['/'] } };
    const any = (p: string) => authorizeWorkspace('bob', p, open, rp);
    for (const p of ['broker/data', 'broker/data/logs', 'broker/keys', 'broker/conf', 'broker', 'home/bob/proj/data-link']) {
      assert.throws(() => any(join(t, p)), /is or contains a folder of the broker itself/, p);
    }
    assert.throws(() => any(t), /is or contains a folder of the broker itself/);
    assert.throws(() => any('/'), /root folder of the broker machine/);
    assert.throws(() => any(join(t, 'home/bob/root-link')), /root folder of the broker machine/);
    assert.throws(() => any('/..'), /root folder/);
    assert.equal(any(join(t, 'home/alice')), join(t, 'home/alice'));
  });

  it('refuses relative paths, NUL bytes and folders that do not exist', () => {
    refused('bob', 'home/bob/proj', /must be an absolute path/);
    refused('bob', '../../etc', /must be an absolute path/);
    refused('bob', `${join(t, 'home/bob/proj')}\0/x`, /must be an absolute path/);
    refused('bob', join(t, 'home/bob/nope'), /does not exist on the broker machine/);
    refused('bob', '', /must be an absolute path/);
  });

  it('without workspaceRoots refuses every broker-read workspace, pointing at --serve-workspace', () => {
    assert.throws(() => authorizeWorkspace('bob', join(t, 'home/bob/proj'), { ...policy, roots: null }, rp), (e: Error & { hint?: string }) => /does not read workspaces from its own disk/.test(e.message) && /--serve-workspace/.test(e.hint ?? ''));
  });

  it('a user name cannot climb out of its root through {user}', () => {
    refused('..', join(t, 'home'), /outside|is or contains/);
  });

  it('normalises absolute paths without touching the disk', () => {
    assert.equal(normalAbsolute('/a//b/./c/../d/'), '/a/b/d');
    assert.equal(normalAbsolute('/../..'), '/');
    assert.equal(normalAbsolute('a/b'), undefined);
    assert.equal(normalAbsolute('/a\0'), undefined);
  });
});
