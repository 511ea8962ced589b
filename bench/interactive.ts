/**
 * Interactive jobs on an SSH Docker host over loopback (sshd on 127.0.9.2, the real engine):
 *   1. keystroke round trip: one byte typed into `docker exec -t … cat` in the job's container until its terminal's
 *      echo is back, through the broker (exec upgrade → ssh2 → sshd) against a direct `ssh -tt` to the same host
 *      running the same `docker exec -t` (p50/p99 of 300 each, interleaved). Goal: ≤ 20 ms over direct.
 *   2. a forwarded port: `gpurun forward` against `ssh -L` to the container's address, both to the same HTTP server
 *      in the job: a small GET (p50 of 50) and a 64 MiB download (MB/s).
 * Needs root, sshd, sshfs, Docker and local/python:3 (test/setup/30-ssh-docker.sh).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { CLI, NODE, cleanup, createToken, scratch, startBrokerProcess, stopBroker, waitFor, type BrokerProc } from '../test/support/harness.ts';
import { makeSshHosts, mountedUnder, sshHostsMissing, type TestHostSet } from '../test/support/sshHosts.ts';
import { BrokerClient } from '../server/protocol/client.ts';
import { encodeExecRequest, encodeFrame, EXEC_HEADER, EXEC_UPGRADE, FRAME, FrameReader } from '../server/protocol/interactive.ts';
import { fmt, percentile } from './_support.ts';

const ROUNDS = 300;
const ADDRESS = '127.0.9.2';

/** Sends one byte and resolves when `read` sees it come back, ROUNDS times (`i`: which byte). */
async function roundTrips(send: (b: Buffer) => void, onEcho: (cb: (d: Buffer) => void) => void, k: number, out: number[]): Promise<void> {
  let waiting: ((d: Buffer) => void) | undefined;
  onEcho((d) => waiting?.(d));
  const ch = Buffer.from(String.fromCharCode(97 + (k % 26)));
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    waiting = (d) => {
      if (d.includes(ch)) {
        waiting = undefined;
        resolve();
      }
    };
    send(ch);
  });
  out.push(performance.now() - t0);
}

/** An exec stream with a terminal running `cat` in the container, through the broker. */
async function brokerTerminal(client: BrokerClient, id: string): Promise<{ send(b: Buffer): void; listen(cb: (d: Buffer) => void): void; close(): void }> {
  const sock: Duplex = await client.upgrade(`/v1/jobs/${id}/exec`, EXEC_UPGRADE, 'bench exec', { [EXEC_HEADER]: encodeExecRequest({ command: ['cat'], tty: true, rows: 24, cols: 80, term: 'xterm' }) });
  const reader = new FrameReader();
  let cb: (d: Buffer) => void = () => {};
  sock.on('data', (c: Buffer) => {
    for (const f of reader.push(c)) if (f.type === FRAME.stdout) cb(f.data);
  });
  return { send: (b) => sock.write(encodeFrame(FRAME.stdin, b)), listen: (f) => (cb = f), close: () => sock.destroy() };
}

function directTerminal(set: TestHostSet, container: string): { proc: ChildProcess; send(b: Buffer): void; listen(cb: (d: Buffer) => void): void; close(): void } {
  const proc = spawn('ssh', ['-tt', '-q', '-i', set.clientKey, '-o', `UserKnownHostsFile=${set.knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-p', '2222', `root@${ADDRESS}`, 'docker', 'exec', '-it', container, 'cat'], { stdio: ['pipe', 'pipe', 'ignore'] });
  let cb: (d: Buffer) => void = () => {};
  proc.stdout!.on('data', (d: Buffer) => cb(d));
  return { proc, send: (b) => proc.stdin!.write(b), listen: (f) => (cb = f), close: () => proc.kill() };
}

async function download(url: string): Promise<number> {
  const t0 = performance.now();
  const r = await fetch(url);
  let n = 0;
  for await (const c of r.body!) n += (c as Uint8Array).length;
  return n / 1e6 / ((performance.now() - t0) / 1000);
}

async function smallGets(url: string, n: number): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await (await fetch(url)).text();
    xs.push(performance.now() - t0);
  }
  return percentile(xs, 50);
}

export async function run(): Promise<void> {
  const missing = sshHostsMissing();
  if (missing) {
    console.log(`  skipped: ${missing}`);
    return;
  }
  const dir = scratch('gpurun-bench-interactive-');
  let set: TestHostSet | undefined;
  let broker: BrokerProc | undefined;
  const procs: ChildProcess[] = [];
  try {
    set = await makeSshHosts(join(dir, 'hosts'), [{ name: 'gpu1', address: ADDRESS, gpus: [{ name: 'NVIDIA L4', memoryMiB: 23034 }] }]);
    const ws = join(dir, 'ws');
    mkdirSync(ws);
    const host = { type: 'ssh', name: 'gpu1', address: ADDRESS, user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir: join(dir, 'hostwork'), mount: { transport: 'relay' } };
    broker = await startBrokerProcess(join(dir, 'home'), { hosts: [host], defaults: { image: 'local/python:3', gpus: 1, memory: '512M' } });
    const token = await createToken(broker, 'bench');
    const client = new BrokerClient({ address: broker.url, token });
    await waitFor('the host up', async () => (await client.hosts()).some((h) => h.state === 'up'), 30_000);
    const job = await client.submit({ command: ['sh', '-c', 'head -c 67108864 /dev/zero >/tmp/z && echo hi >/tmp/s && cd /tmp && exec python3 -m http.server 8000'], workspace: ws });
    await waitFor('the job to run', async () => (await client.get(job.id)).state === 'running', 60_000);
    const container = `gpurun-${job.id}`;

    // 1. Keystrokes, interleaved: broker, direct, broker, …
    const viaBroker = await brokerTerminal(client, job.id);
    const direct = directTerminal(set, container);
    procs.push(direct.proc);
    await new Promise((r) => setTimeout(r, 1500));
    const b: number[] = [];
    const d: number[] = [];
    for (let k = 0; k < ROUNDS; k++) {
      await roundTrips(viaBroker.send, viaBroker.listen, k, b);
      await roundTrips(direct.send, direct.listen, k, d);
    }
    viaBroker.close();
    direct.close();
    const over = percentile(b, 50) - percentile(d, 50);
    const signed = (x: number) => `${x < 0 ? '−' : '+'}${fmt(Math.abs(x))}`;
    console.log(`  keystroke round trip (${ROUNDS} each): through the broker p50 ${fmt(percentile(b, 50))} p99 ${fmt(percentile(b, 99))}; direct ssh p50 ${fmt(percentile(d, 50))} p99 ${fmt(percentile(d, 99))}`);
    console.log(`      over direct: p50 ${signed(over)}, p99 ${signed(percentile(b, 99) - percentile(d, 99))} (goal ≤ 20 ms: ${over <= 20 ? 'met' : 'NOT met'})`);

    // 2. A forwarded port against ssh -L, both to the HTTP server in the job.
    await waitFor('the server in the job', () => execFileSync('docker', ['exec', container, 'sh', '-c', 'test -s /tmp/s && echo ok'], { encoding: 'utf8' }).includes('ok'), 30_000);
    const ip = execFileSync('docker', ['inspect', '--format', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', container], { encoding: 'utf8' }).trim();
    const fwd = spawn(NODE, [CLI, 'forward', job.id, '8000:0'], { env: { ...process.env, GPURUN_BROKER: broker.url, GPURUN_TOKEN: token }, stdio: ['ignore', 'pipe', 'inherit'] });
    procs.push(fwd);
    let out = '';
    fwd.stdout!.on('data', (c) => (out += c));
    const gpPort = await waitFor('the forward', () => /127\.0\.0\.1:(\d+)/.exec(out)?.[1], 20_000);
    const sshPort = 20_000 + (process.pid % 20_000);
    const sshL = spawn('ssh', ['-N', '-q', '-i', set.clientKey, '-o', `UserKnownHostsFile=${set.knownHosts}`, '-p', '2222', '-L', `127.0.0.1:${sshPort}:${ip}:8000`, `root@${ADDRESS}`], { stdio: 'ignore' });
    procs.push(sshL);
    await waitFor('ssh -L', async () => (await fetch(`http://127.0.0.1:${sshPort}/s`).catch(() => undefined))?.ok, 20_000, 200);
    await waitFor('gpurun forward', async () => (await fetch(`http://127.0.0.1:${gpPort}/s`).catch(() => undefined))?.ok, 20_000, 200);
    const small = [await smallGets(`http://127.0.0.1:${gpPort}/s`, 50), await smallGets(`http://127.0.0.1:${sshPort}/s`, 50)];
    const big = [await download(`http://127.0.0.1:${gpPort}/z`), await download(`http://127.0.0.1:${sshPort}/z`), await download(`http://127.0.0.1:${gpPort}/z`), await download(`http://127.0.0.1:${sshPort}/z`)];
    console.log(`  forwarded port, small GET (p50 of 50, a new connection each): gpurun forward ${fmt(small[0])}, ssh -L ${fmt(small[1])} (${signed(small[0] - small[1])})`);
    console.log(`  forwarded port, 64 MiB download (best of 2): gpurun forward ${Math.max(big[0], big[2]).toFixed(0)} MB/s, ssh -L ${Math.max(big[1], big[3]).toFixed(0)} MB/s (×${(Math.max(big[0], big[2]) / Math.max(big[1], big[3])).toFixed(2)})`);
    await client.cancel(job.id).catch(() => {});
    await client.close();
  } finally {
    for (const p of procs) p.kill();
    await stopBroker(broker);
    await set?.stopAll();
    for (const c of execFileSync('docker', ['ps', '-aq', '--filter', 'label=gpurun.owner=bench'], { encoding: 'utf8' }).split('\n').filter(Boolean)) execFileSync('docker', ['rm', '-f', c]);
    for (const m of mountedUnder(join(dir, 'hostwork'))) spawn('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
    cleanup(dir);
  }
}
