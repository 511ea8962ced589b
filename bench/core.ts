/**
 * Broker core figures: a scheduling pass at scale, submit throughput over HTTP, submit → first output
 * line on the local host, and log throughput from a job through the broker to a following client.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { schedule, gpuMatches, type Allocation, type HostCapacity, type QueuedJob } from '../server/core/scheduler.ts';
import type { Resources } from '../server/protocol/jobs.ts';
import { BrokerClient } from '../server/protocol/client.ts';
import { cleanup, createToken, scratch, startBrokerProcess } from '../test/support/harness.ts';
import { fmt, percentile, report, timeIt } from './_support.ts';

export async function run(): Promise<void> {
  schedulerPass();
  const dir = scratch('gpurun-bench-');
  try {
    await submitThroughput(dir);
    await firstLine(dir);
    await logThroughput(dir);
  } finally {
    cleanup(dir);
  }
}

/** The naive placement a first version would write: every job scans every host. Baseline only. */
function naiveSchedule(hosts: HostCapacity[], _alloc: Allocation[], queued: QueuedJob[]): number {
  const free = hosts.map((h) => ({ gpus: [...h.gpus], cpus: h.cpus, mem: h.memoryMiB }));
  let placed = 0;
  for (const j of queued) {
    for (const h of free) {
      const fit = h.gpus.filter((g) => gpuMatches(g.name, j.resources.gpuType));
      if (fit.length >= j.resources.gpus && h.cpus >= j.resources.cpus && h.mem >= j.resources.memoryMiB) {
        const take = new Set(fit.slice(0, j.resources.gpus).map((g) => g.index));
        h.gpus = h.gpus.filter((g) => !take.has(g.index));
        h.cpus -= j.resources.cpus;
        h.mem -= j.resources.memoryMiB;
        placed++;
        break;
      }
    }
  }
  return placed;
}

function schedulerPass(): void {
  const types = ['NVIDIA A100-SXM4-80GB', 'NVIDIA H100 80GB HBM3', 'NVIDIA L4'];
  const hosts: HostCapacity[] = Array.from({ length: 1000 }, (_, i) => ({
    name: `h${i}`,
    up: i % 50 !== 0,
    gpus: Array.from({ length: [8, 4, 2][i % 3] }, (_, index) => ({ index, name: types[i % 3] })),
    cpus: 64,
    memoryMiB: 512_000,
  }));
  // Half the pool is busy.
  const alloc: Allocation[] = hosts.filter((_, i) => i % 2 === 0).map((h) => ({ jobId: `r-${h.name}`, host: h.name, gpuIndices: h.gpus.slice(0, h.gpus.length / 2).map((g) => g.index), cpus: 8, memoryMiB: 64_000 }));
  let seed = 1;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const queued: QueuedJob[] = Array.from({ length: 10_000 }, (_, i) => {
    const r: Resources = { gpus: [1, 1, 2, 4, 8][Math.floor(rnd() * 5)], cpus: 1 + Math.floor(rnd() * 8), memoryMiB: 4096 * (1 + Math.floor(rnd() * 8)), timeLimitSec: 0 };
    if (rnd() < 0.3) r.gpuType = ['A100', 'H100', 'L4'][Math.floor(rnd() * 3)];
    return { id: `j${i}`, queue: rnd() < 0.2 ? 'online' : 'offline', resources: r };
  });
  let placed = 0;
  for (let i = 0; i < 3; i++) schedule(hosts, alloc, queued); // warm up the JIT
  const runs: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    placed = schedule(hosts, alloc, queued).length;
    runs.push(performance.now() - t0);
  }
  const naive: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    naiveSchedule(hosts, alloc, queued);
    naive.push(performance.now() - t0);
  }
  const p50 = percentile(runs, 50);
  report('scheduler: one pass, 1,000 hosts × 10,000 queued jobs (p50 of 10)', `${fmt(p50)}, ${placed} placed`, '≤ 50 ms', p50 <= 50, `naive scan of every host per job ${fmt(percentile(naive, 50))} (${(percentile(naive, 50) / p50).toFixed(1)}× slower)`);
}

async function benchBroker(dir: string, name: string, cfg: Record<string, unknown> = {}) {
  const b = await startBrokerProcess(join(dir, name), { hosts: [{ name: 'local', type: 'local', cpus: 4, memory: '8G' }], ...cfg });
  const token = await createToken(b, 'bench');
  return { b, token };
}

async function submitThroughput(dir: string): Promise<void> {
  const { b, token } = await benchBroker(dir, 'submit');
  const agent = new Agent({ connections: 16, pipelining: 1 });
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const post = async (body: unknown) => {
    const r = await request(`${b.url}/v1/jobs`, { method: 'POST', dispatcher: agent, headers, body: JSON.stringify(body) });
    await r.body.text();
    if (r.statusCode !== 201) throw new Error(`submit answered ${r.statusCode}`);
  };
  // One job holds every CPU, so the measured submissions queue rather than spawn processes.
  await post({ command: ['sleep', '120'], workspace: dir, gpus: 0, cpus: 4 });
  const N = 3000;
  const CONC = 16;
  const loop = async (n: number, fn: () => Promise<void>) => {
    let next = 0;
    await Promise.all(Array.from({ length: CONC }, async () => {
      while (next++ < n) await fn();
    }));
  };
  await loop(200, () => post({ command: ['true'], workspace: dir, gpus: 0 })); // warm up
  const ms = await timeIt(() => loop(N, () => post({ command: ['python3', 'train.py', '--lr', '3e-4'], workspace: dir, gpus: 0, cpus: 1, memory: '1G' })));
  const health = await timeIt(() =>
    loop(N, async () => {
      const r = await request(`${b.url}/v1/health`, { dispatcher: agent });
      await r.body.text();
    }),
  );
  const rate = N / (ms / 1000);
  const baseRate = N / (health / 1000);
  report(`submit throughput over HTTP (${N} jobs, ${CONC} connections, queue growing to ${N + 200})`, `${Math.round(rate)} jobs/s`, '≥ 1,000 jobs/s', rate >= 1000, `GET /v1/health on the same broker: ${Math.round(baseRate)} req/s (submit reaches ${((rate / baseRate) * 100).toFixed(0)}% of it)`);
  await agent.close();
  await b.stop();
}

async function firstLine(dir: string): Promise<void> {
  const { b, token } = await benchBroker(dir, 'first-line');
  const client = new BrokerClient({ address: b.url, token });
  const cmd = ['sh', '-c', 'echo first line; sleep 0.2'];
  const times: number[] = [];
  for (let i = 0; i < 22; i++) {
    const t0 = performance.now();
    const job = await client.submit({ command: cmd, workspace: dir, gpus: 0 });
    for await (const { data } of client.logs(job.id, 0, { follow: true })) {
      if (data.includes('\n')) {
        times.push(performance.now() - t0);
        break;
      }
    }
  }
  const direct: number[] = [];
  for (let i = 0; i < 22; i++) {
    const t0 = performance.now();
    await new Promise<void>((res) => {
      const c = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });
      c.stdout.once('data', () => {
        direct.push(performance.now() - t0);
        res();
      });
    });
  }
  const p50 = percentile(times.slice(2), 50);
  const base = percentile(direct.slice(2), 50);
  report('submit → first output line, local host (p50 of 20)', `${fmt(p50)} (p90 ${fmt(percentile(times.slice(2), 90))})`, '≤ 300 ms', p50 <= 300, `the same command spawned directly: ${fmt(base)} (gpurun adds ${fmt(p50 - base)})`);
  await client.close();
  await b.stop();
}

async function logThroughput(dir: string): Promise<void> {
  const { b, token } = await benchBroker(dir, 'logs');
  const client = new BrokerClient({ address: b.url, token });
  const MB = 512;
  const job = await client.submit({ command: ['head', '-c', `${MB}M`, '/dev/zero'], workspace: dir, gpus: 0 });
  let bytes = 0;
  let t0 = 0;
  for await (const { data } of client.logs(job.id, 0, { follow: true })) {
    if (!t0) t0 = performance.now();
    bytes += data.length;
  }
  const secs = (performance.now() - t0) / 1000;
  // Baseline: the same bytes through a plain pipe on this machine.
  const pipeSecs = await new Promise<number>((res) => {
    const t = performance.now();
    const c = spawn('head', ['-c', `${MB}M`, '/dev/zero'], { stdio: ['ignore', 'pipe', 'ignore'] });
    c.stdout.on('data', () => {});
    c.on('close', () => res((performance.now() - t) / 1000));
  });
  const rate = bytes / 2 ** 20 / secs;
  const pipeRate = MB / pipeSecs;
  report(`log throughput, job → broker → following client (${MB} MiB)`, `${rate.toFixed(0)} MB/s`, '≥ 50 MB/s', rate >= 50 && bytes === MB * 2 ** 20, `the same bytes through a plain pipe into this process: ${pipeRate.toFixed(0)} MB/s`);
  await client.close();
  await b.stop();
}
