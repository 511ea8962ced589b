/**
 * A team broker and its data disk: a job that fills the disk does not take the broker down (it answers, says the
 * disk is full, refuses submits with a message, keeps the job's true state), a broker restarted on the full disk
 * comes back, a job past its output cap is stopped with its head and tail kept (offsets unchanged), and logs of
 * ended jobs are removed by retention while the jobs stay listed. The data dir is a real 8 MiB tmpfs.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Job } from '../../server/protocol/jobs.ts';
import { BrokerClient } from '../../server/protocol/client.ts';
import { cleanup, createToken, gpurun, requirePart, restartBroker, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, workspaceIn, type BrokerProc } from '../support/harness.ts';

function mountTmpfs(dir: string, size: string): boolean {
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
function unmount(dir: string): void {
  try {
    execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
  } catch {
    /* not mounted */
  }
}

describe('team broker: a full data disk', function () {
  this.timeout(120_000);
  let dir: string;
  let data: string;
  let broker: BrokerProc | undefined;
  let env: NodeJS.ProcessEnv;
  let token: string;

  before(async function () {
    dir = scratch();
    data = join(dir, 'data');
    requirePart(this, 'tmpfs mount (root)', mountTmpfs(data, '8m'), 'mount -t tmpfs needs root');
    broker = await startBrokerProcess(join(dir, 'b'), { dataDir: data, hosts: [{ name: 'local', type: 'local', cpus: 4, memory: '4G' }], limits: { minFreeDisk: '1M' } });
    token = await createToken(broker, 'alice');
    env = testEnv(join(dir, 'client'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: token });
  });
  after(async () => {
    await stopBroker(broker);
    unmount(data);
    cleanup(dir);
  });

  const ls = async (): Promise<Job[]> => {
    const r = await gpurun(['ls', '--all', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };

  it('keeps answering, keeps the true state, refuses submits with a message, and comes back after a restart', async () => {
    const r = await gpurun(['run', '--detach', '--gpus', '0', '--workspace', workspaceIn(dir), '--', 'sh', '-c', 'yes "filling the disk with this line of output"'], env);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    const ended = await waitFor('the job to end on the full disk', async () => (await ls()).find((j) => j.id === id && j.state !== 'running' && j.state !== 'queued' && j.state !== 'starting'), 60_000);
    assert.ok(broker!.proc.exitCode === null, `the broker died:\n${broker!.log().slice(-3000)}`);
    // yes fails to write (ENOSPC) and exits 1: that is its true end, not "lost".
    assert.equal(ended.state, 'failed', JSON.stringify(ended));
    assert.match(ended.reason, /exited with code 1/);

    const health = await waitFor('health to report the full disk', async () => {
      const h = (await (await fetch(`${broker!.url}/v1/health`)).json()) as { ok: boolean; disk: { low: boolean }; problems: string[] };
      return h.disk.low ? h : undefined;
    });
    assert.equal(health.ok, true);
    assert.equal(health.disk.low, true, JSON.stringify(health));
    assert.ok(health.problems.some((p) => /disk/.test(p)), JSON.stringify(health));

    const refused = await gpurun(['run', '--detach', '--gpus', '0', '--workspace', workspaceIn(dir), '--', 'true'], env);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /disk (has .* free, less than its floor|is full)/);
    const res = await fetch(`${broker!.url}/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ command: ['true'], workspace: workspaceIn(dir), gpus: 0 }) });
    assert.ok(res.status === 507 || res.status === 503, `status ${res.status}`);
    const body = (await res.json()) as { code: string; message: string; hint: string };
    assert.ok(body.code && body.message && body.hint, JSON.stringify(body));
    assert.doesNotMatch(broker!.log(), /no transaction is active|Unhandled|uncaught/i);

    // Restarted on the still-full disk, it starts, says so, and still knows the job's true end.
    await broker!.stop();
    const t0 = Date.now();
    broker = await restartBroker(broker!);
    const backMs = Date.now() - t0;
    console.log(`      figure: broker back on a full disk in ${backMs} ms`);
    assert.match(broker.log(), /below its free-space floor/);
    const again = await waitFor('the job to be known after the restart', async () => (await ls()).find((j) => j.id === id && j.state === 'failed'), 30_000);
    assert.match(again.reason, /exited with code 1/);

    // Space freed (the job's log removed by hand): new jobs run again, and the held state is written.
    rmSync(join(data, 'logs', `${id}.log`));
    const ok = await gpurun(['run', '--gpus', '0', '--workspace', workspaceIn(dir), '--', 'echo', 'room again'], env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /room again/);
  });
});

describe('team broker: output cap and retention', function () {
  this.timeout(120_000);
  let dir: string;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let client: BrokerClient;
  let retained: BrokerProc;
  let renv: NodeJS.ProcessEnv;

  before(async () => {
    dir = scratch();
    broker = await startBrokerProcess(join(dir, 'b'), { hosts: [{ name: 'local', type: 'local', cpus: 4, memory: '4G' }], limits: { maxLogBytes: '256K' } });
    retained = await startBrokerProcess(join(dir, 'r'), { hosts: [{ name: 'local', type: 'local', cpus: 4, memory: '4G' }], retention: { logs: '2s' } });
    renv = testEnv(join(dir, 'rclient'), { GPURUN_BROKER: retained.url, GPURUN_TOKEN: await createToken(retained, 'alice') });
    const token = await createToken(broker, 'alice');
    env = testEnv(join(dir, 'client'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: token });
    client = new BrokerClient({ address: broker.url, token });
  });
  after(async () => {
    await client.close();
    await stopBroker(broker);
    await stopBroker(retained);
    cleanup(dir);
  });

  it('stops a job past its output cap, keeps head, marker and tail, and offsets stay those of the full output', async () => {
    // Numbered lines: each line says where it starts, so any byte read can be checked against its offset.
    const script = 'i=0; while :; do printf "line %08d\\n" $i; i=$((i+1)); done';
    const r = await gpurun(['run', '--detach', '--gpus', '0', '--workspace', workspaceIn(dir), '--', 'sh', '-c', script], env);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    const job = await waitFor('the job to be stopped', async () => {
      const j = await client.get(id);
      return j.state === 'failed' ? j : undefined;
    }, 60_000);
    assert.match(job.reason, /output passed the limit of 256 KiB \(limits\.maxLogBytes\)/);
    const logPath = join(broker.home, 'data', 'logs', `${id}.log`);
    await waitFor('the log to be compacted', () => readdirSync(join(broker.home, 'data', 'logs')).includes(`${id}.cut`));
    const size = statSync(logPath).size;
    assert.ok(statSync(logPath).blocks * 512 < 600 * 1024, 'the left-out middle takes no disk');

    const out = (await gpurun(['logs', id], env)).stdout;
    assert.ok(out.startsWith('line 00000000\nline 00000001\n'));
    assert.match(out, /\[gpurun: output cut here: the job wrote .* more than its limit of 256 KiB/);
    assert.ok(Buffer.byteLength(out) <= 256 * 1024 + 1024, `kept ${Buffer.byteLength(out)} bytes`);
    const lastLine = out.trimEnd().split('\n').pop()!;
    assert.match(lastLine, /^line \d{8}$|^line \d*$/);

    // Offsets: reading from an offset in the tail gives the bytes that were written there (14-byte lines).
    let next = 0;
    const tailFrom = size - 14 * 10 - (size % 14);
    let tail = '';
    for await (const c of client.logs(id, tailFrom)) {
      tail += c.data.toString();
      next = c.next;
    }
    assert.equal(next, size);
    assert.equal(tail.split('\n')[0], `line ${String(tailFrom / 14).padStart(8, '0')}`);
    // From 0, the client's offset count jumps the hole and ends at the full length.
    for await (const c of client.logs(id, 0)) next = c.next;
    assert.equal(next, size);
  });

  it('removes ended jobs\' logs after the retention time; the job is still listed and logs says why', async () => {
    const r = await gpurun(['run', '--gpus', '0', '--workspace', workspaceIn(dir), '--', 'echo', 'kept for a while'], renv);
    assert.equal(r.code, 0, r.stderr);
    const listedBefore = JSON.parse((await gpurun(['ls', '--all', '--json'], renv)).stdout) as Job[];
    const id = listedBefore.find((j) => j.command.includes('kept for a while'))!.id;
    await waitFor('retention to remove the log', async () => {
      const l = await gpurun(['logs', id], renv);
      return l.code !== 0 && /removed by retention/.test(l.stderr) ? l : undefined;
    }, 30_000);
    const listed = JSON.parse((await gpurun(['ls', '--all', '--json'], renv)).stdout) as Job[];
    assert.ok(listed.some((j) => j.id === id && j.state === 'succeeded'));
  });
});
