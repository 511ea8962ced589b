/**
 * The transparent rows of `npm run bench -- migration` (bench/migration.ts runs them after its cooperative rows):
 * a Python process holding S of memory (200 MiB, 1 GiB) that prints a timestamped step every 0.1 s, moved by
 * `gpurun migrate` between two Docker hosts over SSH on loopback (127.0.12.10-11) with `migration.method:
 * "transparent"` (CRIU through `docker checkpoint`). Downtime: the job's last line on the source → its first on the
 * destination, from its own timestamps (the same process, so the same clock). Steps redone: 0 expected. Bytes: the
 * CRIU images, all copied after the stop (no pre-copy: the kernel has no soft-dirty tracking).
 * Skipped (said why) where the hosts have no transparent checkpoint.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, createToken, gpurun, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../test/support/harness.ts';
import { makeSshHosts, removeLeftovers, sshHostsMissing, type TestHostSet } from '../test/support/sshHosts.ts';
import type { HostInfo, Job } from '../server/protocol/jobs.ts';

const JOB = `
import os, time
size = int(os.environ["MIB"]) * 1024 * 1024
# Filled in 16 MiB pieces: bytearray(os.urandom(size)) would hold the state twice at its start.
blob = bytearray(size)
for i in range(0, size, 1 << 24):
    blob[i:i + (1 << 24)] = os.urandom(min(1 << 24, size - i))
step = 1
while True:
    print(f"t={time.time() * 1000:.0f} step {step}", flush=True)
    time.sleep(0.1)
    step += 1
`;

/** From the log of a job moved once: downtime (ms) between the lines around the marker, and steps printed again. */
export function parseTransparentMove(log: string): { downtimeMs: number; redone: number } {
  const lines = log.split('\n');
  const at = lines.findIndex((l) => l.startsWith('── moved'));
  const step = (l: string) => /^t=(\d+) step (\d+)$/.exec(l);
  const before = lines.slice(0, at).map(step).filter((m) => m !== null);
  const after = lines.slice(at).map(step).filter((m) => m !== null);
  const last = before[before.length - 1]!;
  const first = after[0]!;
  return { downtimeMs: Number(first[1]) - Number(last[1]), redone: Math.max(0, Number(last[2]) - Number(first[2]) + 1) };
}

export async function runTransparent(): Promise<void> {
  console.log('\n  4. transparent move (CRIU): a process holding S of memory, no cooperation from the job');
  const missing = sshHostsMissing();
  if (missing) {
    console.log(`  skipped: ${missing}`);
    return;
  }
  const dir = scratch('gpurun-bench-criu-');
  let set: TestHostSet | undefined;
  let broker: BrokerProc | undefined;
  const workDirs: string[] = [];
  try {
    const gpu = [{ name: 'NVIDIA L4', memoryMiB: 23034 }];
    set = await makeSshHosts(join(dir, 'hosts'), [{ name: 't1', address: '127.0.12.10', gpus: gpu }, { name: 't2', address: '127.0.12.11', gpus: gpu }]);
    const ws = join(dir, 'ws');
    mkdirSync(ws);
    writeFileSync(join(ws, 'job.py'), JOB);
    const hosts = set.hosts.map((h, i) => {
      workDirs[i] = join(dir, `work-${h.name}`);
      return { type: 'ssh', name: h.name, address: h.address, user: 'root', port: 2222, identityFile: set!.clientKey, knownHosts: set!.knownHosts, gpuMode: 'env', workDir: workDirs[i], runtime: 'docker', mount: { transport: 'relay' } };
    });
    broker = await startBrokerProcess(join(dir, 'home'), { hosts, defaults: { image: 'local/python:3', gpus: 1, memory: '2G' }, migration: { method: 'transparent', checkpointTimeout: '120s' } });
    const env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'bench') };
    const logs = async (id: string) => (await gpurun(['logs', id], env)).stdout;
    const hostsNow = async (): Promise<HostInfo[]> => JSON.parse((await gpurun(['hosts', '--json'], env)).stdout);
    const up = await waitFor('hosts up', async () => {
      const h = await hostsNow();
      return h.filter((x) => x.state === 'up').length === 2 && h;
    }, 60_000, 500);
    const why = up[0].checkpoint ? up[0].checkpoint.transparent : 'not reported';
    if (why !== null) {
      console.log(`  skipped: ${up[0].name} has no transparent checkpoint: ${why}`);
      return;
    }
    console.log('  | process memory | downtime (last line → first line) | broker\'s downtime | steps redone | CRIU images copied (after the stop) |');
    console.log('  |---|---|---|---|---|');
    for (const mib of [200, 1024]) {
      const r = await gpurun(['run', '--detach', '--workspace', ws, '--queue', 'offline', '--env', `MIB=${mib}`, '--', 'python3', '-u', 'job.py'], env);
      if (r.code !== 0) throw new Error(r.stderr);
      const id = r.stdout.trim();
      await waitFor('the job running', async () => /step 10\n/.test(await logs(id)), 120_000, 500).catch(async (e: Error) => {
        const j = JSON.parse((await gpurun(['show', '--json', id], env)).stdout) as Job;
        throw new Error(`${e.message}: job ${id} is ${j.state} on ${j.host ?? 'no host'}: ${j.reason}; its log ends: ${(await logs(id)).slice(-400)}`);
      });
      const mv = await gpurun(['migrate', id], env, { timeoutMs: 600_000 });
      if (mv.code !== 0) throw new Error(`migrate failed: ${mv.stderr}${mv.stdout}`);
      await waitFor('lines on the destination', async () => /── moved[^\n]*\n(.*\n)*t=\d+ step/.test(await logs(id)), 60_000, 200);
      const p = parseTransparentMove(await logs(id));
      const ev = ((await gpurun(['show', '--json', id], env).then((x) => JSON.parse(x.stdout))) as Job).attempts![0].evidence.move!;
      console.log(`  | ${mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`} | ${(p.downtimeMs / 1000).toFixed(2)} s | ${ev.downtimeSec} s | ${p.redone} | ${((ev.finalBytes ?? 0) / 1048576).toFixed(0)} MiB |`);
      await gpurun(['cancel', id], env);
    }
  } finally {
    await broker?.stop().catch(() => {});
    await set?.stopAll();
    removeLeftovers('bench', workDirs);
    cleanup(dir);
  }
}

// Run alone: node bench/_migrationTransparent.ts (npm run bench -- migration runs it after the cooperative rows).
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) await runTransparent();
