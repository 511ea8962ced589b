/**
 * An SSH server in the test process (ssh2's own, no sshd) for unit tests of SshPool: it accepts any login and hands
 * each exec to `onExec`. Gives the key file and known_hosts file a pool needs; `knownAt(port)` writes the host key for
 * another port (a relay in front of the server).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2, { type ServerChannel } from 'ssh2';

const { Server, utils } = ssh2;

export interface TestSshServer {
  port: number;
  identityFile: string;
  knownHosts: string;
  /** Trusts the server's key at 127.0.0.1:`port` (replacing the file). */
  knownAt(port: number): void;
  close(): void;
}

export async function testSshServer(onExec: (ch: ServerChannel, command: string) => void): Promise<TestSshServer> {
  const dir = mkdtempSync(join(tmpdir(), 'gpurun-sshserver-'));
  const hostKey = utils.generateKeyPairSync('ed25519');
  const client = utils.generateKeyPairSync('ed25519');
  const identityFile = join(dir, 'id');
  const knownHosts = join(dir, 'known_hosts');
  writeFileSync(identityFile, client.private);
  const server = new Server({ hostKeys: [hostKey.private] }, (conn) => {
    // A client that drops its connection (a pool giving it up, a relay cut) resets the socket: not a test failure.
    conn.on('error', () => {});
    conn.on('authentication', (ctx) => ctx.accept());
    conn.on('session', (accept) => {
      accept().on('exec', (acceptExec, _reject, info) => onExec(acceptExec(), info.command));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const pub = hostKey.public.trim().split(/\s+/).slice(0, 2).join(' ');
  const knownAt = (p: number) => writeFileSync(knownHosts, `[127.0.0.1]:${p} ${pub}\n`);
  knownAt(port);
  return {
    port,
    identityFile,
    knownHosts,
    knownAt,
    close() {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
