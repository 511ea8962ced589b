/**
 * Restart policy, attempts, time limits over attempts and fencing, through the HTTP API of a Broker built in-process
 * over the memory store, a scripted backend and a hand-moved clock (test/support/inProcess.ts).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Job } from '../../server/protocol/jobs.ts';
import { MemoryStore } from '../../server/store/memory.ts';
import { systemClock, MAX_TIMER_MS } from '../../server/core/clock.ts';
import { hostsAvoiding } from '../../server/pool/backend.ts';
import { inProcessBroker, settle, type InProcess } from '../support/inProcess.ts';

const T0 = '2026-12-01T10:00:00.000Z';

describe('broker policy (in-process)', () => {
  let b: InProcess;
  afterEach(async () => b?.close());

  const submit = async (extra: Record<string, unknown> = {}): Promise<Job> => {
    const r = await fetch(`${b.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ command: ['python3', 'train.py'], workspace: '/ws', ...extra }) });
    const body = await r.json();
    assert.equal(r.status, 201, JSON.stringify(body));
    await settle();
    return body as Job;
  };
  const get = async (id: string): Promise<Job> => (await fetch(`${b.url}/v1/jobs/${id}`)).json() as Promise<Job>;
  const log = (id: string) => readFileSync(b.logs.path(id), 'utf8');
  const lostHost = { lost: 'the host does not answer', evidence: { hostUnreachableSec: 72, notes: ['container gone after reboot'] } };

  it('restarts after a lost host elsewhere, after the backoff, with a marker line, the attempt in its env, and attempts in the API', async () => {
    b = await inProcessBroker();
    const job = await submit({ restarts: 3 });
    const first = b.backend.run(job.id, 1)!;
    assert.equal(first.host, 'h1');
    assert.equal(first.env.GPURUN_ATTEMPT, '1');
    assert.equal(first.env.GPURUN_PREVIOUS_FAULT, undefined);
    b.backend.print(job.id, 1, 'epoch 1\nepoch 2\n');
    await b.clock.advance(60_000);
    await b.backend.finish(job.id, lostHost);

    let j = await get(job.id);
    assert.equal(j.state, 'queued');
    assert.match(j.reason, /^restarting: attempt 2\/4 in 5s after host_lost on h1/);
    assert.deepEqual(j.attempt, { n: 2, of: 4 });
    await b.clock.advance(4_000);
    assert.equal(b.backend.run(job.id, 2), undefined, 'not before the backoff');
    await b.clock.advance(1_000);
    const second = b.backend.run(job.id, 2)!;
    assert.equal(second.host, 'h2', 'away from the lost host');
    assert.equal(second.env.GPURUN_ATTEMPT, '2');
    assert.equal(second.env.GPURUN_PREVIOUS_FAULT, 'host_lost');
    assert.equal(first.discarded, true, 'the old attempt is fenced: stopped once its host answers');
    assert.equal(b.backend.print(job.id, 1, 'late line from the lost host\n'), false);
    b.backend.print(job.id, 2, 'epoch 3\n');

    j = await get(job.id);
    assert.equal(j.state, 'running');
    assert.match(j.reason, /^running on h2 · attempt 2\/4 · after host_lost on h1 \(unreachable 72 s, container gone after reboot\)$/);
    const marker = '── attempt 2/4 after host_lost on h1 (unreachable 72 s, container gone after reboot) ──\n';
    assert.equal(log(job.id), `epoch 1\nepoch 2\n${marker}epoch 3\n`);
    assert.equal(second.logOffset, Buffer.byteLength(`epoch 1\nepoch 2\n${marker}`));
    await b.backend.finish(job.id, { exitCode: 0, signal: null, endedAt: T0 });

    j = await get(job.id);
    assert.equal(j.state, 'succeeded');
    assert.equal(j.exitCode, 0);
    assert.equal(j.attempts!.length, 2);
    const [a1, a2] = j.attempts!;
    assert.deepEqual([a1.n, a1.host, a1.state, a1.fault, a1.logOffset], [1, 'h1', 'lost', 'host_lost', 0]);
    assert.deepEqual(a1.evidence, { hostUnreachableSec: 72, notes: ['container gone after reboot'] });
    assert.deepEqual([a2.n, a2.host, a2.state, a2.fault, a2.exitCode], [2, 'h2', 'succeeded', null, 0]);
    assert.equal('runtimeRef' in a1, false, 'runtime handles stay inside the broker');
  });

  it('rebuilds on the same host after runtime_lost (host healthy)', async () => {
    b = await inProcessBroker({ hosts: { h1: 1 } });
    const job = await submit({ restarts: 1 });
    await b.backend.finish(job.id, { lost: 'the container gpurun-x vanished from h1' });
    await b.clock.advance(5_000);
    assert.equal(b.backend.run(job.id, 2)?.host, 'h1');
    assert.equal(b.backend.run(job.id, 1)!.discarded, false, 'nothing to fence: it is gone');
  });

  it('lifts the avoid set when no other host could ever run the job (the pool\'s view of its hosts)', () => {
    const caps = [{ name: 'h1', up: true, gpus: [{ index: 0, name: 'A' }, { index: 1, name: 'A' }], cpus: 8, memoryMiB: 8192 }, { name: 'h2', up: true, gpus: [{ index: 0, name: 'A' }], cpus: 8, memoryMiB: 8192 }];
    const job = (gpus: number) => ({ resources: { gpus, cpus: 1, memoryMiB: 100, timeLimitSec: 0 } });
    assert.deepEqual(hostsAvoiding(caps, { hosts: ['h1'], gpus: [] }, job(1)).map((h) => h.name), ['h2']);
    assert.deepEqual(hostsAvoiding(caps, { hosts: [], gpus: [{ host: 'h1', index: 1 }] }, job(1)).find((h) => h.name === 'h1')!.gpus.map((g) => g.index), [0]);
    // Only h1 has 2 GPUs: avoiding it would leave the job waiting forever, so it may go back.
    assert.deepEqual(hostsAvoiding(caps, { hosts: ['h1'], gpus: [] }, job(2)).map((h) => h.name), ['h1', 'h2']);
  });

  for (const [what, end] of [
    ['exit 1', { exitCode: 1, signal: null, endedAt: T0 }],
    ['OOM', { exitCode: 137, signal: null, oomKilled: true, endedAt: T0 }],
  ] as const) {
    it(`does not restart ${what} with --restarts 3`, async () => {
      b = await inProcessBroker();
      const job = await submit({ restarts: 3 });
      await b.backend.finish(job.id, end);
      await b.clock.advance(60_000);
      const j = await get(job.id);
      assert.equal(j.state, 'failed');
      assert.equal(j.attempts!.length, 1);
      assert.equal(b.backend.runs.length, 1);
      assert.doesNotMatch(log(job.id), /attempt 2/);
    });
  }

  it('runs out of restarts: the last fault ends the job and says why it was not restarted', async () => {
    b = await inProcessBroker();
    const job = await submit({ restarts: 2 });
    for (let n = 1; n <= 3; n++) {
      await b.backend.finish(job.id, { lost: `container gone (${n})` }, n);
      await b.clock.advance(60_000);
    }
    const j = await get(job.id);
    assert.equal(j.state, 'lost');
    assert.match(j.reason, /container gone \(3\) \(not restarted: no restarts left \(2 used\)\)/);
    assert.deepEqual(j.attempts!.map((a) => a.fault), ['runtime_lost', 'runtime_lost', 'runtime_lost']);
    assert.deepEqual(j.attempt, { n: 3, of: 3 });
  });

  it('restarts on an exit code the job asked for, and ends with the last attempt\'s code', async () => {
    b = await inProcessBroker();
    const job = await submit({ restartOnExit: [75] });
    assert.equal(job.restarts, 1, '--restart-on-exit alone allows one restart');
    await b.backend.finish(job.id, { exitCode: 75, signal: null, endedAt: T0 });
    await b.clock.advance(5_000);
    await b.backend.finish(job.id, { exitCode: 0, signal: null, endedAt: T0 }, 2);
    const j = await get(job.id);
    assert.equal(j.state, 'succeeded');
    assert.equal(j.exitCode, 0);
    assert.deepEqual(j.attempts!.map((a) => [a.fault, a.exitCode]), [['user_error', 75], [null, 0]]);
  });

  it('uses the queue\'s default restarts from the broker config', async () => {
    b = await inProcessBroker({ config: { queues: { offline: { restarts: 2 } } } });
    assert.equal((await submit({ queue: 'offline' })).restarts, 2);
    assert.equal((await submit({ queue: 'online' })).restarts, undefined);
  });

  it('counts the time limit over all attempts', async () => {
    b = await inProcessBroker();
    const job = await submit({ restarts: 3, time: 100 });
    await b.clock.advance(60_000);
    await b.backend.finish(job.id, lostHost);
    await b.clock.advance(5_000);
    const second = b.backend.run(job.id, 2)!;
    await b.clock.advance(39_000);
    assert.equal(second.stopped, false);
    await b.clock.advance(1_000);
    assert.equal(second.stopped, true, 'stopped 40 s into attempt 2: 60 s + 40 s = the 100 s limit');
    const j = await get(job.id);
    assert.equal(j.state, 'timed_out');
    assert.match(j.reason, /time limit of 1m40s \(running time over all attempts\)/);
  });

  it('cancels a job waiting out its backoff', async () => {
    b = await inProcessBroker();
    const job = await submit({ restarts: 3 });
    await b.backend.finish(job.id, lostHost);
    const r = await fetch(`${b.url}/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    assert.equal(((await r.json()) as Job).state, 'cancelled');
    await b.clock.advance(60_000);
    assert.equal(b.backend.runs.length, 1);
  });

  it('keeps attempts across a broker restart: follows the running attempt again, resumes a backoff', async () => {
    b = await inProcessBroker({ hosts: { h1: 1, h2: 1, h3: 1 } });
    const running = await submit({ restarts: 3 });
    const waiting = await submit({ restarts: 3 });
    await b.backend.finish(waiting.id, lostHost);
    await b.restart();
    assert.equal((await get(running.id)).state, 'running');
    await b.clock.advance(5_000);
    assert.equal(b.backend.run(waiting.id, 2)?.host, 'h3', 'the backoff resumed after the restart, away from the lost host');
    await b.backend.finish(running.id, { exitCode: 0, signal: null, endedAt: T0 });
    const j = await get(running.id);
    assert.equal(j.state, 'succeeded');
    assert.equal(j.attempts!.length, 1);
    assert.equal((await get(waiting.id)).attempts!.length, 2);
  });

  it('a broker restarted with a config lacking the job\'s backend or host fails those jobs and still starts', async () => {
    const store = new MemoryStore();
    const base = { owner: 'alice', name: 'train.py', command: ['python3', 'train.py'], workspace: '/ws', resources: { gpus: 0, cpus: 1, memoryMiB: 100, timeLimitSec: 0 }, queue: 'online' as const, env: {}, exitCode: null, createdAt: T0, endedAt: null, stopIntent: null };
    store.insertJob({ ...base, id: 'oncluster', state: 'queued', reason: 'submitted', host: null, gpuIndices: [], startedAt: null, runtimeRef: null, backend: 'cluster-a' }, T0);
    store.insertJob({ ...base, id: 'ongone', state: 'running', reason: 'running on gone', host: 'gone', gpuIndices: [], startedAt: T0, runtimeRef: { pid: 1 }, backend: 'hosts' }, T0);
    b = await inProcessBroker({ store });
    assert.equal((await get('oncluster')).state, 'failed');
    assert.equal((await get('oncluster')).reason, 'its backend "cluster-a" is no longer in the broker config');
    assert.equal((await get('ongone')).state, 'failed');
    assert.equal((await get('ongone')).reason, 'its host gone is no longer in the broker config');
    // And the broker works.
    const job = await submit();
    assert.equal((await get(job.id)).state, 'running');
  });

  it('arms timers longer than a Node timer can hold without firing them early', async () => {
    let fired = false;
    const t = systemClock.after(MAX_TIMER_MS + 60_000, () => (fired = true));
    await new Promise((r) => setTimeout(r, 30));
    t.cancel();
    assert.equal(fired, false);
  });
});
