/**
 * Benchmarks of GPU hosts over SSH, on real parts over loopback: sshd hosts, Docker, sshfs.
 *   1. submit → first output line on a warm host (p50 of 20), Docker + SSHFS (relay and direct) and a process host
 *      (no Docker, relay); baseline: the local process runtime in the same broker.
 *   2. start time with a 1 GB workspace / with a 1 MB one (nothing is uploaded, so ≈ 1).
 *   3. importing a package of 2,000 small modules through the mount vs from local disk (a plain bind mount), for the
 *      tuned options gpurun uses, for sshfs's defaults, and for the floor: sshfs piped to sftp-server without SSH.
 * `run()` prints the figures; `node bench/ssh.ts` runs it alone. Needs root, sshd, sshfs, Docker and the images
 * from test/setup/30-ssh-docker.sh. Sends traffic only to loopback addresses.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, NODE, createToken, scratch, startBrokerProcess, cleanup, type BrokerProc } from '../test/support/harness.ts';
import { makeSshHosts, sshHostsMissing } from '../test/support/sshHosts.ts';
import { TUNED_OPTIONS } from '../server/hosts/mount.ts';
import { findSftpServer } from '../server/hosts/sftpGuard.ts';

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x: number) => `${x.toFixed(0)} ms`;

async function firstLine(url: string, token: string, body: Record<string, unknown>): Promise<number> {
  const t0 = performance.now();
  const r = await fetch(`${url}/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const job = (await r.json()) as { id: string };
  if (!r.ok) throw new Error(`submit failed: ${JSON.stringify(job)}`);
  const logs = await fetch(`${url}/v1/jobs/${job.id}/logs?offset=0&follow=1`, { headers: { authorization: `Bearer ${token}` } });
  const reader = logs.body!.getReader();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`job ${job.id} ended without output`);
    text += Buffer.from(value).toString();
    if (text.includes('\n')) break;
  }
  const dt = performance.now() - t0;
  while (!(await reader.read()).done);
  return dt;
}

/** Until the job's first output line, `n` times. */
async function series(n: number, fn: () => Promise<number>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await fn());
  return out;
}

function makePackage(dir: string, n: number): void {
  mkdirSync(join(dir, 'pkg'), { recursive: true });
  writeFileSync(join(dir, 'pkg', '__init__.py'), '');
  for (let i = 0; i < n; i++) writeFileSync(join(dir, 'pkg', `m${String(i).padStart(4, '0')}.py`), `X = ${i}\ndef f(a):\n    return a + X\n`);
  writeFileSync(join(dir, 'imp.py'), `import time, importlib, sys\nt = time.perf_counter()\nfor i in range(${n}):\n    importlib.import_module(f"pkg.m{i:04d}")\nprint(f"IMPORT_MS {(time.perf_counter() - t) * 1000:.1f}")\n`);
}

function importMs(out: string): number {
  const m = /IMPORT_MS ([\d.]+)/.exec(out);
  if (!m) throw new Error(`no timing in: ${out}`);
  return Number(m[1]);
}

/**
 * The floor of any SSHFS mount on this machine: sshfs -o passive wired by pipes straight to OpenSSH's sftp-server
 * (no SSH, no network, no confinement), mounted at `mnt`; returns a function that unmounts it.
 */
function mountFloor(ws: string, mnt: string): () => void {
  const script = 'exec 3<>"$3"; "$1" <"$2" >"$3" 3>&- & exec sshfs -f -o "passive,allow_other,$4" ":$5" "$6" <"$3" >"$2" 3>&-';
  const fifoIn = join(mnt, '..', 'floor-in');
  const fifoOut = join(mnt, '..', 'floor-out');
  execFileSync('mkfifo', [fifoIn, fifoOut]);
  const p = spawn('sh', ['-c', script, 'gpurun-floor', findSftpServer(), fifoIn, fifoOut, TUNED_OPTIONS.join(','), ws, mnt], { stdio: 'ignore', detached: true });
  for (let i = 0; i < 100 && !readFileSync('/proc/mounts', 'utf8').includes(` ${mnt} `); i++) execFileSync('sleep', ['0.1']);
  return () => {
    spawnSync('fusermount3', ['-uz', mnt]);
    try {
      process.kill(-p.pid!, 'SIGKILL');
    } catch {}
  };
}

/** The import timed in a container over a bind mount of `dir` (local disk, or an sshfs mount point). */
function importInContainer(dir: string): number {
  const r = spawnSync('docker', ['run', '--rm', '-e', 'PYTHONDONTWRITEBYTECODE=1', '-v', `${dir}:/workspace`, '-w', '/workspace', 'local/python:3', 'python3', 'imp.py'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return importMs(r.stdout);
}

export async function run(): Promise<void> {
  const missing = sshHostsMissing();
  if (missing) {
    console.log(`bench/ssh: skipped: ${missing}`);
    return;
  }
  const dir = scratch('gpurun-bench-ssh-');
  const set = await makeSshHosts(join(dir, 'hosts'), [
    { name: 'h-relay', address: '127.0.0.2', gpus: [{ name: 'NVIDIA A100', memoryMiB: 81920 }] },
    { name: 'h-direct', address: '127.0.0.3', gpus: [{ name: 'NVIDIA L4', memoryMiB: 23034 }] },
    { name: 'dev', address: '127.0.0.5', gpus: [] },
    { name: 'h-proc', address: '127.0.0.4', gpus: [{ name: 'NVIDIA H100', memoryMiB: 81559 }] },
  ]);
  const hostKnown = join(dir, 'known_on_hosts');
  writeFileSync(hostKnown, `${set.hosts[2].knownHostsLine}\n`);
  const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir: join(dir, 'hostwork') };
  // Everything started from here on is stopped in finally, whatever fails (else sshd hosts outlive the run).
  let broker: BrokerProc | undefined;
  try {
    broker = await startBrokerProcess(join(dir, 'home'), {
      hosts: [
        { name: 'local', type: 'local' },
        { ...common, name: 'h-relay', address: '127.0.0.2', mount: { transport: 'relay', snapshot: false } },
        { ...common, name: 'h-proc', address: '127.0.0.4', runtime: 'process', mount: { transport: 'relay', snapshot: false } },
        { ...common, name: 'h-direct', address: '127.0.0.3', mount: { transport: 'direct', target: 'root@127.0.0.5:2222', identityFile: set.clientKey, knownHosts: hostKnown, sftpServer: `${NODE} ${CLI} sftp-serve` } },
      ],
      defaults: { image: 'local/python:3', gpus: 0, memory: '512M' },
    });
    const token = await createToken(broker, 'bench');
    const url = broker.url;
    const small = join(dir, 'ws-1mb');
    const big = join(dir, 'ws-1gb');
    mkdirSync(small);
    mkdirSync(big);
    writeFileSync(join(small, 'data.bin'), Buffer.alloc(1 << 20, 7));
    execFileSync('fallocate', ['-l', '1G', join(big, 'data.bin')]);
    const job = (host: 'h-relay' | 'h-direct', ws: string) => ({ command: ['echo', 'first line'], workspace: ws, gpus: 1, gpuType: host === 'h-relay' ? 'A100' : 'L4' });
    await firstLine(url, token, job('h-relay', small)); // warm the connections
    await firstLine(url, token, job('h-direct', small));
    const N = Number(process.env.BENCH_N ?? 20);
    const local = await series(N, () => firstLine(url, token, { command: ['echo', 'first line'], workspace: small, gpus: 0 }));
    const relay = await series(N, () => firstLine(url, token, job('h-relay', small)));
    const direct = await series(N, () => firstLine(url, token, job('h-direct', small)));
    await firstLine(url, token, { command: ['echo', 'first line'], workspace: small, gpus: 1, gpuType: 'H100' });
    const proc = await series(N, () => firstLine(url, token, { command: ['echo', 'first line'], workspace: small, gpus: 1, gpuType: 'H100' }));
    console.log(`ssh: submit → first output line, p50 of ${N} (goal ≤ 1500 ms):`);
    console.log(`  baseline, the local host (process runtime, best-fit for gpus=0): ${ms(p50(local))}`);
    console.log(`  Docker + SSHFS relay:  ${ms(p50(relay))}  (×${(p50(relay) / p50(local)).toFixed(2)} of baseline)`);
    console.log(`  Docker + SSHFS direct: ${ms(p50(direct))}  (×${(p50(direct) / p50(local)).toFixed(2)} of baseline)`);
    console.log(`  process host (no Docker) + SSHFS relay: ${ms(p50(proc))}  (×${(p50(proc) / p50(local)).toFixed(2)} of baseline)`);

    const M = Number(process.env.BENCH_M ?? 7);
    const s1 = await series(M, () => firstLine(url, token, job('h-relay', small)));
    const s1g = await series(M, () => firstLine(url, token, job('h-relay', big)));
    const d1 = await series(M, () => firstLine(url, token, job('h-direct', small)));
    const d1g = await series(M, () => firstLine(url, token, job('h-direct', big)));
    console.log(`ssh: start with a 1 GB workspace / with a 1 MB one, p50 of ${M} (goal ≤ 1.2):`);
    console.log(`  relay:  ${ms(p50(s1g))} / ${ms(p50(s1))} = ${(p50(s1g) / p50(s1)).toFixed(2)}`);
    console.log(`  direct: ${ms(p50(d1g))} / ${ms(p50(d1))} = ${(p50(d1g) / p50(d1)).toFixed(2)}`);

    const pkgWs = join(dir, 'ws-pkg');
    makePackage(pkgWs, 2000);
    const runImport = async (host: string) => {
      const r = await fetch(`${url}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ command: ['python3', 'imp.py'], workspace: pkgWs, gpus: 1, gpuType: host === 'h-relay' ? 'A100' : 'L4', env: { PYTHONDONTWRITEBYTECODE: '1' } }),
      });
      const { id } = (await r.json()) as { id: string };
      if (process.env.BENCH_DEBUG) console.error('import job', host, id);
      const logs = await fetch(`${url}/v1/jobs/${id}/logs?offset=0&follow=1`, { headers: { authorization: `Bearer ${token}` } });
      return importMs(await logs.text());
    };
    const R = 3;
    const localDisk = p50(Array.from({ length: R }, () => importInContainer(pkgWs)));
    const relayImp = p50(await series(R, () => runImport('h-relay')));
    const directImp = p50(await series(R, () => runImport('h-direct')));
    // sshfs with its default options (no tuning), mounted by hand the way the direct transport does.
    const mnt = join(dir, 'untuned');
    mkdirSync(mnt);
    execFileSync('sshfs', [`root@127.0.0.5:${pkgWs}`, mnt, '-p', '2222', '-o', `allow_other,IdentityFile=${set.clientKey},UserKnownHostsFile=${hostKnown},StrictHostKeyChecking=yes,BatchMode=yes,sftp_server=${NODE} ${CLI} sftp-serve --root ${pkgWs}`]);
    let untuned: number;
    try {
      untuned = p50(Array.from({ length: R }, () => importInContainer(mnt)));
    } finally {
      spawnSync('fusermount3', ['-uz', mnt]);
    }
    const floorMnt = join(dir, 'floor', 'mnt');
    mkdirSync(floorMnt, { recursive: true });
    const unmountFloor = mountFloor(pkgWs, floorMnt);
    let floor: number;
    try {
      floor = p50(Array.from({ length: R }, () => importInContainer(floorMnt)));
    } finally {
      unmountFloor();
    }
    console.log(`ssh: importing 2,000 small modules (Python, no bytecode cache), p50 of ${R}; baseline: local disk bind mount ${ms(localDisk)} (goal ≤ 3×):`);
    console.log(`  SSHFS relay, tuned (${TUNED_OPTIONS.join(',')}): ${ms(relayImp)} = ×${(relayImp / localDisk).toFixed(2)}`);
    console.log(`  SSHFS direct, tuned: ${ms(directImp)} = ×${(directImp / localDisk).toFixed(2)}`);
    console.log(`  SSHFS direct, sshfs defaults: ${ms(untuned)} = ×${(untuned / localDisk).toFixed(2)}`);
    console.log(`  floor: sshfs tuned, piped straight to OpenSSH's sftp-server (no SSH, no network): ${ms(floor)} = ×${(floor / localDisk).toFixed(2)}`);
    console.log('  (each module costs an SFTP OPEN, STAT and CLOSE round trip even with every cache on; the floor is what');
    console.log('   FUSE + SFTP cost here before SSH is added; the 3× goal would need fewer round trips than the protocol has)');
  } finally {
    await broker?.stop();
    await set.stopAll();
    rmSync(join(dir, 'ws-1gb'), { recursive: true, force: true });
    cleanup(dir);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
