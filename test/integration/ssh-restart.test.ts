/**
 * Restarts on an SSH host with Docker (real sshd on 127.0.3.1, the real engine, sshfs relayed by the broker): the
 * job's container removed from outside while the host stays healthy is runtime_lost, rebuilt on the same host as
 * attempt 2 with the marker line in the log; a job killed for memory is never restarted, whatever --restarts says.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, createToken, gpurun, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, requirePart, type BrokerProc } from '../support/harness.ts';
import { makeSshHosts, mountedUnder, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';
import type { Job } from '../../server/protocol/jobs.ts';

describe('restarts on an SSH Docker host', function () {
  this.timeout(120_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let env: NodeJS.ProcessEnv;
  let ws: string;
  let workDir: string;

  before(async function () {
    requirePart(this, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
    dir = scratch('gpurun-ssh-restart-');
    set = await makeSshHosts(join(dir, 'hosts'), [{ name: 'gpu1', address: '127.0.3.1', gpus: [{ name: 'NVIDIA L4', memoryMiB: 23034 }] }]);
    ws = join(dir, 'workspace');
    mkdirSync(ws);
    workDir = join(dir, 'hostwork');
    const host = { type: 'ssh', name: 'gpu1', address: '127.0.3.1', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir, mount: { transport: 'relay' } };
    broker = await startBrokerProcess(join(dir, 'home'), { hosts: [host], defaults: { image: 'local/busybox:1', gpus: 0, memory: '256M' }, restartBackoff: { first: '1s', max: '2s' } });
    env = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'alice') };
  });

  after(async function () {
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      const left = execFileSync('docker', ['ps', '-a', '--filter', 'label=gpurun.owner=alice', '--format', '{{.Names}}'], { encoding: 'utf8' }).split('\n').filter(Boolean);
      for (const c of left) spawnSync('docker', ['rm', '-f', c]);
      for (const m of mountedUnder(workDir)) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
      cleanup(dir);
    }
  });

  const show = async (id: string): Promise<Job> => JSON.parse((await gpurun(['show', '--json', id], env)).stdout);

  it('a container removed from outside → runtime_lost → rebuilt on the same host as attempt 2', async () => {
    await waitFor('the host up', async () => /gpu1\s+up/.test((await gpurun(['hosts'], env)).stdout), 30_000);
    const sub = await gpurun(['run', '--detach', '--workspace', ws, '--restarts', '1', '--', 'sh', '-c', 'echo attempt $GPURUN_ATTEMPT ${GPURUN_PREVIOUS_FAULT:-}; [ "$GPURUN_ATTEMPT" = 1 ] && sleep 60; echo done'], env);
    assert.equal(sub.code, 0, sub.stderr);
    const id = sub.stdout.trim();
    await waitFor('attempt 1 to print', async () => (await gpurun(['logs', id], env)).stdout === 'attempt 1\n', 60_000);
    execFileSync('docker', ['rm', '-f', `gpurun-${id}`]);
    const done = await waitFor('the job to end', async () => {
      const j = await show(id);
      return ['succeeded', 'failed', 'lost', 'cancelled', 'timed_out'].includes(j.state) && j;
    }, 90_000);
    assert.equal(done.state, 'succeeded', done.reason);
    assert.deepEqual(done.attempts!.map((a) => [a.n, a.host, a.fault]), [[1, 'gpu1', 'runtime_lost'], [2, 'gpu1', null]]);
    const log = (await gpurun(['logs', id], env)).stdout;
    assert.match(log, /^attempt 1\n── attempt 2\/2 after runtime_lost on gpu1 \(.+\) ──\nattempt 2 runtime_lost\ndone\n$/);
    const text = (await gpurun(['show', id], env)).stdout;
    assert.match(text, /^1 +gpu1 .* lost +runtime_lost /m);
  });

  it('a job killed for memory is not restarted with --restarts 3', async () => {
    // busybox tail buffers a "line" of zero bytes without end: it grows past the 64M limit.
    const r = await gpurun(['run', '--workspace', ws, '--memory', '64M', '--restarts', '3', '--', 'sh', '-c', 'head -c 400000000 /dev/zero | tail'], env, { timeoutMs: 90_000 });
    const id = /job (\w+) submitted/.exec(r.stderr)![1];
    const job = await show(id);
    assert.equal(job.state, 'failed', job.reason);
    assert.equal(job.attempts!.length, 1);
    assert.equal(job.attempts![0].fault, 'oom', job.reason);
    assert.notEqual(r.code, 0);
  });
});
