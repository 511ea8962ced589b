/**
 * Jobs that survive faults, end to end through the CLI against a real broker process: real sshd hosts on loopback
 * addresses (127.0.15.x), the real Docker engine, real sshfs over FUSE, iptables for link blips.
 * - Repeated blips shorter than the grace (packets to a host dropped both ways, a few seconds apart): TCP's
 *   retransmission backoff carries over from one blip to the next, so a connection may stay silent far longer than
 *   any single blip. No job may be restarted or failed by that, on a relay or a direct mount.
 * - GPU quarantines are kept by the broker's store: `gpurun hosts` shows them with their reason and how to lift them,
 *   across a broker restart, until an admin clears them.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI, cliJobs, createToken, fakePciBusId, gpurun, iptables, NODE, restartBroker, scratch, startBrokerProcess, testEnv, requirePart, type BrokerProc, type ListedJob, waitFor } from '../support/harness.ts';
import { makeSshHosts, endHostSuite, sshHostsMissing, type TestHost, type TestHostSet } from '../support/sshHosts.ts';

const L4 = { name: 'NVIDIA L4', memoryMiB: 23034 };
const A10 = { name: 'NVIDIA A10', memoryMiB: 23028 };
const T4 = { name: 'Tesla T4', memoryMiB: 15360 };
/** Each host has its own GPU type: a job is sent to a host by asking for one GPU of that type. */
const ON = { relay: ['--gpus', '1', '--gpu-type', 'L4'], direct: ['--gpus', '1', '--gpu-type', 'A10'], gpu: ['--gpus', '1', '--gpu-type', 'T4'] };
const GRACE_S = 20;
const ADDR = { relay: '127.0.15.1', direct: '127.0.15.2', dev: '127.0.15.3', gpu: '127.0.15.4' };

/** `PREFIX 1` … `PREFIX n`, one a line. */
function lines(n: number, prefix: string): string {
  return Array.from({ length: n }, (_, i) => `${prefix} ${i + 1}\n`).join('');
}

describe('jobs that survive faults: repeated blips, quarantines kept (sshd + Docker + sshfs + iptables)', function () {
  this.timeout(420_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let adminEnv: NodeJS.ProcessEnv;
  let ws: string;
  let workDir: string;
  let host: (name: string) => TestHost;
  const blocked = new Set<string>();

  before(async function () {
    requirePart(this, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
    requirePart(this, 'iptables', spawnSync('iptables', ['-L', '-n']).status === 0, 'iptables -L fails (apt-get install iptables)');
    dir = scratch('gpurun-survive-');
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 's1', address: ADDR.relay, gpus: Array(4).fill(L4) },
      { name: 's2', address: ADDR.direct, gpus: Array(4).fill(A10) },
      { name: 'dev', address: ADDR.dev, gpus: [] },
      { name: 's4', address: ADDR.gpu, gpus: Array(2).fill(T4) },
    ]);
    host = (name) => set.hosts.find((h) => h.name === name)!;
    const hostKnown = join(dir, 'hosts', 'known_hosts_on_gpu_hosts');
    writeFileSync(hostKnown, `${host('dev').knownHostsLine}\n`);
    ws = join(dir, 'workspace');
    mkdirSync(ws);
    writeFileSync(join(ws, 'data.txt'), 'from the developer\n');
    workDir = join(dir, 'hostwork');
    // Each host has its own workDir, as separate machines do: a job that moves to another host must not meet the
    // broken mount its first attempt left at the same path on the lost one.
    const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env' };
    const direct = { transport: 'direct', target: `root@${ADDR.dev}:2222`, identityFile: set.clientKey, knownHosts: hostKnown, sftpServer: `${NODE} ${CLI} sftp-serve` };
    broker = await startBrokerProcess(join(dir, 'home'), {
      hostLostAfter: `${GRACE_S}s`,
      restartBackoff: { first: '1s', max: '5s' },
      hosts: [
        { ...common, workDir: join(workDir, 's1'), name: 's1', address: ADDR.relay, mount: { transport: 'relay' } },
        { ...common, workDir: join(workDir, 's2'), name: 's2', address: ADDR.direct, mount: direct },
        { ...common, workDir: join(workDir, 's4'), name: 's4', address: ADDR.gpu, mount: { transport: 'relay' } },
      ],
      defaults: { image: 'local/busybox:1', gpus: 1, memory: '64M' },
    });
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'erin') };
    adminEnv = { ...env, GPURUN_TOKEN: await createToken(broker, 'root', true) };
    await poll('hosts up', async () => {
      const h = (await gpurun(['hosts'], env)).stdout;
      return ['s1', 's2', 's4'].every((n) => new RegExp(`${n}\\s+up`).test(h));
    }, 60_000);
  });

  /** Put back after each test, also after a failure (jobs cancelled, a GPU cleared, a stopped host started). */
  const afterDone: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const a of blocked) iptables('-D', a);
    blocked.clear();
    for (const f of afterDone.splice(0)) await f().catch(() => {});
  });

  after(async function () {
    for (const a of blocked) iptables('-D', a);
    blocked.clear();
    await endHostSuite(broker, set, 'erin', workDir, dir);
  });

  const { detach } = cliJobs(() => ({ env, ws }));
  const api = async <T>(method: string, path: string): Promise<T> => {
    const r = await fetch(`${broker.url}${path}`, { method, headers: { authorization: `Bearer ${env.GPURUN_TOKEN}` } });
    const j = (await r.json()) as T;
    if (!r.ok) throw new Error(`${method} ${path}: ${JSON.stringify(j)}`);
    return j;
  };
  type Job = ListedJob & { attempts?: Array<{ n: number; host: string | null; fault: string | null; reason: string | null; endedAt: string | null }> };
  const job = (id: string) => api<Job>('GET', `/v1/jobs/${id}`);
  const logsOf = async (id: string) => (await fetch(`${broker.url}/v1/jobs/${id}/logs?offset=0`, { headers: { authorization: `Bearer ${env.GPURUN_TOKEN}` } })).text();
  const poll = <T>(what: string, fn: () => Promise<T | undefined | false>, ms: number): Promise<T> => waitFor(what, fn, ms, 300);
  const ended = (id: string, ms: number) => poll(`job ${id} to end`, async () => {
    const j = await job(id);
    return ['succeeded', 'failed', 'lost', 'cancelled', 'timed_out'].includes(j.state) && j;
  }, ms);
  const attemptsOf = (j: Job) => (j.attempts ?? []).map((a) => `attempt ${a.n} on ${a.host}: ${a.fault ?? 'running'} (${a.reason ?? ''})`).join('; ');

  it('eight blips of 8 s, 4 s apart, on a relay host and a direct host: no restart, no failure, no gap; the relay mount still reads and writes after', async () => {
    const blips = 8;
    const blipS = 8;
    const gapS = 4;
    // Prints through the blips and well past them (TCP may stay silent for a while after the last one), then reads a
    // file of the workspace and writes one: the relay mount must still serve both ways.
    const n = 2 * (blips * (blipS + gapS) + 40);
    const script = (p: string) => `i=1; while [ $i -le ${n} ]; do echo "${p} $i"; i=$((i+1)); sleep 0.5; done; cat data.txt; echo "written by ${p}" > "after-${p}.txt"`;
    const relay = await detach([...ON.relay, '--restarts', '3', '--', 'sh', '-c', script('r')]);
    const direct = await detach([...ON.direct, '--restarts', '3', '--', 'sh', '-c', script('d')]);
    await poll('both print', async () => /r 3\n/.test(await logsOf(relay)) && /d 3\n/.test(await logsOf(direct)), 90_000);
    for (let b = 0; b < blips; b++) {
      for (const a of [ADDR.relay, ADDR.direct]) (iptables('-I', a), blocked.add(a));
      await sleep(blipS * 1000);
      for (const a of blocked) iptables('-D', a);
      blocked.clear();
      await sleep(gapS * 1000);
      for (const id of [relay, direct]) {
        const j = await job(id);
        assert.equal(j.state, 'running', `${id} after blip ${b + 1}: ${j.state} ${j.reason} ${attemptsOf(j)}`);
        assert.equal(j.attempts?.length ?? 1, 1, `${id} restarted after blip ${b + 1}: ${attemptsOf(j)}`);
      }
    }
    for (const [id, p] of [[relay, 'r'], [direct, 'd']] as const) {
      const j = await ended(id, 240_000);
      assert.equal(j.state, 'succeeded', `${id}: ${j.reason} ${attemptsOf(j)}`);
      assert.equal(j.attempts?.length ?? 1, 1, `${id}: ${attemptsOf(j)}`);
      assert.equal(await logsOf(id), `${lines(n, p)}from the developer\n`, `${id}: every line once, in order`);
      assert.equal(readFileSync(join(ws, `after-${p}.txt`), 'utf8'), `written by ${p}\n`);
    }
  }).timeout(420_000);

  it('a GPU quarantined after an Xid 79 stays quarantined across a kill -9 of the broker, shown with its reason and how to lift it, until an admin clears it', async () => {
    const id = await detach([...ON.gpu, '--restarts', '1', '--', 'sh', '-c', 'echo started; sleep 600']);
    await poll('started', async () => /started/.test(await logsOf(id)), 90_000);
    const gpu = (await job(id)).gpuIndices[0];
    const other = 1 - gpu;
    afterDone.push(() => gpurun(['cancel', id], env), () => gpurun(['hosts', 'clear', 's4', String(gpu)], adminEnv));
    const stamp = new Date().toISOString().replace('Z', '+00:00').replace('.', ',');
    host('s4').kernelLog(`${stamp} NVRM: Xid (PCI:0000:${fakePciBusId(gpu).slice(9, 14).toLowerCase()}): 79, pid=4242, name=python3, GPU has fallen off the bus.`);
    const moved = await poll('attempt 2 placed', async () => {
      const j = await job(id);
      return (j.attempts ?? []).some((a) => a.n === 2 && a.host) && j;
    }, 60_000);
    assert.equal(moved.attempts![0].fault, 'gpu_fault', attemptsOf(moved));
    assert.deepEqual(moved.gpuIndices, [other], 'attempt 2 runs away from the faulty GPU');
    const shown = new RegExp(`s4 GPU ${gpu} .*quarantined \\(Xid 79 at \\d\\d:\\d\\d\\)[^\n]*\n\\s+Xid 79: GPU has fallen off the bus\\.; an admin lifts it with: gpurun hosts clear s4 ${gpu} \\(a reboot of s4 lifts it too\\)`);
    assert.match((await gpurun(['hosts'], env)).stdout, shown);

    // Attempt 2 running before the kill (one still starting would be requeued by the restart, freeing the other T4).
    await poll('attempt 2 running', async () => {
      const j = await job(id);
      return j.state === 'running' && (j.attempts ?? []).some((a) => a.n === 2) && /started/.test((await logsOf(id)).split('──').pop() ?? '');
    }, 60_000);
    await broker.kill9();
    broker = await restartBroker(broker);
    env.GPURUN_BROKER = adminEnv.GPURUN_BROKER = broker.url;
    const after = (await gpurun(['hosts'], env)).stdout;
    assert.match(after, shown, 'the quarantine is kept by the store, from the restarted broker\'s first answer');
    const listed = JSON.parse((await gpurun(['hosts', '--json'], env)).stdout) as Array<{ name: string; gpus: Array<{ index: number; quarantined?: { xid?: number; detail: string; source?: string } }> }>;
    const q = listed.find((h) => h.name === 's4')!.gpus.find((g) => g.index === gpu)!.quarantined;
    assert.deepEqual([q?.xid, q?.detail, q?.source], [79, 'GPU has fallen off the bus.', 'xid']);
    // The only other T4 is held by attempt 2: a new T4 job waits, it never gets the quarantined GPU.
    const waiting = await detach([...ON.gpu, '--', 'echo', 'placed']);
    afterDone.push(() => gpurun(['cancel', waiting], env));
    await sleep(8_000);
    const w = await job(waiting);
    assert.ok(!w.gpuIndices.includes(gpu), `the new job got the quarantined GPU ${gpu}`);
    // While attempt 2 holds the other T4 the new job waits. s4 mounts over the relay, which ends with the broker
    // process (README): attempt 2 may end workspace_lost with the kill, and the new job then takes the other T4.
    const holder = await job(id);
    if (holder.state === 'running') assert.equal(w.state, 'queued', 'no job gets the quarantined GPU after the restart either');

    const refused = await gpurun(['hosts', 'clear', 's4', String(gpu)], env);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /only an admin/);
    const cleared = await gpurun(['hosts', 'clear', 's4', String(gpu)], adminEnv);
    assert.equal(cleared.code, 0, cleared.stderr);
    assert.doesNotMatch(cleared.stdout, new RegExp(`s4 GPU ${gpu} .*quarantined`));
    assert.equal((await ended(waiting, 90_000)).state, 'succeeded', 'the cleared GPU takes jobs again');
    await broker.kill9();
    broker = await restartBroker(broker);
    env.GPURUN_BROKER = adminEnv.GPURUN_BROKER = broker.url;
    assert.doesNotMatch((await gpurun(['hosts'], env)).stdout, /quarantined/, 'a lifted quarantine stays lifted after a restart');
    await gpurun(['cancel', id], env);
    await ended(id, 60_000);
  }).timeout(300_000);

  it('a host lost for real (sshd and its sessions killed, containers removed, new boot id): the job runs on another host as attempt 2, with the marker line', async () => {
    // No GPU type: the job may run on any host; the one it lands on is the one that is lost.
    const id = await detach(['--gpus', '1', '--restarts', '1', '--', 'sh', '-c', 'echo "attempt $GPURUN_ATTEMPT after ${GPURUN_PREVIOUS_FAULT:-nothing}"; sleep 600']);
    await poll('started', async () => /attempt 1 after nothing\n/.test(await logsOf(id)), 90_000);
    const first = (await job(id)).host!;
    const gone = host(first);
    afterDone.push(() => gpurun(['cancel', id], env));
    try {
      await gone.stop();
      for (const c of spawnSync('docker', ['ps', '-aq', '--filter', `label=gpurun.job=${id}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
      gone.newBootId();
      const j = await poll('attempt 2 running elsewhere', async () => {
        const x = await job(id);
        return x.state === 'running' && (x.attempts ?? []).length === 2 && /attempt 2 after host_lost/.test(await logsOf(id)) && x;
      }, (GRACE_S + 90) * 1000).catch(async (e) => {
        const x = await job(id);
        throw new Error(`${(e as Error).message}: ${x.state} ${x.reason} ${attemptsOf(x)}; log: ${await logsOf(id)}; hosts:\n${(await gpurun(['hosts'], env)).stdout}`);
      });
      assert.equal(j.attempts![0].fault, 'host_lost', attemptsOf(j));
      assert.notEqual(j.host, first, 'attempt 2 runs away from the lost host');
      const log = await logsOf(id);
      assert.match(log, new RegExp(`^attempt 1 after nothing\n── attempt 2/2 after host_lost on ${first} \\([^\n]*\\) ──\nattempt 2 after host_lost\n$`), log);
      const ls = (await gpurun(['ls'], env)).stdout;
      assert.match(ls, new RegExp(`attempt 2/2 · after host_lost on ${first}`));
    } finally {
      await gone.start();
    }
    await gpurun(['cancel', id], env);
    assert.equal((await ended(id, 60_000)).state, 'cancelled');
    await poll(`${first} up again`, async () => new RegExp(`${first}\\s+up`).test((await gpurun(['hosts'], env)).stdout), 90_000);
  }).timeout(300_000);
});
