import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { duplexPair, type Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClientSftp, ClientSide } from '../../server/hosts/clientSide.ts';
import { serveSftp, SSH_FXP, type SftpSession } from '../../server/hosts/sftpGuard.ts';
import { walkTree } from '../../server/hosts/workspaceSide.ts';
import { EXT_LIST, SnapshotFeed } from '../../server/hosts/snapshotFeed.ts';
import { rooted, treeRecords, type TreeEntry } from '../../server/hosts/snapshotPlan.ts';
import { sftpPacket, sftpString } from '../support/sftpPackets.ts';

/** A client's confined SFTP session on one end of a pair, the broker's ClientSftp on the other. */
function connect(root: string): { sftp: ClientSftp; session: SftpSession; broker: Duplex } {
  const [broker, client] = duplexPair();
  const session = serveSftp(root, client, client, { readOnly: false, feed: true });
  return { sftp: new ClientSftp(broker), session, broker };
}

/** Extracts the chunks with GNU tar into `dir`. */
async function untar(chunks: AsyncIterable<Buffer>, dir: string): Promise<void> {
  const t = spawn('tar', ['-x', '-f', '-', '--no-same-owner', '-C', dir], { stdio: ['pipe', 'ignore', 'pipe'] });
  let err = '';
  t.stderr.on('data', (d) => (err += d));
  const done = new Promise<number | null>((r) => t.on('close', r));
  for await (const c of chunks) if (!t.stdin.write(c)) await new Promise((r) => t.stdin.once('drain', r));
  t.stdin.end();
  assert.equal(await done, 0, err);
}

describe('client-served workspace: the broker on the client\'s SFTP session', () => {
  let base: string;
  let ws: string;
  let links: { sftp: ClientSftp; session: SftpSession }[] = [];
  beforeEach(() => {
    base = mkdtempSync(join(tmpdir(), 'gpurun-clientside-'));
    ws = join(base, 'ws');
    mkdirSync(join(ws, 'pkg', 'sub dir', 'ünï'), { recursive: true });
    mkdirSync(join(base, 'secret'));
    writeFileSync(join(base, 'secret', 'key'), 'do not read');
    writeFileSync(join(ws, 'pkg', '__init__.py'), '');
    writeFileSync(join(ws, 'pkg', 'sub dir', 'ünï', 'a.py'), 'X = 1\n');
    writeFileSync(join(ws, 'big.bin'), Buffer.alloc(700_000, 7));
    writeFileSync(join(ws, 'empty'), '');
    symlinkSync('/usr/bin/python3', join(ws, 'python3'));
    symlinkSync(join(base, 'secret'), join(ws, 'out'));
    utimesSync(join(ws, 'pkg', '__init__.py'), 1_700_000_000.123, 1_700_000_000.123);
  });
  afterEach(() => {
    for (const l of links) l.session.close();
    links = [];
    rmSync(base, { recursive: true, force: true });
  });

  it('opens the session and sees the snapshot feed; lists and stats what the client\'s disk has, nothing outside', async () => {
    const l = connect(ws);
    links.push(l);
    assert.equal(await l.sftp.init(), true, 'the client advertises the feed in its VERSION');
    const side = new ClientSide(l.sftp, ws);
    const tree = await side.walk();
    const local = walkTree(ws);
    assert.deepEqual([...tree.keys()].sort(), [...local.keys()].sort());
    for (const [p, e] of local) assert.deepEqual(tree.get(p), e, p);
    const got = await side.entries(['pkg/__init__.py', 'out/key', '../secret/key', '/etc/passwd', 'gone']);
    assert.deepEqual([...got.keys()], ['pkg/__init__.py'], 'a path through a link out, .., absolute and gone ones are left out');
    assert.equal(got.get('pkg/__init__.py')!.mtimeMs, lstatSync(join(ws, 'pkg', '__init__.py')).mtimeMs);
  });

  it('sends files, folders and links as one tar that GNU tar extracts as they are on disk (names, bytes, links, mtimes)', async () => {
    const l = connect(ws);
    links.push(l);
    await l.sftp.init();
    const side = new ClientSide(l.sftp, ws);
    const paths = [...walkTree(ws).keys()].sort();
    const into = join(base, 'cache');
    mkdirSync(into);
    await untar(side.tar(paths), into);
    const want = walkTree(ws);
    const have = walkTree(into);
    assert.deepEqual([...have.keys()].sort(), [...want.keys()].sort());
    for (const [p, e] of want) {
      const h = have.get(p)!;
      assert.equal(h.type, e.type, p);
      if (e.type === 'f') {
        assert.deepEqual(readFileSync(join(into, p)), readFileSync(join(ws, p)), p);
        assert.ok(Math.abs(h.mtimeMs - e.mtimeMs) < 1, `${p}: mtime ${h.mtimeMs} vs ${e.mtimeMs}`);
      }
    }
    assert.equal(readlinkSync(join(into, 'python3')), '/usr/bin/python3', "a link's text travels as it is");
    assert.equal(readlinkSync(join(into, 'out')), join(base, 'secret'), 'the link out is sent as a link, never followed');
    // Asked for a path through the link out: refused by the client, left out of the tar.
    const refused = join(base, 'refused');
    mkdirSync(refused);
    await untar(side.tar(['out/key', 'pkg/__init__.py']), refused);
    assert.deepEqual([...walkTree(refused).keys()].sort(), ['pkg', 'pkg/__init__.py']);
  });

  it('carries the host\'s sshfs on the same session: its ids come back as it sent them while the broker\'s own requests run', async () => {
    const l = connect(ws);
    links.push(l);
    await l.sftp.init();
    const [hostEnd, sshfs] = duplexPair();
    l.sftp.attachHost(hostEnd);
    const answers: Buffer[] = [];
    sshfs.on('data', (d: Buffer) => answers.push(d));
    const init = Buffer.alloc(9);
    init.writeUInt32BE(5, 0);
    init.writeUInt8(SSH_FXP.INIT, 4);
    init.writeUInt32BE(3, 5);
    sshfs.write(init);
    // The host's ids collide with the broker's on purpose.
    for (const id of [1, 2, 3]) sshfs.write(sftpPacket(SSH_FXP.REALPATH, id, sftpString('pkg')));
    const side = new ClientSide(l.sftp, ws);
    const [tree] = await Promise.all([side.walk(), side.entries(['empty'])]);
    assert.ok(tree.has('pkg/__init__.py'));
    sshfs.write(sftpPacket(SSH_FXP.LSTAT, 9, sftpString(`${ws}/out/key`)));
    for (let i = 0; i < 50 && Buffer.concat(answers).length < 40; i++) await sleep(20);
    await sleep(100);
    const all = Buffer.concat(answers);
    const got: Array<{ type: number; id: number }> = [];
    for (let off = 0; off + 4 <= all.length; off += 4 + all.readUInt32BE(off)) got.push({ type: all.readUInt8(off + 4), id: all.readUInt32BE(off + 5) });
    assert.equal(got[0].type, 2, 'the host\'s INIT is answered with VERSION');
    assert.deepEqual(got.slice(1).map((g) => g.id).sort(), [1, 2, 3, 9]);
    assert.equal(got.find((g) => g.id === 9)!.type, SSH_FXP.STATUS, 'the guard still refuses the host a path out');
  });

  it('the watch answers with a gap record first, then the names of what changed, as they change', async () => {
    const l = connect(ws);
    links.push(l);
    await l.sftp.init();
    const side = new ClientSide(l.sftp, ws);
    const names: string[] = [];
    let gaps = 0;
    const w = side.watch([], (n) => names.push(n), (e) => assert.fail(e), () => gaps++);
    await w.ready;
    assert.equal(gaps, 1);
    await sleep(100);
    appendFileSync(join(ws, 'pkg', 'sub dir', 'ünï', 'a.py'), 'Y = 2\n');
    writeFileSync(join(ws, 'new.py'), 'print(1)\n');
    for (let i = 0; i < 100 && !(names.includes('new.py') && names.includes('pkg/sub dir/ünï/a.py')); i++) await sleep(20);
    w.close();
    assert.ok(names.includes('new.py'), names.join(','));
    assert.ok(names.includes('pkg/sub dir/ünï/a.py'), names.join(','));
    assert.equal(gaps, 1);
  });

  it('the client pages a listing: the pages, joined, are the whole listing, cut anywhere (inside a record, a character)', async () => {
    for (let i = 0; i < 50; i++) writeFileSync(join(ws, 'pkg', `módulo-${i}.py`), '');
    const feed = new SnapshotFeed(ws, { page: 37 });
    const pages: Buffer[] = [];
    for (let offset = 0; ; ) {
      const page = await feed.answer(EXT_LIST, Buffer.from(String(offset)));
      pages.push(page.subarray(1));
      offset += page.length - 1;
      if (page[0] !== 0x31) break;
    }
    assert.ok(pages.length > 10, `${pages.length} pages`);
    assert.equal(Buffer.concat(pages).toString('utf8'), treeRecords(walkTree(ws)));
    await assert.rejects(feed.answer(EXT_LIST, Buffer.from('-1')), /bad listing offset/);
    feed.close();
  });

  it('entries a real walk could not list (under a symlink or a file) are dropped before anything is sent', () => {
    const f: TreeEntry = { type: 'f', size: 1, mtimeMs: 1 };
    const tree = new Map<string, TreeEntry>([
      ['a', { type: 'l' as const, size: 4, mtimeMs: 1 }],
      ['a/passwd', f],
      ['d', { type: 'd' as const, size: 0, mtimeMs: 1 }],
      ['d/x', f],
      ['d/x/y', f],
      ['orphan/z', f],
    ]);
    assert.deepEqual([...rooted(tree).keys()], ['a', 'd', 'd/x']);
  });

  it('a session that is not a client\'s (the broker\'s own relay, a host\'s sshfs) has no feed: not advertised, refused', async () => {
    const [broker, other] = duplexPair();
    const session = serveSftp(ws, other, other, { readOnly: false });
    const sftp = new ClientSftp(broker);
    links.push({ sftp, session });
    assert.equal(await sftp.init(), false);
    await assert.rejects(new ClientSide(sftp, ws).walk(), /not allowed by gpurun/);
  });

  it('a client that goes away fails the broker\'s requests with a clear error, and ends the host\'s channel', async () => {
    const l = connect(ws);
    links.push(l);
    await l.sftp.init();
    const [hostEnd] = duplexPair();
    l.sftp.attachHost(hostEnd);
    const closed = new Promise((r) => hostEnd.once('close', r));
    l.session.close();
    await assert.rejects(new ClientSide(l.sftp, ws).walk(), /the client that serves the workspace has gone/);
    await closed;
  });
});
