/**
 * `npm run bench -- migration`: cooperative moves between two Docker hosts over SSH on loopback (127.0.11.10-11).
 *   1. downtime (last output line on the source → first on the destination, from the job's own timestamps) and steps
 *      redone, for checkpoints of 10 MB, 100 MB and 1 GB; the job's own checkpoint time; bytes copied while running
 *      and in the final round, against a full copy. The job keeps its bulk state in a file it writes as it runs (a
 *      periodic checkpoint); on the signal it saves its step and exits 85.
 *   2. load: the time from an online job's CPU load starting to the move starting (the window is part of it).
 *   3. 20 moves in a row of one job: double runs (two containers of the job at once, a step printed twice).
 * Goal: downtime ≤ 2 s + the job's own checkpoint time at 100 MB. Runs only when named. Root, sshd, sshfs, Docker.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, createToken, gpurun, ROOT, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../test/support/harness.ts';
import { makeSshHosts, mountedUnder, sshHostsMissing, type TestHostSet } from '../test/support/sshHosts.ts';
import type { Job } from '../server/protocol/jobs.ts';
import { runTransparent } from './_migrationTransparent.ts';
import { listEnv } from './_support.ts';

export const onlyWhenNamed = true;

const JOB = `
import os, time
from gpurun_checkpoint import Checkpoint
ck = Checkpoint()
state = ck.load({"step": 1})
size = int(os.environ["CKPT_MB"]) * 1024 * 1024
if not ck.resuming:
    t = time.time()
    with open(ck.path("bulk.bin"), "wb") as f:
        block = os.urandom(1024 * 1024)
        for _ in range(size // len(block)):
            f.write(block)
    print(f"bulk {time.time() - t:.3f}", flush=True)
step = state["step"]
while step <= int(os.environ.get("STEPS", "100000")):
    print(f"t={time.time() * 1000:.0f} step {step}", flush=True)
    time.sleep(0.1)
    if ck.requested:
        t = time.time()
        ck.save({"step": step + 1})
        print(f"t={time.time() * 1000:.0f} saved in {(time.time() - t) * 1000:.1f} ms", flush=True)
        ck.exit()
    step += 1
print("done", flush=True)
`;

interface Parsed {
  downtimeMs: number;
  redone: number;
  saveMs: number;
  /** The job's own times (ms since the epoch) of its last line on the source and its first on the destination. */
  lastAt: number;
  firstAt: number;
}

/**
 * Where the downtime of one move went, from the broker's log lines about the job (their `t`) between the job's last
 * line on the source and its first on the destination: "+ms step" for each step, from the last line on.
 */
function timeline(brokerLog: string, id: string, p: Parsed): string {
  const rows = brokerLog.split('\n').filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return null; } })
    .filter((r): r is Record<string, unknown> => !!r && (r.job === id || r.container === `gpurun-${id}` || String(r.container ?? '').startsWith(`gpurun-${id}-`)))
    .map((r) => ({ ...r, at: Date.parse(String(r.t)) }) as Record<string, unknown> & { at: number }).filter((r) => r.at >= p.lastAt - 5_000 && r.at <= p.firstAt + 5_000);
  const out: string[] = [];
  const rel = (at: number) => `+${at - p.lastAt}`;
  for (const r of rows) {
    if (String(r.msg).startsWith('job ended on its host') && r.at >= p.lastAt) out.push(`${rel(r.at - Number(r.cleanupMs) - Number(r.stateMs))} source output ended`, `${rel(r.at - Number(r.cleanupMs))} inspected`, `${rel(r.at)} source cleaned up`);
    else if (r.msg === 'attempt ended for a move') out.push(`${rel(r.at)} attempt ended`);
    else if (r.msg === 'move: final copy done') out.push(`${rel(r.at)} final copy (${r.ms} ms)`);
    else if (r.msg === 'container started' && r.at >= p.lastAt) out.push(`${rel(r.at)} started (mount etc. ${r.mountMs} ms, docker ${r.runMs} ms)`);
    else if (r.msg === 'destination prepared') out.push(`${rel(r.at)} destination prepared (${r.ms} ms)`);
    else if (/prepared|move/.test(String(r.msg))) out.push(`${rel(r.at)} ${r.msg}${r.why ? ` (${String(r.why)})` : ""}`);
  }
  out.push(`${rel(p.firstAt)} first line`);
  return out.join(', ');
}

/** From the log of a job moved once: the last line's time before the marker, the first after, steps around it. */
function parseMove(log: string): Parsed {
  const lines = log.split('\n');
  const at = lines.findIndex((l) => l.startsWith('── moved'));
  const before = lines.slice(0, at).filter((l) => l.startsWith('t='));
  const after = lines.slice(at).filter((l) => /^t=\d+ step/.test(l));
  const t = (l: string) => Number(/^t=(\d+)/.exec(l)![1]);
  const stepOf = (l: string) => Number(/step (\d+)/.exec(l)![1]);
  const lastStep = before.filter((l) => l.includes(' step ')).map(stepOf).pop() ?? 0;
  const saved = before.map((l) => /saved in ([\d.]+) ms/.exec(l)).filter(Boolean).pop();
  const lastAt = t(before[before.length - 1]);
  const firstAt = t(after[0]);
  return { downtimeMs: firstAt - lastAt, redone: Math.max(0, lastStep - stepOf(after[0]) + 1), saveMs: saved ? Number(saved[1]) : NaN, lastAt, firstAt };
}

export async function run(): Promise<void> {
  const missing = sshHostsMissing();
  if (missing) {
    console.log(`  skipped: ${missing}`);
    return;
  }
  const dir = scratch('gpurun-bench-migration-');
  let set: TestHostSet | undefined;
  let broker: BrokerProc | undefined;
  const workDirs: string[] = [];
  try {
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'm1', address: '127.0.11.10', gpus: [{ name: 'NVIDIA L4', memoryMiB: 23034 }] },
      { name: 'm2', address: '127.0.11.11', gpus: [{ name: 'NVIDIA L4', memoryMiB: 23034 }] },
    ]);
    const ws = join(dir, 'ws');
    mkdirSync(ws);
    copyFileSync(join(ROOT, 'examples', 'gpurun_checkpoint.py'), join(ws, 'gpurun_checkpoint.py'));
    writeFileSync(join(ws, 'job.py'), JOB);
    const hosts = set.hosts.map((h, i) => {
      workDirs[i] = join(dir, `work-${h.name}`);
      return { type: 'ssh', name: h.name, address: h.address, user: 'root', port: 2222, identityFile: set!.clientKey, knownHosts: set!.knownHosts, gpuMode: 'env', workDir: workDirs[i], runtime: 'docker', mount: { transport: 'relay' }, cpus: 2 };
    });
    broker = await startBrokerProcess(join(dir, 'home'), { hosts, defaults: { image: 'local/python:3', gpus: 1, memory: '2G' }, migration: { checkpointTimeout: '60s', threshold: { cpu: 0.35 }, window: '5s', sampleEvery: '1s' } });
    const env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'bench-migration') };
    const admin = { ...env, GPURUN_TOKEN: await createToken(broker, 'root', true) };
    const show = async (id: string): Promise<Job> => JSON.parse((await gpurun(['show', '--json', id], env)).stdout);
    const logs = async (id: string) => (await gpurun(['logs', id], env)).stdout;
    await waitFor('hosts up', async () => (await gpurun(['hosts'], env)).stdout.split('\n').filter((l) => /^m\d\s+up/.test(l)).length === 2, 60_000, 500);
    const submit = async (args: string[], e: Record<string, string>) => {
      const r = await gpurun(['run', '--detach', '--workspace', ws, '--queue', 'offline', ...Object.entries(e).flatMap(([k, v]) => ['--env', `${k}=${v}`]), ...args], env);
      if (r.code !== 0) throw new Error(r.stderr);
      return r.stdout.trim();
    };

    const c: Ctx = { env, admin, show, logs, submit, broker, ws };
    // MIGRATION_PARTS: which parts run (1 sizes, 2 load, 3 twenty moves, 4 transparent); MIGRATION_MB: the
    // checkpoint sizes of part 1 (MB); MIGRATION_RUNS_100: how many moves at 100 MB, the goal's size.
    const parts = listEnv('MIGRATION_PARTS', [1, 2, 3, 4]);
    if (parts.includes(1)) await sizesPart(c, listEnv('MIGRATION_MB', [10, 100, 1024]).flatMap((mb) => (mb === 100 ? Array<number>(listEnv('MIGRATION_RUNS_100', [3])[0]!).fill(100) : [mb])));
    if (parts.includes(2)) await loadPart(c);
    if (parts.includes(3)) await consecutivePart(c);
  } finally {
    await broker?.stop().catch(() => {});
    await set?.stopAll();
    for (const c of execFileSync('docker', ['ps', '-a', '--filter', 'label=gpurun.owner=bench-migration', '--format', '{{.Names}}'], { encoding: 'utf8' }).split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
    for (const w of workDirs) for (const m of mountedUnder(w)) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
    cleanup(dir);
  }
  if (listEnv('MIGRATION_PARTS', [1, 2, 3, 4]).includes(4)) await runTransparent();
}

interface Ctx {
  env: NodeJS.ProcessEnv;
  admin: NodeJS.ProcessEnv;
  show(id: string): Promise<Job>;
  logs(id: string): Promise<string>;
  submit(args: string[], e: Record<string, string>): Promise<string>;
  broker: BrokerProc;
  ws: string;
}

/** Part 1: one move per checkpoint size; the table, then where each move's downtime went. */
async function sizesPart(c: Ctx, sizes: number[]): Promise<void> {
  console.log('  1. cooperative move, checkpoint folder of size S (bulk file written while running, step saved on the signal)');
  console.log('  | checkpoint | job\'s own save | downtime (last line → first line) | steps redone | copied while running | final round | full copy |');
  console.log('  |---|---|---|---|---|---|---|');
  const timelines: string[] = [];
  for (const mb of sizes) {
    const id = await c.submit(['--checkpoint-signal', 'SIGUSR1', '--memory', '2G', '--', 'python3', 'job.py'], { CKPT_MB: String(mb) });
    await waitFor('the bulk file written', async () => /step 5\n/.test(await c.logs(id)), 300_000, 500);
    const mv = await gpurun(['migrate', id], c.env, { timeoutMs: 600_000 });
    if (mv.code !== 0) throw new Error(`migrate failed: ${mv.stderr}`);
    await waitFor('lines on the destination', async () => /── moved[^\n]*\n(.*\n)*t=\d+ step/.test(await c.logs(id)), 60_000, 200);
    const p = parseMove(await c.logs(id));
    const ev = (await c.show(id)).attempts![0]!.evidence.move!;
    const size = mb >= 1024 ? `${mb / 1024} GB` : `${mb} MB`;
    console.log(`  | ${size} | ${p.saveMs.toFixed(1)} ms | ${(p.downtimeMs / 1000).toFixed(2)} s (broker: ${ev.downtimeSec} s) | ${p.redone} | ${ev.precopyBytes} B | ${ev.finalBytes} B | ${ev.totalBytes} B |`);
    timelines.push(`  ${size}: ${timeline(c.broker.log(), id, p)}`);
    await gpurun(['cancel', id], c.env);
  }
  console.log('\n  where the downtime went (ms after the job\'s last line on the source):');
  for (const l of timelines) console.log(l);
}

/** Part 2: an online job's CPU load begins → the move of the offline job begins. */
async function loadPart(c: Ctx): Promise<void> {
  console.log('\n  2. load-driven: online job\'s CPU load begins → the move begins (window 5 s, samples every 1 s)');
  assert0((await gpurun(['drain', 'm2'], c.admin)).code);
  const off = await c.submit(['--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'job.py'], { CKPT_MB: '1' });
  await waitFor('offline running', async () => /step 2\n/.test(await c.logs(off)), 60_000, 200);
  const r = await gpurun(['run', '--detach', '--workspace', c.ws, '--queue', 'online', '--gpus', '0', '--', 'sh', '-c', 'while :; do :; done'], c.env);
  const online = r.stdout.trim();
  await waitFor('online running', async () => (await c.show(online)).state === 'running', 60_000, 100);
  const t0 = Date.now();
  assert0((await gpurun(['undrain', 'm2'], c.admin)).code);
  await waitFor('the move to begin', async () => !!(await c.show(off)).move, 120_000, 100);
  const toMove = Date.now() - t0;
  console.log(`  load begins → move begins: ${(toMove / 1000).toFixed(1)} s (of which the window: 5 s, so ${((toMove - 5000) / 1000).toFixed(1)} s of sampling and deciding)`);
  await gpurun(['cancel', online], c.env);
  await gpurun(['cancel', off], c.env);
}

/** Part 3: 20 moves in a row of one job: two containers running at once, steps repeated or skipped. */
async function consecutivePart(c: Ctx): Promise<void> {
  console.log('\n  3. 20 consecutive moves of one job');
  const id = await c.submit(['--checkpoint-signal', 'SIGUSR1', '--', 'python3', 'job.py'], { CKPT_MB: '1' });
  await waitFor('running', async () => /step 2\n/.test(await c.logs(id)), 60_000, 200);
  let double = 0;
  let failed = 0;
  const downs: number[] = [];
  const watch = setInterval(() => {
    const n = spawnSync('docker', ['ps', '-q', '--filter', `label=gpurun.job=${id}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).length;
    if (n > 1) double++;
  }, 200);
  for (let i = 0; i < 20; i++) {
    const mv = await gpurun(['migrate', id], c.env, { timeoutMs: 120_000 });
    if (mv.code !== 0) failed++;
    const d = (await c.show(id)).attempts!.at(-2)?.evidence.move?.downtimeSec;
    if (d !== undefined) downs.push(d);
  }
  clearInterval(watch);
  const log = await c.logs(id);
  const steps = log.split('\n').filter((l) => /^t=\d+ step/.test(l)).map((l) => Number(/step (\d+)/.exec(l)![1]));
  const repeats = steps.filter((s, i) => i > 0 && s <= steps[i - 1]!).length;
  const gaps = steps.filter((s, i) => i > 0 && s > steps[i - 1]! + 1).length;
  downs.sort((a, b) => a - b);
  console.log(`  moves: ${20 - failed}/20 done; double runs (two containers at once): ${double}; steps printed twice: ${repeats}; steps missing: ${gaps}; downtime (broker) p50 ${downs[Math.floor(downs.length / 2)]} s, max ${downs.at(-1)} s`);
  await gpurun(['cancel', id], c.env);
}

function assert0(code: number | null): void {
  if (code !== 0) throw new Error(`a command failed (exit ${code})`);
}
