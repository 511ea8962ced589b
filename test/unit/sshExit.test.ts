/**
 * SshPool against an SSH server in this process (ssh2's own server, no sshd): a command whose channel opens, prints,
 * exits and closes in one burst of packets, as a fast command on a busy broker is read. Its exit code must still be
 * the one the server sent, not "no exit status".
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import ssh2 from 'ssh2';
import { SshPool } from '../../server/hosts/ssh.ts';

const { Server, utils } = ssh2;

describe('SshPool: exit status of commands that end at once', () => {
  let server: InstanceType<typeof Server>;
  let pool: SshPool;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpurun-sshexit-'));
    const hostKey = utils.generateKeyPairSync('ed25519');
    const client = utils.generateKeyPairSync('ed25519');
    writeFileSync(join(dir, 'id'), client.private);
    server = new Server({ hostKeys: [hostKey.private] }, (conn) => {
      conn.on('authentication', (ctx) => ctx.accept());
      conn.on('session', (accept) => {
        accept().on('exec', (acceptExec, _reject, info) => {
          const ch = acceptExec();
          // Everything in one turn: the exec's success, output, exit status, EOF and close leave together.
          const code = Number(/exit (\d+)/.exec(info.command)?.[1] ?? 0);
          ch.write(`ran ${code}\n`);
          ch.stderr.write('a login shell notice\n');
          ch.exit(code);
          ch.end();
        });
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const pub = hostKey.public.trim().split(/\s+/).slice(0, 2).join(' ');
    writeFileSync(join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${pub}\n`);
    pool = new SshPool({ name: 'h', address: '127.0.0.1', port, user: 'root', identityFile: join(dir, 'id'), knownHosts: join(dir, 'known_hosts'), agent: false });
  });

  after(() => {
    pool?.close();
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports each command\'s own exit code and output, many at once', async () => {
    const codes = Array.from({ length: 40 }, (_, i) => i % 5);
    // The broker's event loop busy while the answers arrive: they are read in one go.
    const results = Promise.all(codes.map((c) => pool.exec(['sh', '-c', `exit ${c}`])));
    const until = Date.now() + 200;
    while (Date.now() < until) {
      /* busy */
    }
    const got = await results;
    assert.deepEqual(got.map((r) => r.code), codes);
    assert.deepEqual(got.map((r) => r.stdout), codes.map((c) => `ran ${c}\n`));
    assert.ok(got.every((r) => r.stderr === 'a login shell notice\n'));
  });

  it('run() of a command that succeeds at once does not fail', async () => {
    await pool.check();
    const out = await Promise.all(Array.from({ length: 16 }, () => pool.run(['mkdir', '-p', '/x'], 'creating the mount point')));
    assert.equal(out.length, 16);
  });
});
