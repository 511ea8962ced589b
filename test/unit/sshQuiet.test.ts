/**
 * SshPool over a link that goes dark: an SSH server in this process (ssh2's own, no sshd) behind a TCP relay that
 * can stop passing bytes both ways (buffering them, as a link whose packets are dropped and later retransmitted
 * does). A pool that never gives up by keepalives keeps its channels over the dark spell, sends new work over a new
 * connection meanwhile, and gives everything up only when told to (dropAll).
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { SshPool } from '../../server/hosts/ssh.ts';
import { testSshServer, type TestSshServer } from '../support/sshServer.ts';

/** A TCP relay to `port`; `dark(true)` holds every byte of the connections open so far until `dark(false)`. */
function relay(port: number): { server: NetServer; dark(on: boolean): void; connections(): number } {
  const held: Array<{ on: boolean; flush: () => void }> = [];
  let count = 0;
  const server = createServer((a: Socket) => {
    count++;
    const b = new (a.constructor as typeof Socket)();
    b.connect(port, '127.0.0.1');
    const state = { on: false, queue: [] as Array<[Socket, Buffer]>, flush() {} };
    state.flush = () => {
      for (const [to, d] of state.queue.splice(0)) to.write(d);
    };
    const pass = (from: Socket, to: Socket) => from.on('data', (d: Buffer) => (state.on ? state.queue.push([to, d]) : to.write(d)));
    pass(a, b);
    pass(b, a);
    a.on('close', () => b.destroy());
    b.on('close', () => a.destroy());
    a.on('error', () => {});
    b.on('error', () => {});
    held.push(state);
  });
  return {
    server,
    dark(on) {
      for (const s of held) {
        s.on = on;
        if (!on) s.flush();
      }
    },
    connections: () => count,
  };
}

describe('SshPool: a link that goes dark for longer than the keepalives tolerate', function () {
  this.timeout(20_000);
  let server: TestSshServer;
  let link: ReturnType<typeof relay>;
  let port: number;
  const pools: SshPool[] = [];

  before(async () => {
    server = await testSshServer((ch, command) => {
      if (command.includes('echo-lines')) {
        // A long-lived stream (a relay's SFTP, a log follower): answers each line it reads.
        ch.on('data', (d: Buffer) => ch.write(`got ${d.toString()}`));
        return;
      }
      ch.write('ok\n');
      ch.exit(0);
      ch.end();
    });
    link = relay(server.port);
    await new Promise<void>((r) => link.server.listen(0, '127.0.0.1', r));
    port = (link.server.address() as AddressInfo).port;
    server.knownAt(port);
  });

  after(() => {
    for (const p of pools) p.close();
    link?.server.close();
    server?.close();
  });

  const pool = (toleranceMs?: number) => {
    const p = new SshPool({ name: 'h', address: '127.0.0.1', port, user: 'root', identityFile: server.identityFile, knownHosts: server.knownHosts, agent: false }, () => {}, undefined, { keepaliveMs: 100, quietMs: 300, ...(toleranceMs === undefined ? {} : { keepaliveToleranceMs: toleranceMs }) });
    pools.push(p);
    return p;
  };

  /** Opens the long-lived stream and checks that it answers. */
  const stream = async (p: SshPool) => {
    const ch = await p.spawn(['echo-lines']);
    const lines: string[] = [];
    ch.on('data', (d: Buffer) => lines.push(d.toString()));
    let closed = false;
    ch.on('close', () => (closed = true));
    const ask = async (what: string) => {
      ch.write(`${what}\n`);
      for (let i = 0; i < 100 && !lines.join('').includes(`got ${what}\n`); i++) await sleep(20);
      return lines.join('').includes(`got ${what}\n`);
    };
    return { ask, closed: () => closed, ch };
  };

  it('with the default tolerance, a dark spell of 1.5 s (15 keepalives) ends the stream', async () => {
    const p = pool();
    const s = await stream(p);
    assert.ok(await s.ask('one'));
    link.dark(true);
    await sleep(1_500);
    link.dark(false);
    await sleep(200);
    assert.equal(s.closed(), true, 'given up by its keepalives');
  });

  it('never given up by keepalives: the stream waits out the dark spell and goes on; new work goes over a new connection meanwhile', async () => {
    const p = pool(Infinity);
    const s = await stream(p);
    assert.ok(await s.ask('before'));
    const before = link.connections();
    link.dark(true);
    await sleep(600);
    assert.equal(p.quietCount(), 1, 'the silent connection is quiet');
    // New work does not queue behind the silent connection: it opens another one (not dark) and is answered.
    const r = await p.exec(['true'], { timeoutMs: 2_000 });
    assert.equal(r.stdout, 'ok\n');
    assert.equal(link.connections(), before + 1);
    await sleep(900);
    assert.equal(s.closed(), false, 'still open after 1.5 s without an answer');
    link.dark(false);
    assert.ok(await s.ask('after'), 'the stream carries on where it was');
    await sleep(300);
    assert.equal(p.quietCount(), 0, 'heard from again: no longer quiet');
    p.dropAll();
    await sleep(100);
    assert.equal(s.closed(), true, 'dropAll gives every connection up, with its channels');
    assert.equal((await p.exec(['true'])).stdout, 'ok\n', 'and the next caller opens a new one');
  });
});
