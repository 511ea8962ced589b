/**
 * A team broker speaks TLS: a self-signed certificate made on first start (0600 in dataDir, fingerprint printed),
 * pinned by the CLI with GPURUN_BROKER_FINGERPRINT (a mismatch is refused naming both fingerprints; no pin is
 * refused saying what to set), a CA-signed certificate trusted through the system's CAs, plain HTTP on a network
 * address only with "tls": false, and the workspace Upgrade (gpurun serve-workspace) over TLS. Loopback
 * addresses 127.0.2.1–3.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, createToken, gpurun, gpurunSpawn, requirePart, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, workspaceIn, type BrokerProc } from '../support/harness.ts';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('team broker over TLS', function () {
  this.timeout(90_000);
  let dir: string;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;

  before(async function () {
    requirePart(this, 'openssl', hasOpenssl(), 'the broker makes its self-signed certificate with openssl');
    dir = scratch();
    // A down SSH host lets a client-served job be submitted and wait, so the workspace Upgrade can be tried.
    broker = await startBrokerProcess(join(dir, 'b'), {
      listen: '127.0.2.1:0',
      tls: true,
      hosts: [{ name: 'local', type: 'local', cpus: 1, memory: '2G' }, { name: 'far', type: 'ssh', cpus: 4, memory: '2G', address: '127.0.2.2', port: 2222, user: 'root', identityFile: join(dir, 'keys', 'nokey'), knownHosts: join(dir, 'keys', 'known_hosts') }],
    });
    env = testEnv(join(dir, 'client'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'alice'), GPURUN_BROKER_FINGERPRINT: broker.fingerprint });
  });
  after(async () => {
    await stopBroker(broker);
    if (dir) cleanup(dir);
  });

  it('makes a self-signed certificate on first start, stores it 0600 and prints its fingerprint', () => {
    assert.match(broker.url, /^https:\/\/127\.0\.2\.1:\d+$/);
    assert.match(broker.fingerprint!, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    for (const f of ['cert.pem', 'key.pem']) assert.equal(statSync(join(broker.home, 'data', 'tls', f)).mode & 0o777, 0o600, f);
    const fromFile = execFileSync('openssl', ['x509', '-in', join(broker.home, 'data', 'tls', 'cert.pem'), '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' });
    assert.equal(fromFile.trim().split('=')[1], broker.fingerprint);
  });

  it('runs a job through the pinned certificate: submit, events, logs', async () => {
    const r = await gpurun(['run', '--gpus', '0', '--workspace', workspaceIn(dir), '--', 'echo', 'over tls'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /over tls/);
  });

  it('refuses a certificate that does not match the pin, naming both fingerprints', async () => {
    const wrong = 'AA:'.repeat(31) + 'AA';
    const r = await gpurun(['ls'], { ...env, GPURUN_BROKER_FINGERPRINT: wrong });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`fingerprint ${broker.fingerprint}, but GPURUN_BROKER_FINGERPRINT is ${wrong}`));
  });

  it('without a pin, refuses the self-signed certificate and says what to set', async () => {
    const { GPURUN_BROKER_FINGERPRINT: _fp, ...noPin } = env;
    const r = await gpurun(['ls'], noPin);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /certificate this machine does not trust/);
    assert.match(r.stderr, /GPURUN_BROKER_FINGERPRINT/);
  });

  it('serves a client workspace over the TLS upgrade (gpurun serve-workspace)', async () => {
    const sub = await fetch(`${broker.url.replace('https', 'http')}/v1/health`).catch((e: Error) => e);
    assert.ok(sub instanceof Error, 'plain HTTP is not answered on the TLS port');
    // A job taking its workspace from the client (as the extension submits it); 3 CPUs fit only the (down) SSH host.
    const body = JSON.stringify({ command: ['true'], workspace: workspaceIn(dir), gpus: 0, cpus: 3, workspaceFrom: 'client' });
    const { BrokerClient } = await import('../../server/protocol/client.ts');
    const c = new BrokerClient({ address: broker.url, token: env.GPURUN_TOKEN!, fingerprint: broker.fingerprint! });
    const job = await c.submit(JSON.parse(body));
    const serving = gpurunSpawn(['serve-workspace', job.id, '--workspace', workspaceIn(dir)], env);
    let err = '';
    serving.stderr!.on('data', (d) => (err += d));
    await waitFor('the broker to take the workspace stream', () => /client serves a workspace/.test(broker.log()), 20_000);
    await c.cancel(job.id);
    const code = await new Promise<number | null>((res) => serving.on('close', res));
    assert.equal(code, 0, err);
    await c.close();
  });
});

describe('TLS settings', function () {
  this.timeout(60_000);
  let dir: string;
  before(function () {
    requirePart(this, 'openssl', hasOpenssl(), 'certificates are made with openssl');
    dir = scratch();
  });
  after(() => dir && cleanup(dir));

  it('listens with TLS on a network address by default, and plain HTTP there only with "tls": false', async () => {
    const a = await startBrokerProcess(join(dir, 'a'), { listen: '0.0.0.0:0' });
    assert.match(a.url, /^https:\/\//);
    await stopBroker(a);
    const b = await startBrokerProcess(join(dir, 'b'), { listen: '0.0.0.0:0', tls: false });
    assert.match(b.url, /^http:\/\//);
    assert.match(b.log(), /plain HTTP on a TCP address because the config says .*tls.*: false/);
    await stopBroker(b);
  });

  it('uses a CA-signed certificate from the config, trusted through the CAs the client trusts', async () => {
    const ca = join(dir, 'ca');
    execFileSync('mkdir', ['-p', ca]);
    const o = (args: string[]) => execFileSync('openssl', args, { cwd: ca, stdio: 'pipe' });
    o(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=test CA', '-keyout', 'ca.key', '-out', 'ca.pem']);
    o(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=127.0.2.3', '-keyout', 'srv.key', '-out', 'srv.csr']);
    writeFileSync(join(ca, 'ext'), 'subjectAltName=IP:127.0.2.3\n');
    o(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext', '-out', 'srv.pem']);
    const b = await startBrokerProcess(join(dir, 'c'), { listen: '127.0.2.3:0', tls: { cert: join(ca, 'srv.pem'), key: join(ca, 'srv.key') } });
    try {
      const env = testEnv(join(dir, 'cl'), { GPURUN_BROKER: b.url, GPURUN_TOKEN: await createToken(b, 'bob'), NODE_EXTRA_CA_CERTS: join(ca, 'ca.pem') });
      const r = await gpurun(['ls'], env);
      assert.equal(r.code, 0, r.stderr);
      const untrusted = await gpurun(['ls'], { ...env, NODE_EXTRA_CA_CERTS: '' });
      assert.equal(untrusted.code, 1);
      assert.match(untrusted.stderr, /does not trust/);
    } finally {
      await stopBroker(b);
    }
  });
});
