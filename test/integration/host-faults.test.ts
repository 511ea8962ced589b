/**
 * Host faults, end to end through the CLI (and the HTTP API for bursts) against a real broker process: real sshd hosts
 * on loopback addresses, the real Docker engine, real sshfs over FUSE, iptables for link blips. A host "reboot" kills
 * its sshd with every process under it, removes its containers and gives it a new boot id (its stand-in file).
 * GPU faults come from the hosts' stand-ins: the `dmesg` stand-in prints Xid lines the test appends, the `nvidia-smi`
 * stand-in answers the health query from a file (test/support/sshHosts.ts).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI, cliJobs, createToken, fakePciBusId, gpurun, iptables, NODE, restartBroker, scratch, startBrokerProcess, stopBroker, testEnv, requirePart, type BrokerProc, type ListedJob, waitFor } from '../support/harness.ts';
import { makeSshHosts, endHostSuite, sshfsPidsOf, sshHostsMissing, type TestHost, type TestHostSet } from '../support/sshHosts.ts';
import { mountPoint } from '../../server/hosts/mount.ts';
import { brokerId } from '../../server/hosts/sshSide.ts';

const A100 = { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 };
const L4 = { name: 'NVIDIA L4', memoryMiB: 23034 };
const T4 = { name: 'Tesla T4', memoryMiB: 15360 };
const H100 = { name: 'NVIDIA H100 80GB HBM3', memoryMiB: 81559 };
/** Each host has its own GPU type: a job is sent to a host by asking for one GPU of that type. */
const ON = { f1: ['--gpus', '1', '--gpu-type', 'A100'], f2: ['--gpus', '1', '--gpu-type', 'L4'], noisy: ['--gpus', '1', '--gpu-type', 'T4'], burst: ['--gpus', '1', '--gpu-type', 'H100'] };
const GRACE_S = 20;

function containers(label: string, running = false): string[] {
  return execFileSync('docker', ['ps', ...(running ? [] : ['-a']), '--filter', `label=${label}`, '--format', '{{.Names}}'], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

function lines(n: number, prefix = 'line'): string {
  return Array.from({ length: n }, (_, i) => `${prefix} ${i + 1}\n`).join('');
}

/** A job that prints N numbered lines, one every `every` seconds. */
function printer(n: number, every: number, prefix = 'line'): string[] {
  return ['--', 'sh', '-c', `i=1; while [ $i -le ${n} ]; do echo "${prefix} $i"; i=$((i+1)); sleep ${every}; done`];
}

describe('host faults: unreachable and lost hosts, blips, GPU faults, bursts (sshd + Docker + sshfs + iptables)', function () {
  this.timeout(300_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let adminEnv: NodeJS.ProcessEnv;
  let ws: string;
  let workDir: string;
  let config: Record<string, unknown>;
  let host: (name: string) => TestHost;
  const blocked: string[] = [];

  before(async function () {
    requirePart(this, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
    requirePart(this, 'iptables', spawnSync('iptables', ['-L', '-n']).status === 0, 'iptables -L fails (apt-get install iptables)');
    dir = scratch('gpurun-faults-');
    // A login shell that prints a notice on stderr (and one on stdout in interactive shells only), as many hosts do.
    const noisyHome = join(dir, 'noisy-home');
    mkdirSync(noisyHome, { recursive: true });
    writeFileSync(join(noisyHome, '.bashrc'), 'echo "Welcome! This host is managed by ops; see /etc/motd" >&2\n');
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'f1', address: '127.0.4.1', gpus: [A100, A100] },
      { name: 'f2', address: '127.0.4.2', gpus: Array(16).fill(L4) },
      { name: 'dev', address: '127.0.4.3', gpus: [] },
      { name: 'noisy', address: '127.0.4.4', gpus: Array(16).fill(T4), env: { HOME: noisyHome } },
      { name: 'burst', address: '127.0.4.5', gpus: Array(32).fill(H100), sshdDefaults: true },
    ]);
    host = (name) => set.hosts.find((h) => h.name === name)!;
    const hostKnown = join(dir, 'hosts', 'known_hosts_on_gpu_hosts');
    writeFileSync(hostKnown, `${host('dev').knownHostsLine}\n`);
    ws = join(dir, 'workspace');
    mkdirSync(ws);
    workDir = join(dir, 'hostwork');
    const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir };
    const direct = { transport: 'direct', target: 'root@127.0.4.3:2222', identityFile: set.clientKey, knownHosts: hostKnown, sftpServer: `${NODE} ${CLI} sftp-serve` };
    config = {
      hostLostAfter: `${GRACE_S}s`,
      hosts: [
        { ...common, name: 'f1', address: '127.0.4.1', mount: { transport: 'relay' } },
        { ...common, name: 'f2', address: '127.0.4.2', mount: direct, cpus: 64, memory: '64G' },
        { ...common, name: 'noisy', address: '127.0.4.4', mount: direct, cpus: 64, memory: '64G' },
        { ...common, name: 'burst', address: '127.0.4.5', mount: { transport: 'relay' }, cpus: 64, memory: '64G' },
      ],
      defaults: { image: 'local/busybox:1', gpus: 1, memory: '64M' },
    };
    broker = await startBrokerProcess(join(dir, 'home'), config);
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'erin') };
    adminEnv = { ...env, GPURUN_TOKEN: await createToken(broker, 'root', true) };
    await poll('hosts up', async () => {
      const h = (await gpurun(['hosts'], env)).stdout;
      return ['f1', 'f2', 'noisy', 'burst'].every((n) => new RegExp(`${n}\\s+up`).test(h));
    }, 60_000);
  });

  /** Put back after each test, also after a failure (a stopped host started again). */
  const afterDone: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const a of blocked.splice(0)) iptables('-D', a);
    for (const f of afterDone.splice(0)) await f();
  });

  after(async function () {
    for (const a of blocked.splice(0)) iptables('-D', a);
    await endHostSuite(broker, set, 'erin', workDir, dir);
  });

  const { detach } = cliJobs(() => ({ env, ws }));
  // Polling goes through the HTTP API, a few times a second: a CLI process per poll and job would load the machine
  // more than the faults under test. What a user sees is checked with the CLI.
  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const r = await fetch(`${broker.url}${path}`, { method, headers: { authorization: `Bearer ${env.GPURUN_TOKEN}`, 'content-type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}) });
    const j = (await r.json()) as T;
    if (!r.ok) throw new Error(`${method} ${path}: ${JSON.stringify(j)}`);
    return j;
  };
  const job = (id: string) => api<ListedJob>('GET', `/v1/jobs/${id}`);
  const logsOf = async (id: string) => (await fetch(`${broker.url}/v1/jobs/${id}/logs?offset=0`, { headers: { authorization: `Bearer ${env.GPURUN_TOKEN}` } })).text();
  const submit = async (on: string[], command: string[]) => (await api<{ id: string }>('POST', '/v1/jobs', { command, workspace: ws, gpus: 1, gpuType: on[3] })).id;
  // Polls the HTTP API every 300 ms: dozens of jobs polled at the harness's 50 ms would load the machine.
  const poll = <T>(what: string, fn: () => Promise<T | undefined | false>, ms: number): Promise<T> => waitFor(what, fn, ms, 300);
  const hostsSay = (what: string, re: RegExp, ms: number) => poll(what, async () => {
    const out = (await gpurun(['hosts'], env)).stdout;
    return re.test(out) && out;
  }, ms);
  const ended = (id: string, ms = 60_000) => poll(`job ${id} to end`, async () => {
    const j = await job(id);
    return ['succeeded', 'failed', 'lost', 'cancelled', 'timed_out'].includes(j.state) && j;
  }, ms);

  it('a host whose login shell prints a notice: the job log is exactly what the job printed, also across a kill -9 of the broker', async () => {
    const id = await detach([...ON.noisy, '--', 'sh', '-c', 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "line $i"; echo "err $i" >&2; sleep 0.4; done']);
    await poll('some output', async () => /line 3/.test(await logsOf(id)), 60_000);
    assert.equal((await job(id)).host, 'noisy');
    await broker.kill9();
    broker = await restartBroker(broker);
    const r = await gpurun(['logs', '-f', id], env, { timeoutMs: 90_000 });
    const want = Array.from({ length: 12 }, (_, i) => `line ${i + 1}\nerr ${i + 1}\n`).join('');
    assert.equal(r.stdout, want);
    assert.equal((await ended(id)).state, 'succeeded');
  }).timeout(180_000);

  it('an idle second broker on the same host (its own data folder) leaves the first one\'s running jobs and mounts alone', async () => {
    const ids = [await detach([...ON.f1, ...printer(40, 0.5)]), await detach([...ON.f1, ...printer(40, 0.5)])];
    await poll('both running', async () => (await Promise.all(ids.map(job))).every((j) => j.state === 'running'), 60_000);
    const other = await startBrokerProcess(join(dir, 'home2'), { ...config, hosts: (config.hosts as Array<Record<string, unknown>>).filter((h) => h.name === 'f1') });
    try {
      await sleep(10_000);
      for (const id of ids) assert.equal((await job(id)).state, 'running', `job ${id} kept running`);
    } finally {
      await stopBroker(other);
    }
    for (const id of ids) await gpurun(['cancel', id], env);
  });

  it('a job whose mount is lost keeps every line it printed, up to the last one printed on the way out', async () => {
    const id = await detach([...ON.f1, '--', 'sh', '-c', 'trap "echo Traceback: stopped at line \\$i; exit 3" TERM; i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.1; done']);
    await poll('running', async () => /line 30\n/.test(await logsOf(id)), 60_000);
    const mnt = mountPoint(workDir, brokerId(join(dir, 'home', 'data')), id);
    const sshfs = sshfsPidsOf(mnt);
    assert.ok(sshfs.length > 0, `an sshfs process of ${mnt}`);
    for (const pid of sshfs) process.kill(pid, 'SIGKILL');
    const j = await ended(id);
    assert.equal(j.state, 'failed');
    assert.match(j.reason, /^workspace_lost: /);
    const out = await logsOf(id);
    const last = /Traceback: stopped at line (\d+)\n$/.exec(out);
    assert.ok(last, `the last line is kept:\n${out.slice(-300)}`);
    assert.equal(out, `${lines(Number(last[1]))}Traceback: stopped at line ${last[1]}\n`, 'no line is missing or repeated');
  });

  it('a 10 s blip (packets dropped) leaves relay and direct jobs running: no end, no gap, no repeat; the host shows unreachable meanwhile', async () => {
    const relay = await detach([...ON.f1, ...printer(50, 0.5)]);
    const direct = await detach([...ON.f2, ...printer(50, 0.5)]);
    await poll('both print', async () => /line 3\n/.test(await logsOf(relay)) && /line 3\n/.test(await logsOf(direct)), 60_000);
    for (const a of ['127.0.4.1', '127.0.4.2']) (iptables('-I', a), blocked.push(a));
    const shown = await hostsSay('f1 unreachable', /f1\s+unreachable/, 25_000);
    assert.match(shown, /f1: unreachable since \d\d:\d\d:\d\d/);
    await sleep(10_000);
    for (const a of blocked.splice(0)) iptables('-D', a);
    for (const id of [relay, direct]) {
      const j = await ended(id, 120_000);
      assert.equal(j.state, 'succeeded', `${id}: ${j.reason}`);
      assert.equal(await logsOf(id), lines(50));
    }
    assert.match((await gpurun(['hosts'], env)).stdout, /f1\s+up/);
  }).timeout(240_000);

  it('a host that stays gone past hostLostAfter ends its jobs lost (unreachable, then lost) and frees their GPUs; it comes back up', async () => {
    const id = await detach([...ON.f2, '--', 'sh', '-c', 'echo started; sleep 600']);
    await poll('started', async () => /started/.test(await logsOf(id)), 60_000);
    const t0 = Date.now();
    await host('f2').stop();
    // Back up whatever happens here, so that a failure leaves f2 to the tests after this one.
    afterDone.push(() => host('f2').start().catch(() => {}));
    for (const c of containers(`gpurun.job=${id}`)) spawnSync('docker', ['rm', '-f', c]);
    host('f2').newBootId();
    const h = await hostsSay('f2 unreachable', /f2\s+unreachable/, 30_000);
    assert.match(h, /f2: unreachable since .*ECONNREFUSED/);
    assert.equal((await job(id)).state, 'running', 'within the grace the job is kept');
    const j = await ended(id, (GRACE_S + 40) * 1000);
    const took = (Date.now() - t0) / 1000;
    assert.equal(j.state, 'lost');
    // The runtime's words, or the outcome classifier's summary of the same evidence.
    assert.match(j.reason, /^(host_lost: f2 could not be reached for \d+ s|lost its host f2: unreachable \d+ s)/);
    assert.ok(took >= GRACE_S - 1, `not before the grace (${took} s)`);
    assert.match((await gpurun(['hosts'], env)).stdout, /f2\s+lost/);
    await host('f2').start();
    await hostsSay('f2 up again with all its GPUs free', /f2\s+up\s+16\/16/, 60_000);
  }).timeout(180_000);

  it('a host that reboots within the grace: its job ends lost at once when it answers again, saying it rebooted', async () => {
    const id = await detach([...ON.f2, '--', 'sh', '-c', 'echo started; sleep 600']);
    await poll('started', async () => /started/.test(await logsOf(id)), 60_000);
    await host('f2').stop();
    for (const c of containers(`gpurun.job=${id}`)) spawnSync('docker', ['rm', '-f', c]);
    host('f2').newBootId();
    await sleep(3_000);
    await host('f2').start();
    const j = await ended(id, GRACE_S * 1000);
    assert.equal(j.state, 'lost');
    assert.match(j.reason, /rebooted/);
    assert.match(j.reason, /vanished/);
  }).timeout(120_000);

  it('a GPU fault (Xid 79) on a job\'s GPU stops that job and quarantines the GPU; an Xid 13 does not; the other job runs on; an admin clears it', async () => {
    const a = await detach([...ON.f2, '--', 'sh', '-c', 'echo "gpu=$CUDA_VISIBLE_DEVICES"; sleep 600']);
    const b = await detach([...ON.f2, '--', 'sh', '-c', 'echo "gpu=$CUDA_VISIBLE_DEVICES"; sleep 600']);
    await poll('both running', async () => /gpu=/.test(await logsOf(a)) && /gpu=/.test(await logsOf(b)), 60_000);
    const [ga, gb] = [(await job(a)).gpuIndices[0], (await job(b)).gpuIndices[0]];
    const xid = (gpu: number, code: number, text: string) => `${new Date().toISOString().replace('Z', '+00:00').replace('.', ',')} NVRM: Xid (PCI:0000:${fakePciBusId(gpu).slice(9, 14).toLowerCase()}): ${code}, pid=4242, name=python3, ${text}`;
    host('f2').kernelLog(xid(gb, 13, 'Graphics SM Warp Exception on (GPC 0, TPC 0, SM 0): Out Of Range Address'));
    const t0 = Date.now();
    host('f2').kernelLog(xid(ga, 79, 'GPU has fallen off the bus.'));
    const ja = await ended(a, 30_000);
    const took = (Date.now() - t0) / 1000;
    assert.equal(ja.state, 'failed');
    assert.match(ja.reason, new RegExp(`^(gpu_fault: Xid 79 on GPU ${ga} \\(GPU has fallen off the bus\\.\\)|GPU ${ga} on f2 failed \\(Xid 79\\))`));
    assert.ok(took <= 20, `decided in ${took} s`);
    const hosts = (await gpurun(['hosts'], env)).stdout;
    assert.match(hosts, new RegExp(`f2 GPU ${ga} .*quarantined \\(Xid 79 at \\d\\d:\\d\\d\\)`));
    assert.doesNotMatch(hosts, new RegExp(`f2 GPU ${gb} .*quarantined`), 'Xid 13 is the application\'s error');
    assert.equal((await job(b)).state, 'running', 'the other job on the host runs on');
    // f2 has other free GPUs: a new job runs on one of them, never on the quarantined one.
    const two = await detach([...ON.f2, '--', 'echo', 'placed']);
    assert.equal((await ended(two)).state, 'succeeded');
    assert.ok(!(await job(two)).gpuIndices.includes(ga), 'no job gets the quarantined GPU');
    const refused = await gpurun(['hosts', 'clear', 'f2', String(ga)], env);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /only an admin/);
    const cleared = await gpurun(['hosts', 'clear', 'f2', String(ga)], adminEnv);
    assert.equal(cleared.code, 0, cleared.stderr);
    assert.doesNotMatch((await gpurun(['hosts'], env)).stdout, new RegExp(`f2 GPU ${ga} .*quarantined`));
    await gpurun(['cancel', b], env);
  }).timeout(120_000);

  it('kill -9 of the broker during a burst of starts: every job is followed to its end or never ran; no container is left untracked', async () => {
    const ids = await Promise.all(Array.from({ length: 8 }, (_, i) => submit(ON.f2, ['sh', '-c', `echo "job ${i}"; sleep 4; echo done`])));
    await poll('some starting', async () => (await Promise.all(ids.map(job))).some((j) => j.state === 'starting' || j.state === 'running'), 30_000);
    await broker.kill9();
    broker = await restartBroker(broker);
    for (const id of ids) {
      const j = await ended(id, 120_000);
      // A job caught before it ran is requeued (or, without requeues, ends lost "before it ran").
      if (j.state === 'succeeded') assert.match(await logsOf(id), /job \d\ndone\n$/);
      else {
        assert.equal(j.state, 'lost', `${id}: ${j.reason}`);
        assert.match(j.reason, /before it ran/);
      }
    }
    await poll('no container of these jobs left', async () => ids.every((id) => containers(`gpurun.job=${id}`).length === 0), 90_000);
  }).timeout(300_000);

  it('32 jobs started at once on one host with sshd\'s default limits (MaxSessions 10) all start and succeed', async () => {
    const ids = await Promise.all(Array.from({ length: 32 }, () => submit(ON.burst, ['sh', '-c', 'echo ok'])));
    const out: ListedJob[] = [];
    for (const id of ids) out.push(await ended(id, 240_000));
    assert.deepEqual(out.filter((j) => j.state !== 'succeeded').map((j) => `${j.id} ${j.state}: ${j.reason}`), [], 'no start fails');
    assert.ok(out.every((j) => j.host === 'burst'));
    for (const id of ids) assert.equal(await logsOf(id), 'ok\n');
  }).timeout(300_000);

  it('kill -9 of the broker with 30 running jobs across two hosts: none lost, every log byte for byte', async () => {
    // Each job prints 40 lines, and after line 20 waits for a file in the workspace: all 30 are running at the kill.
    const gate = `go-${Date.now()}`;
    const gated = (i: number) => ['sh', '-c', `i=1; while [ $i -le 40 ]; do echo "j${i} $i"; if [ $i -eq 20 ]; then while [ ! -e ${gate} ]; do sleep 0.5; done; fi; i=$((i+1)); sleep 0.5; done`];
    const ids = await Promise.all(Array.from({ length: 30 }, (_, i) => submit(i % 2 ? ON.f2 : ON.noisy, gated(i))));
    // A job that ends before all are seen printing ends the wait: its reason says why.
    const early = await poll('all 30 running and printing', async () => {
      const js = await Promise.all(ids.map(job));
      const bad = js.filter((j) => ['succeeded', 'failed', 'lost', 'cancelled', 'timed_out'].includes(j.state));
      if (bad.length) return bad;
      if (js.some((j) => j.state !== 'running')) return false;
      for (const id of ids) if (!/ 2\n/.test(await logsOf(id))) return false;
      return [];
    }, 180_000);
    assert.deepEqual(early.map((j) => `${j.id} ${j.state}: ${j.reason}`), [], 'every job starts and runs');
    await broker.kill9();
    await sleep(2_000);
    broker = await restartBroker(broker);
    writeFileSync(join(ws, gate), '');
    const out: ListedJob[] = [];
    for (const id of ids) out.push(await ended(id, 240_000));
    assert.deepEqual(out.filter((j) => j.state !== 'succeeded').map((j) => `${j.id} ${j.state}: ${j.reason}`), [], 'none lost');
    for (const [i, id] of ids.entries()) assert.equal(await logsOf(id), lines(40, `j${i}`), `job ${id}`);
  }).timeout(300_000);
});
