/**
 * The fault report: faults injected into real sshd hosts on loopback (Docker, sshfs, iptables), and what followed.
 * Kinds: link blips shorter than the grace (packets dropped both ways), a host lost for good (sshd and its sessions
 * killed, containers removed, new boot id), a container removed from outside, a GPU Xid 79 (and an application
 * Xid 13), a noisy login shell across a broker kill -9, 32 starts at once on one host, 16 concurrent jobs over two
 * hosts (submit → first line, against one job alone measured in the same run).
 *
 * Fault jobs run with restarts allowed: the "decision" is the end of attempt 1 with the fitting fault (host_lost,
 * runtime_lost, gpu_fault), timed from the injection to the attempt's recorded end; a missed restart is a fault with
 * no attempt 2 (or the wrong fault); a false restart is any attempt ended by a blip.
 *
 * Reduced by default (hostLostAfter 12 s, 20 blips of 3–9 s); `npm run bench -- faults --full` uses the default grace
 * (60 s) and 20 blips of 5–50 s. Needs root, sshd, sshfs, Docker, iptables and the images of
 * test/setup/30-ssh-docker.sh; sends traffic only to 127.0.15.10–14. Stopped part way (Ctrl+C, SIGTERM, SIGHUP, an
 * error), it still removes its iptables rules, broker, sshd hosts, containers and mounts.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI, NODE, cleanup, createToken, fakePciBusId, restartBroker, scratch, startBrokerProcess, type BrokerProc } from '../test/support/harness.ts';
import { makeSshHosts, mountedUnder, sshHostsMissing, type TestHost } from '../test/support/sshHosts.ts';
import { percentile } from './_support.ts';

interface Row {
  kind: string;
  injected: number;
  lost: number;
  falseRestarts: number;
  missed: number;
  decisionS: number[];
  gapsRepeats: number;
  failedStarts: number;
  firstLine?: string;
  /** Why the section could not finish (its figures are then partial). */
  error?: string;
  /** What explains a figure (e.g. the faults of false restarts), printed under the table. */
  notes?: string[];
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

/** Kills the sshd of every test host under `hostsDir` (by its pid file) and every process under it. */
function killHostsUnder(hostsDir: string): void {
  if (!existsSync(hostsDir)) return;
  for (const h of readdirSync(hostsDir)) {
    const pidFile = join(hostsDir, h, 'sshd.pid');
    if (!existsSync(pidFile)) continue;
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (!pid) continue;
    // The sshd's sessions first (children of its pid), then sshd itself.
    const kids = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.split('\n').map(Number).filter(Boolean);
    for (const p of [...kids, pid]) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}

/** Times (ms) to the first output line of `n` plain `docker run` started at once here (the engine's own floor). */
async function dockerFloor(n: number): Promise<number[]> {
  return Promise.all(Array.from({ length: n }, () => new Promise<number>((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn('docker', ['run', '--rm', '--init', '--label', 'gpurun.owner=bench', '--network', 'gpurun-u-bench', '--memory', '32m', 'local/busybox:1', 'sh', '-c', 'echo first; sleep 1'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let done = false;
    p.stdout.on('data', (d: Buffer) => {
      if (!done && d.toString().includes('first')) (done = true), resolve(performance.now() - t0);
    });
    p.on('close', () => done || reject(new Error('docker run printed nothing')));
  })));
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
  const hostsDir = join(dir, 'hosts');
  const workDir = join(dir, 'work');
  const blocked = new Set<string>();
  let broker: BrokerProc | undefined;
  let stopping: Promise<void> | undefined;
  // Everything the bench started goes, whichever way it ends: normally, on an error, or on a signal.
  const teardown = (): Promise<void> =>
    (stopping ??= (async () => {
      for (const a of blocked) iptables('-D', a);
      blocked.clear();
      await broker?.kill9().catch(() => {});
      if (broker) keepLog(broker);
      killHostsUnder(hostsDir);
      const ps = spawnSync('docker', ['ps', '-aq', '--filter', 'label=gpurun.owner=bench'], { encoding: 'utf8' });
      for (const c of (ps.stdout ?? '').split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
      for (const m of mountedUnder(workDir).reverse()) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
      cleanup(dir);
    })());
  // GPURUN_BENCH_LOGS=DIR keeps each broker process's log (what it said about each start and fault) for a closer look.
  const keepLog = (b: BrokerProc) => {
    const to = process.env.GPURUN_BENCH_LOGS;
    if (!to) return;
    mkdirSync(to, { recursive: true });
    writeFileSync(join(to, `faults-broker-${Date.now()}.log`), b.log());
  };
  // --only=blips,lost,container,gpu,noisy,burst,first runs only those kinds (all by default).
  const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7).split(',');
  const wanted = (key: string) => !only || only.includes(key);
  const onSignal = (sig: NodeJS.Signals) => {
    console.log(`  stopped by ${sig}: cleaning up`);
    void teardown().finally(() => process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGHUP' ? 1 : 15)));
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.once(s, onSignal);
  const rows: Row[] = [];
  try {
    const L4 = { name: 'NVIDIA L4', memoryMiB: 23034 };
    const noisyHome = join(dir, 'noisy-home');
    mkdirSync(noisyHome, { recursive: true });
    writeFileSync(join(noisyHome, '.bashrc'), 'echo "Welcome! This host is managed by ops; see /etc/motd" >&2\n');
    const set = await makeSshHosts(hostsDir, [
      { name: 'b1', address: '127.0.15.10', gpus: Array(16).fill(L4) },
      { name: 'b2', address: '127.0.15.11', gpus: Array(16).fill({ name: 'NVIDIA A10', memoryMiB: 23028 }) },
      { name: 'dev', address: '127.0.15.12', gpus: [] },
      { name: 'b3', address: '127.0.15.13', gpus: Array(4).fill({ name: 'Tesla T4', memoryMiB: 15360 }), env: { HOME: noisyHome } },
      { name: 'b4', address: '127.0.15.14', gpus: Array(32).fill({ name: 'NVIDIA H100 80GB HBM3', memoryMiB: 81559 }), sshdDefaults: true },
    ]);
    const host = (n: string): TestHost => set.hosts.find((h) => h.name === n)!;
    const hostKnown = join(hostsDir, 'known_hosts_on_gpu_hosts');
    writeFileSync(hostKnown, `${host('dev').knownHostsLine}\n`);
    const ws = join(dir, 'ws');
    mkdirSync(ws);
    const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir, cpus: 64, memory: '64G' };
    const direct = { transport: 'direct', target: 'root@127.0.15.12:2222', identityFile: set.clientKey, knownHosts: hostKnown, sftpServer: `${NODE} ${CLI} sftp-serve` };
    const config = {
      hostLostAfter: `${graceS}s`,
      restartBackoff: { first: '1s', max: '5s' },
      hosts: [
        { ...common, name: 'b1', address: '127.0.15.10', mount: { transport: 'relay' } },
        { ...common, name: 'b2', address: '127.0.15.11', mount: direct },
        { ...common, name: 'b3', address: '127.0.15.13', mount: direct },
        { ...common, name: 'b4', address: '127.0.15.14', mount: { transport: 'relay' } },
      ],
      defaults: { image: 'local/busybox:1', gpus: 1, memory: '32M' },
    };
    broker = await startBrokerProcess(join(dir, 'home'), config);
    const token = await createToken(broker, 'bench');
    const url = () => broker!.url;
    const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
      const r = await fetch(`${url()}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}) });
      const j = (await r.json()) as T;
      if (!r.ok) throw new Error(`${method} ${path}: ${JSON.stringify(j)}`);
      return j;
    };
    type A = { n: number; host: string | null; startedAt: string | null; endedAt: string | null; fault: string | null; reason: string | null };
    type J = { id: string; state: string; reason: string; gpuIndices: number[]; host: string; attempts?: A[] };
    const submit = (gpuType: string, command: string[], restarts = 0) => api<J>('POST', '/v1/jobs', { command, workspace: ws, gpus: 1, gpuType, restarts });
    const get = (id: string) => api<J>('GET', `/v1/jobs/${id}`);
    const cancel = (id: string) => api('POST', `/v1/jobs/${id}/cancel`).catch(() => {});
    const logs = async (id: string) => (await fetch(`${url()}/v1/jobs/${id}/logs?offset=0`, { headers: { authorization: `Bearer ${token}` } })).text();
    const until = async <T>(fn: () => Promise<T | undefined | false>, ms: number): Promise<T | undefined> => {
      const end = Date.now() + ms;
      while (Date.now() < end && !stopping) {
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
    /** Attempt 1 of the job once it has ended (the broker's decision), or undefined after `ms`. */
    const firstEnd = (id: string, ms: number) => until(async () => (await get(id)).attempts?.find((a) => a.n === 1 && a.endedAt), ms);
    /** Attempt 2 once it was placed (the restart), or undefined after `ms`. */
    const second = (id: string, ms: number) => until(async () => (await get(id)).attempts?.find((a) => a.n === 2 && a.host), ms);
    const printer = (n: number, every: number, prefix: string) => ['sh', '-c', `i=1; while [ $i -le ${n} ]; do echo "${prefix} $i"; i=$((i+1)); sleep ${every}; done`];
    /** Runs one kind of injection; an error ends only that kind, and is reported with it. */
    const section = async (key: string, kind: string, fn: (row: Row) => Promise<void>) => {
      if (!wanted(key)) return;
      const row: Row = { kind, injected: 0, lost: 0, falseRestarts: 0, missed: 0, decisionS: [], gapsRepeats: 0, failedStarts: 0 };
      rows.push(row);
      try {
        await fn(row);
      } catch (e) {
        row.error = (e as Error).message.split('\n')[0];
      }
    };
    await until(async () => (await api<{ hosts: Array<{ state: string }> }>('GET', '/v1/hosts')).hosts.every((h) => h.state === 'up'), 60_000);

    // 1. Blips shorter than the grace, on a relay host and a direct host at once; the jobs may restart (they must not).
    await section('blips', `blips ${Math.min(...blips)}–${Math.max(...blips)} s (grace ${graceS} s), relay + direct`, async (row) => {
      const total = blips.reduce((a, b) => a + b + 4, 0) + 30;
      const jobs = [await submit('L4', printer(total * 2, 0.5, 'r'), 3), await submit('A10', printer(total * 2, 0.5, 'd'), 3)];
      await until(async () => (await logs(jobs[0].id)).includes('r 2\n') && (await logs(jobs[1].id)).includes('d 2\n'), 60_000);
      for (const s of blips) {
        for (const a of ['127.0.15.10', '127.0.15.11']) (iptables('-I', a), blocked.add(a));
        row.injected++;
        await sleep(s * 1000);
        for (const a of blocked) iptables('-D', a);
        blocked.clear();
        await sleep(4_000);
      }
      for (const j of jobs) {
        const st = await get(j.id);
        row.falseRestarts += (st.attempts?.length ?? 1) - 1 + (FINAL.includes(st.state) ? 1 : 0);
        for (const a of st.attempts ?? []) if (a.endedAt) (row.notes ??= []).push(`${j.id} attempt ${a.n} on ${a.host} ended ${a.endedAt.slice(11, 19)}: ${a.fault} (${a.reason})`);
        if (FINAL.includes(st.state) && st.state !== 'succeeded') row.lost++;
        await cancel(j.id);
      }
      await Promise.all(jobs.map((j) => ended(j.id, 60_000)));
      row.gapsRepeats = breaks(await logs(jobs[0].id), 'r') + breaks(await logs(jobs[1].id), 'd');
    });

    // 2. A host lost for good (a reboot that does not come back within the grace).
    await section('lost', 'host lost (sshd killed, containers removed)', async (row) => {
      row.injected = 1;
      const j = await submit('T4', ['sh', '-c', 'echo started; sleep 600'], 1);
      await until(async () => (await logs(j.id)).includes('started'), 60_000);
      const t0 = Date.now();
      await host('b3').stop();
      for (const c of execFileSync('docker', ['ps', '-aq', '--filter', `label=gpurun.job=${j.id}`], { encoding: 'utf8' }).split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
      host('b3').newBootId();
      const a1 = await firstEnd(j.id, (graceS + 60) * 1000);
      if (a1?.fault === 'host_lost') row.decisionS.push((Date.parse(a1.endedAt!) - t0) / 1000 - graceS);
      else row.missed++;
      // The only T4 host is b3: attempt 2 waits for it to come back.
      await host('b3').start();
      if (a1?.fault === 'host_lost' && !(await second(j.id, 90_000))) row.missed++;
      await cancel(j.id);
      await until(async () => (await api<{ hosts: Array<{ name: string; state: string }> }>('GET', '/v1/hosts')).hosts.find((h) => h.name === 'b3')?.state === 'up', 60_000);
      await ended(j.id, 60_000);
    });

    // 3. A container removed from outside: rebuilt on the same host.
    await section('container', 'container removed from outside', async (row) => {
      row.injected = 1;
      const j = await submit('A10', ['sh', '-c', 'echo started; sleep 600'], 1);
      await until(async () => (await logs(j.id)).includes('started'), 60_000);
      const t0 = Date.now();
      spawnSync('docker', ['rm', '-f', `gpurun-${j.id}`]);
      const a1 = await firstEnd(j.id, 60_000);
      if (a1?.fault === 'runtime_lost') row.decisionS.push((Date.parse(a1.endedAt!) - t0) / 1000);
      const a2 = a1?.fault === 'runtime_lost' ? await second(j.id, 60_000) : undefined;
      if (a2?.host !== 'b2') row.missed++;
      await cancel(j.id);
      await ended(j.id, 60_000);
    });

    // 4. GPU faults: Xid 79 on one job's GPU (moves it), Xid 13 on another's (must not).
    await section('gpu', 'GPU Xid 79 (+ Xid 13 on another job)', async (row) => {
      row.injected = 2;
      const a = await submit('A10', ['sh', '-c', 'echo started; sleep 600'], 1);
      const b = await submit('A10', ['sh', '-c', 'echo started; sleep 600'], 1);
      await until(async () => (await logs(a.id)).includes('started') && (await logs(b.id)).includes('started'), 60_000);
      const [ga, gb] = [(await get(a.id)).gpuIndices[0], (await get(b.id)).gpuIndices[0]];
      const line = (gpu: number, code: number) => `${new Date().toISOString().replace('Z', '+00:00').replace('.', ',')} NVRM: Xid (PCI:0000:${fakePciBusId(gpu).slice(9, 14).toLowerCase()}): ${code}, pid=1, name=python3, injected`;
      host('b2').kernelLog(line(gb, 13));
      const t0 = Date.now();
      host('b2').kernelLog(line(ga, 79));
      const a1 = await firstEnd(a.id, 30_000);
      if (a1?.fault === 'gpu_fault') row.decisionS.push((Date.parse(a1.endedAt!) - t0) / 1000);
      else row.missed++;
      if (a1?.fault === 'gpu_fault' && !(await second(a.id, 30_000))) row.missed++;
      const bNow = await get(b.id);
      row.falseRestarts += bNow.state === 'running' && (bNow.attempts?.length ?? 1) === 1 ? 0 : 1;
      await cancel(a.id);
      await cancel(b.id);
      await Promise.all([ended(a.id, 60_000), ended(b.id, 60_000)]);
      await api('POST', `/v1/hosts/b2/gpus/${ga}/clear`).catch(() => {});
    });

    // 5. Login-shell noise on the follow channel, across a broker kill -9.
    await section('noisy', 'noisy login shell + broker kill -9', async (row) => {
      row.injected = 1;
      const j = await submit('T4', printer(16, 0.4, 'n'));
      await until(async () => (await logs(j.id)).includes('n 3\n'), 60_000);
      await broker!.kill9();
      keepLog(broker!);
      broker = await restartBroker(broker!);
      const end = await ended(j.id, 90_000);
      const out = await logs(j.id);
      const want = Array.from({ length: 16 }, (_, i) => `n ${i + 1}\n`).join('');
      row.lost = end?.state === 'succeeded' ? 0 : 1;
      row.gapsRepeats = out === want ? 0 : 1;
    });

    // 6. 32 starts at once on one host (sshd's default limits).
    await section('burst', '32 starts at once on one host (sshd defaults)', async (row) => {
      row.injected = 32;
      const t0 = performance.now();
      const js = await Promise.all(Array.from({ length: 32 }, () => submit('H100', ['sh', '-c', 'echo ok'])));
      const ends = await Promise.all(js.map((j) => ended(j.id, 300_000)));
      row.failedStarts = ends.filter((e) => e?.state !== 'succeeded').length;
      row.firstLine = `all 32 ended in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    });

    // 7. Submit → first line, as `gpurun run` sees it (the followed log stream): one job alone, then 16 at once over two hosts.
    await section('first', '16 at once over two hosts (relay b1 + direct b2)', async (row) => {
      row.injected = 16;
      const started: number[] = [];
      const first = async (gpuType: string): Promise<number> => {
        const t0 = performance.now();
        const w0 = Date.now();
        const j = await submit(gpuType, ['sh', '-c', 'echo first; sleep 1']);
        const ac = new AbortController();
        const timer = setTimeout(() => ac.abort(), 120_000);
        try {
          const res = await fetch(`${url()}/v1/jobs/${j.id}/logs?offset=0&follow=1`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal });
          const reader = res.body!.getReader();
          let text = '';
          while (!text.includes('first\n')) {
            const { value, done } = await reader.read();
            if (done) throw new Error(`job ${j.id} ended without its first line`);
            text += Buffer.from(value).toString('utf8');
          }
          const dt = performance.now() - t0;
          const a = (await get(j.id)).attempts?.[0];
          if (a?.startedAt) started.push(Date.parse(a.startedAt) - w0);
          return dt;
        } finally {
          clearTimeout(timer);
          ac.abort();
          void ended(j.id, 60_000);
        }
      };
      const alone: number[] = [];
      for (let i = 0; i < 3; i++) alone.push(await first('A10'));
      for (let i = 0; i < 3; i++) alone.push(await first('L4'));
      await sleep(3_000);
      started.length = 0;
      const many = await Promise.all(Array.from({ length: 16 }, (_, i) => first(i % 2 ? 'A10' : 'L4')));
      const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
      row.firstLine = `p50 ${s(percentile(many, 50))}, max ${s(Math.max(...many))} (one alone: p50 ${s(percentile(alone, 50))})`;
      // Where the time goes: the broker's start (submit → the attempt's start recorded), and the floor of this machine,
      // 16 containers started at once on the same Docker engine with nothing of gpurun around them.
      await sleep(5_000);
      const floor = await dockerFloor(16);
      row.notes = [
        `16 at once: submit → attempt started (start done) p50 ${s(percentile(started, 50))}, max ${s(Math.max(...started))}`,
        `16 plain \`docker run\` at once on this engine (no SSH, no mount): first line p50 ${s(percentile(floor, 50))}, max ${s(Math.max(...floor))}`,
      ];
    });
  } finally {
    for (const s of signals) process.off(s, onSignal);
    await teardown();
  }
  console.log(`  ${full ? 'full' : 'reduced'} run; hostLostAfter ${graceS} s. Decision = attempt 1 ended with the fitting fault (from the injection to its recorded end).`);
  console.log('  | kind | injected | jobs lost | false restarts | missed restarts | fault → decision | log gaps/repeats | failed starts | submit → first line |');
  console.log('  |---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const d = r.decisionS.length ? `${r.decisionS.map((x) => x.toFixed(1)).join(', ')} s${r.kind.startsWith('host lost') ? ' after the grace' : ''}` : '–';
    console.log(`  | ${r.kind}${r.error ? ` (STOPPED: ${r.error})` : ''} | ${r.injected} | ${r.lost} | ${r.falseRestarts} | ${r.missed} | ${d} | ${r.gapsRepeats} | ${r.failedStarts} | ${r.firstLine ?? '–'} |`);
  }
  for (const r of rows) for (const n of r.notes ?? []) console.log(`  - ${r.kind}: ${n}`);
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
