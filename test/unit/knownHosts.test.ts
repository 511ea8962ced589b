import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHmac, randomBytes } from 'node:crypto';
import { checkHostKey, fingerprintSha256, hostMatches, keyTypeOf, knownHostsName, knownKeyTypes, parseKnownHosts } from '../../server/hosts/knownHosts.ts';

describe('known_hosts checking', () => {
  let dir: string;
  let pub: string;
  let blob: Buffer;
  let otherBlob: Buffer;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gpurun-kh-'));
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'k')]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'k2')]);
    pub = readFileSync(join(dir, 'k.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
    blob = Buffer.from(pub.split(' ')[1], 'base64');
    otherBlob = Buffer.from(readFileSync(join(dir, 'k2.pub'), 'utf8').split(' ')[1], 'base64');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('computes the fingerprint ssh-keygen prints', () => {
    const printed = execFileSync('ssh-keygen', ['-lf', join(dir, 'k.pub')], { encoding: 'utf8' }).split(' ')[1];
    assert.equal(fingerprintSha256(blob), printed);
    assert.equal(keyTypeOf(blob), 'ssh-ed25519');
  });

  it('names hosts as OpenSSH does', () => {
    assert.equal(knownHostsName('10.0.0.5', 22), '10.0.0.5');
    assert.equal(knownHostsName('10.0.0.5', 2222), '[10.0.0.5]:2222');
  });

  it('accepts a listed key, by plain, wildcard and hashed names', () => {
    const salt = randomBytes(20);
    const hashed = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update('[gpu7]:2222').digest('base64')}`;
    const text = `# comment\ngpu1,gpu2 ${pub}\n*.lab ${pub}\n${hashed} ${pub}\n`;
    const e = parseKnownHosts(text);
    assert.deepEqual(checkHostKey(e, 'gpu2', blob), { ok: true });
    assert.deepEqual(checkHostKey(e, 'n3.lab', blob), { ok: true });
    assert.deepEqual(checkHostKey(e, '[gpu7]:2222', blob), { ok: true });
    assert.deepEqual(knownKeyTypes(e, 'gpu1'), ['ssh-ed25519']);
    assert.equal(hostMatches('*.lab,!bad.lab', 'bad.lab'), false);
  });

  it('refuses an unknown key with its fingerprint and the line that trusts it', () => {
    const v = checkHostKey(parseKnownHosts(`other ${pub}\n`), '[10.1.1.1]:2222', blob);
    assert.equal(v.ok, false);
    if (v.ok) return;
    assert.equal(v.kind, 'unknown');
    assert.equal(v.fingerprint, fingerprintSha256(blob));
    assert.equal(v.lineToAdd, `[10.1.1.1]:2222 ${pub}`);
  });

  it('refuses a changed key and names the line it conflicts with', () => {
    const v = checkHostKey(parseKnownHosts(`# c\ngpu1 ${pub}\n`), 'gpu1', otherBlob);
    assert.equal(v.ok, false);
    if (v.ok) return;
    assert.equal(v.kind, 'changed');
    assert.deepEqual(v.conflictingLines, [2]);
  });

  it('refuses a revoked key even when it is also listed', () => {
    const v = checkHostKey(parseKnownHosts(`gpu1 ${pub}\n@revoked * ${pub}\n`), 'gpu1', blob);
    assert.equal(v.ok, false);
    assert.equal(!v.ok && v.kind, 'revoked');
  });
});
