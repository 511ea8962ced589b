/**
 * The fault report: faults injected into real sshd hosts on loopback (Docker, sshfs, iptables), and what followed.
 * Kinds: link blips shorter than the grace (packets dropped both ways), a host lost for good (sshd and its sessions
 * killed, containers removed, new boot id), a container removed from outside, a GPU Xid 79 (and an application
 * Xid 13), a noisy login shell across a broker kill -9, 32 starts at once on one host, 16 concurrent jobs over two
 * hosts (submit → first line, against one job alone measured in the same run).
 *
 * Until attempts and restarts exist, "decision" is the job's end with the fitting reason (host_lost, gpu_fault, lost
 * with the container gone): the runtime's wait() resolving with that evidence.
 *
 * Reduced by default (hostLostAfter 12 s, 20 blips of 3–9 s); `npm run bench -- faults --full` uses the default grace
 * (60 s) and 20 blips of 5–50 s. Needs root, sshd, sshfs, Docker, iptables and the images of
 * test/setup/30-ssh-docker.sh; sends traffic only to 127.0.4.10–14.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI, NODE, cleanup, createToken, fakePciBusId, restartBroker, scratch, startBrokerProcess, type BrokerProc } from '../test/support/harness.ts';
import { makeSshHosts, mountedUnder, sshHostsMissing, type TestHost } from '../test/support/sshHosts.ts';
import { percentile } from './_support.ts';

interface Row {
  kind: string;
  injected: number;
  lost: number;
  falseEnds: number;
  missed: number;
  decisionS: number[];
  gapsRepeats: number;
  failedStarts: number;
  p50FirstLineMs?: number;
}

const FINAL = ['succeeded', 'failed', 'lost', 'cancelled', 'timed_out'];

function iptables(op: '-I' | '-D', address: string): void {
  spawnSync('iptables', [op, 'INPUT', '-s', address, '-j', 'DROP']);
  spawnSync('iptables', [op, 'OUTPUT', '-d', address, '-j', 'DROP']);
}

/** Lines `PREFIX N` must run 1, 2, 3, … with nothing missing or twice: the number of breaks in that sequence. */
function breaks(out: string, prefix: string): number {
  let want = 1;
  let n = 0;
  for (const line of out.split('\n')) {
    const m = new RegExp(`^${prefix} (\\d+)$`).exec(line);
    if (!m) continue;
    if (Number(m[1]) !== want) n++;
    want = Number(m[1]) + 1;
  }
  return n;
}

/** Minutes of fault injection: `npm run bench` without names leaves it out. */
export const onlyWhenNamed = true;

export async function run(): Promise<void> {
  const missing = sshHostsMissing() ?? (spawnSync('iptables', ['-L', '-n']).status === 0 ? null : 'iptables does not work here');
  if (missing) {
    console.log(`  skipped: ${missing}`);
    return;
  }
  const full = process.argv.includes('--full');
  const graceS = full ? 60 : 12;
  const blips = full ? Array.from({ length: 20 }, (_, i) => 5 + Math.round((45 * i) / 19)) : Array.from({ length: 20 }, (_, i) => 3 + (i % 7));
  const dir = scratch('gpurun-bench-faults-');
  const L4 = { name: 'NVIDIA L4', memoryMiB: 23034 };
  const noisyHome = join(dir, 'noisy-home');
  mkdirSync(noisyHome, { recursive: true });
  writeFileSync(join(noisyHome, '.bashrc'), 'echo "Welcome! This host is managed by ops; see /etc/motd" >&2\n');
  const set = await makeSshHosts(join(dir, 'hosts'), [
    { name: 'b1', address: '127.0.4.10', gpus: Array(16).fill(L4) },
    { name: 'b2', address: '127.0.4.11', gpus: Array(16).fill({ name: 'NVIDIA A10', memoryMiB: 23028 }) },
    { name: 'dev', address: '127.0.4.12', gpus: [] },
    { name: 'b3', address: '127.0.4.13', gpus: Array(4).fill({ name: 'Tesla T4', memoryMiB: 15360 }), env: { HOME: noisyHome } },
    { name: 'b4', address: '127.0.4.14', gpus: Array(32).fill({ name: 'NVIDIA H100 80GB HBM3', memoryMiB: 81559 }), sshdDefaults: true },
  ]);
  const host = (n: string): TestHost => set.hosts.find((h) => h.name === n)!;
  const hostKnown = join(dir, 'hosts', 'known_hosts_on_gpu_hosts');
  writeFileSync(hostKnown, `${host('dev').knownHostsLine}\n`);
  const ws = join(dir, 'ws');
  mkdirSync(ws);
  const workDir = join(dir, 'work');
  const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir, cpus: 64, memory: '64G' };
  const direct = { transport: 'direct', target: 'root@127.0.4.12:2222', identityFile: set.clientKey, knownHosts: hostKnown, sftpServer: `${NODE} ${CLI} sftp-serve` };
  const config = {
    hostLostAfter: `${graceS}s`,
    hosts: [
      { ...common, name: 'b1', address: '127.0.4.10', mount: { transport: 'relay' } },
      { ...common, name: 'b2', address: '127.0.4.11', mount: direct },
      { ...common, name: 'b3', address: '127.0.4.13', mount: direct },
      { ...common, name: 'b4', address: '127.0.4.14', mount: { transport: 'relay' } },
    ],
    defaults: { image: 'local/busybox:1', gpus: 1, memory: '32M' },
  };
  let broker: BrokerProc = await startBrokerProcess(join(dir, 'home'), config);
  const token = await createToken(broker, 'bench');
  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const r = await fetch(`${broker.url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}) });
    const j = (await r.json()) as T;
    if (!r.ok) throw new Error(`${method} ${path}: ${JSON.stringify(j)}`);
    return j;
  };
  type J = { id: string; state: string; reason: string; gpuIndices: number[]; host: string };
  const submit = (gpuType: string, command: string[]) => api<J>('POST', '/v1/jobs', { command, workspace: ws, gpus: 1, gpuType });
  const get = (id: string) => api<J>('GET', `/v1/jobs/${id}`);
  const logs = async (id: string) => (await fetch(`${broker.url}/v1/jobs/${id}/logs?offset=0`, { headers: { authorization: `Bearer ${token}` } })).text();
  const until = async <T>(fn: () => Promise<T | undefined | false>, ms: number): Promise<T | undefined> => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const v = await fn().catch(() => undefined);
      if (v) return v;
      await sleep(200);
    }
    return undefined;
  };
  const ended = (id: string, ms: number) => until(async () => {
    const j = await get(id);
    return FINAL.includes(j.state) && j;
  }, ms);
  const printer = (n: number, every: number, prefix: string) => ['sh', '-c', `i=1; while [ $i -le ${n} ]; do echo "${prefix} $i"; i=$((i+1)); sleep ${every}; done`];
  const rows: Row[] = [];
  const blocked = new Set<string>();
  try {
    await until(async () => (await api<{ hosts: Array<{ state: string }> }>('GET', '/v1/hosts')).hosts.every((h) => h.state === 'up'), 60_000);

    // 1. Blips shorter than the grace, on a relay host and a direct host at once.
    {
      const total = blips.reduce((a, b) => a + b + 4, 0) + 30;
      const jobs = [await submit('L4', printer(total * 2, 0.5, 'r')), await submit('A10', printer(total * 2, 0.5, 'd'))];
      await until(async () => (await logs(jobs[0].id)).includes('r 2\n') && (await logs(jobs[1].id)).includes('d 2\n'), 60_000);
      let falseEnds = 0;
      for (const s of blips) {
        for (const a of ['127.0.4.10', '127.0.4.11']) (iptables('-I', a), blocked.add(a));
        await sleep(s * 1000);
        for (const a of blocked) iptables('-D', a);
        blocked.clear();
        await sleep(4_000);
      }
      for (const j of jobs) {
        const st = await get(j.id);
        if (FINAL.includes(st.state)) falseEnds++;
        else await api('POST', `/v1/jobs/${j.id}/cancel`);
      }
      await Promise.all(jobs.map((j) => ended(j.id, 60_000)));
      const gaps = breaks(await logs(jobs[0].id), 'r') + breaks(await logs(jobs[1].id), 'd');
      rows.push({ kind: `blips ${Math.min(...blips)}–${Math.max(...blips)} s (grace ${graceS} s), relay + direct`, injected: blips.length, lost: falseEnds, falseEnds, missed: 0, decisionS: [], gapsRepeats: gaps, failedStarts: 0 });
    }

    // 2. A host lost for good (a reboot that never comes back within the grace).
    {
      const j = await submit('T4', ['sh', '-c', 'echo started; sleep 600']);
      await until(async () => (await logs(j.id)).includes('started'), 60_000);
      const t0 = Date.now();
      await host('b3').stop();
      for (const c of execFileSync('docker', ['ps', '-aq', '--filter', `label=gpurun.job=${j.id}`], { encoding: 'utf8' }).split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
      host('b3').newBootId();
      const end = await ended(j.id, (graceS + 60) * 1000);
      const ok = end?.state === 'lost' && /^host_lost/.test(end.reason);
      rows.push({ kind: 'host lost (sshd killed, containers removed)', injected: 1, lost: 0, falseEnds: 0, missed: ok ? 0 : 1, decisionS: ok ? [(Date.now() - t0) / 1000 - graceS] : [], gapsRepeats: 0, failedStarts: 0 });
      await host('b3').start();
      await until(async () => (await api<{ hosts: Array<{ name: string; state: string }> }>('GET', '/v1/hosts')).hosts.find((h) => h.name === 'b3')?.state === 'up', 60_000);
    }

    // 3. A container removed from outside.
    {
      const j = await submit('A10', ['sh', '-c', 'echo started; sleep 600']);
      await until(async () => (await logs(j.id)).includes('started'), 60_000);
      const t0 = Date.now();
      spawnSync('docker', ['rm', '-f', `gpurun-${j.id}`]);
      const end = await ended(j.id, 60_000);
      const ok = end?.state === 'lost' && /vanished/.test(end.reason);
      rows.push({ kind: 'container removed from outside', injected: 1, lost: 0, falseEnds: 0, missed: ok ? 0 : 1, decisionS: ok ? [(Date.now() - t0) / 1000] : [], gapsRepeats: 0, failedStarts: 0 });
    }

    // 4. GPU faults: Xid 79 on one job's GPU (must end it), Xid 13 on another's (must not).
    {
      const a = await submit('A10', ['sh', '-c', 'echo started; sleep 600']);
      const b = await submit('A10', ['sh', '-c', 'echo started; sleep 600']);
      await until(async () => (await logs(a.id)).includes('started') && (await logs(b.id)).includes('started'), 60_000);
      const [ga, gb] = [(await get(a.id)).gpuIndices[0], (await get(b.id)).gpuIndices[0]];
      const line = (gpu: number, code: number) => `${new Date().toISOString().replace('Z', '+00:00').replace('.', ',')} NVRM: Xid (PCI:0000:${fakePciBusId(gpu).slice(9, 14).toLowerCase()}): ${code}, pid=1, name=python3, injected`;
      host('b2').kernelLog(line(gb, 13));
      const t0 = Date.now();
      host('b2').kernelLog(line(ga, 79));
      const end = await ended(a.id, 30_000);
      const dt = (Date.now() - t0) / 1000;
      const ok = end?.state === 'failed' && /^gpu_fault: Xid 79/.test(end.reason);
      const bState = (await get(b.id)).state;
      rows.push({ kind: 'GPU Xid 79 (+ Xid 13 on another job)', injected: 2, lost: 0, falseEnds: bState === 'running' ? 0 : 1, missed: ok ? 0 : 1, decisionS: ok ? [dt] : [], gapsRepeats: 0, failedStarts: 0 });
      await api('POST', `/v1/jobs/${b.id}/cancel`);
    }

    // 5. Login-shell noise on the follow channel, across a broker kill -9.
    {
      const j = await submit('T4', printer(16, 0.4, 'n'));
      await until(async () => (await logs(j.id)).includes('n 3\n'), 60_000);
      await broker.kill9();
      broker = await restartBroker(broker);
      const end = await ended(j.id, 90_000);
      const out = await logs(j.id);
      const want = Array.from({ length: 16 }, (_, i) => `n ${i + 1}\n`).join('');
      rows.push({ kind: 'noisy login shell + broker kill -9', injected: 1, lost: end?.state === 'succeeded' ? 0 : 1, falseEnds: 0, missed: 0, decisionS: [], gapsRepeats: out === want ? 0 : 1, failedStarts: 0 });
    }

    // 6. 32 starts at once on one host (sshd's default limits).
    {
      const js = await Promise.all(Array.from({ length: 32 }, () => submit('H100', ['sh', '-c', 'echo ok'])));
      const ends = await Promise.all(js.map((j) => ended(j.id, 300_000)));
      const failed = ends.filter((e) => e?.state !== 'succeeded').length;
      rows.push({ kind: '32 starts at once on one host', injected: 32, lost: 0, falseEnds: 0, missed: 0, decisionS: [], gapsRepeats: 0, failedStarts: failed });
    }

    // 7. Submit → first line: one job alone (baseline), then 16 at once over two hosts.
    {
      const first = async (gpuType: string): Promise<number> => {
        const t0 = performance.now();
        const j = await submit(gpuType, ['sh', '-c', 'echo first; sleep 1']);
        await until(async () => (await logs(j.id)).includes('first\n'), 120_000);
        const dt = performance.now() - t0;
        void ended(j.id, 60_000);
        return dt;
      };
      const alone: number[] = [];
      for (let i = 0; i < 3; i++) alone.push(await first('A10'));
      await sleep(3_000);
      const many = await Promise.all(Array.from({ length: 16 }, (_, i) => first(i % 2 ? 'A10' : 'L4')));
      rows.push({ kind: `16 at once over two hosts (one alone: p50 ${(percentile(alone, 50) / 1000).toFixed(2)} s)`, injected: 16, lost: 0, falseEnds: 0, missed: 0, decisionS: [], gapsRepeats: 0, failedStarts: 0, p50FirstLineMs: percentile(many, 50) });
    }
  } finally {
    for (const a of blocked) iptables('-D', a);
    await broker.stop().catch(() => {});
    await set.stopAll();
    for (const c of execFileSync('docker', ['ps', '-aq', '--filter', 'label=gpurun.owner=bench'], { encoding: 'utf8' }).split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
    for (const m of mountedUnder(workDir).reverse()) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
    cleanup(dir);
  }
  console.log(`  ${full ? 'full' : 'reduced'} run; hostLostAfter ${graceS} s. Decision = the job ended with the fitting reason (no restarts yet).`);
  console.log('  | kind | injected | jobs lost | false ends | missed | fault → decision | log gaps/repeats | failed starts | p50 submit → first line |');
  console.log('  |---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const d = r.decisionS.length ? `${r.decisionS.map((x) => x.toFixed(1)).join(', ')} s${r.kind.startsWith('host lost') ? ' after the grace' : ''}` : '–';
    console.log(`  | ${r.kind} | ${r.injected} | ${r.lost} | ${r.falseEnds} | ${r.missed} | ${d} | ${r.gapsRepeats} | ${r.failedStarts} | ${r.p50FirstLineMs === undefined ? '–' : `${(r.p50FirstLineMs / 1000).toFixed(2)} s`} |`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
