/**
 * SshPool against an SSH server in this process (ssh2's own server, no sshd): a command whose channel opens, prints,
 * exits and closes in one burst of packets, as a fast command on a busy broker is read. Its exit code must still be
 * the one the server sent, not "no exit status".
 */
import assert from 'node:assert/strict';
import { SshPool } from '../../server/hosts/ssh.ts';
import { testSshServer, type TestSshServer } from '../support/sshServer.ts';

describe('SshPool: exit status of commands that end at once', () => {
  let server: TestSshServer;
  let pool: SshPool;

  before(async () => {
    server = await testSshServer((ch, command) => {
      // Everything in one turn: the exec's success, output, exit status, EOF and close leave together.
      const code = Number(/exit (\d+)/.exec(command)?.[1] ?? 0);
      ch.write(`ran ${code}\n`);
      ch.stderr.write('a login shell notice\n');
      ch.exit(code);
      ch.end();
    });
    pool = new SshPool({ name: 'h', address: '127.0.0.1', port: server.port, user: 'root', identityFile: server.identityFile, knownHosts: server.knownHosts, agent: false });
  });

  after(() => {
    pool?.close();
    server?.close();
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
