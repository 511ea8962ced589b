/**
 * One user cannot hurt all on a team broker, tried through the HTTP API and the CLI against a real broker process:
 * a fair order between users, per-user limits answered 429, paged job lists that stay bounded, bounded bodies and a
 * cut for slow ones, event-stream readers that stop reading are dropped, failed sign-ins are throttled and logged
 * without the token, and an audit log records who did what.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Job } from '../../server/protocol/jobs.ts';
import { cleanup, createToken, fakeNvidiaSmi, gpurun, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, workspaceIn, type BrokerProc } from '../support/harness.ts';

interface Answer {
  status: number;
  body: { code?: string; message?: string; hint?: string; [k: string]: unknown };
}

function api(b: BrokerProc, token: string) {
  return async (method: string, path: string, body?: unknown): Promise<Answer> => {
    const r = await fetch(b.url + path, { method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    return { status: r.status, body: (await r.json()) as Answer['body'] };
  };
}

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

describe('team broker: fairness and limits', function () {
  this.timeout(180_000);
  let dir: string;
  let broker: BrokerProc;
  let alice: ReturnType<typeof api>;
  let bob: ReturnType<typeof api>;
  let bobToken: string;
  /** The job holding the one CPU in the paging test; it ends with the suite. */
  let holder: string | undefined;

  before(async () => {
    dir = scratch();
    broker = await startBrokerProcess(join(dir, 'b'), {
      hosts: [{ name: 'local', type: 'local', cpus: 1, memory: '4G' }],
      limits: { maxQueuedJobs: 6000, submitsPerMinute: 0, maxEnvBytes: '2M', maxBodyBytes: '4M' },
    });
    alice = api(broker, await createToken(broker, 'alice'));
    bobToken = await createToken(broker, 'bob');
    bob = api(broker, bobToken);
  });
  after(async () => {
    // The paging test's 600 queued jobs are only listed: the holder ends as the broker stops, so they never run.
    if (holder) await bob('POST', `/v1/jobs/${holder}/cancel`);
    await stopBroker(broker);
    cleanup(dir);
  });

  it("puts bob's one job next, not behind alice's 5,000, and shows him that position", async () => {
    const blocker = await alice('POST', '/v1/jobs', { command: ['sleep', '300'], workspace: workspaceIn(dir), gpus: 0 });
    assert.equal(blocker.status, 201);
    await waitFor('the blocker to run', async () => (await alice('GET', `/v1/jobs/${blocker.body.id}`)).body.state === 'running');
    for (let i = 0; i < 5000; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => alice('POST', '/v1/jobs', { command: ['true'], workspace: workspaceIn(dir), gpus: 0 })));
      assert.ok(batch.every((a) => a.status === 201), JSON.stringify(batch.find((a) => a.status !== 201)));
    }
    const mine = await bob('POST', '/v1/jobs', { command: ['true'], workspace: workspaceIn(dir), gpus: 0 });
    assert.equal(mine.status, 201);
    console.log(`      figure: bob's job is at queue position ${mine.body.queuePosition} behind 5,000 of alice's`);
    assert.ok((mine.body.queuePosition as number) <= 2, `position ${mine.body.queuePosition}`);
    const env = testEnv(join(dir, 'bob'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: bobToken });
    const listed = JSON.parse((await gpurun(['ls', '--json'], env)).stdout) as Job[];
    assert.equal(listed.find((j) => j.id === mine.body.id)?.queuePosition, mine.body.queuePosition);
    // Cancelling the blocker lets the next one start: bob's job is among the first two to run.
    await alice('POST', `/v1/jobs/${blocker.body.id}/cancel`);
    await waitFor("bob's job to end", async () => (await bob('GET', `/v1/jobs/${mine.body.id}`)).body.state === 'succeeded', 60_000);
    const aliceEnded = (await alice('GET', '/v1/jobs?limit=1000')).body.jobs as Job[];
    const bobStarted = (await bob('GET', `/v1/jobs/${mine.body.id}`)).body.startedAt as string;
    const startedBeforeBob = aliceEnded.filter((j) => j.startedAt && j.startedAt < bobStarted && j.id !== blocker.body.id);
    assert.ok(startedBeforeBob.length <= 1, `${startedBeforeBob.length} of alice's jobs started before bob's`);
    // Cancel what is left of alice's queue, so it does not load the machine during the next tests.
    const queued: string[] = [];
    for (let before = ''; ; ) {
      const page = (await alice('GET', `/v1/jobs?limit=1000${before ? `&before=${before}` : ''}`)).body as unknown as { jobs: Job[]; next?: string };
      queued.push(...page.jobs.filter((j) => j.state === 'queued').map((j) => j.id));
      if (!page.next) break;
      before = page.next;
    }
    for (let i = 0; i < queued.length; i += 25) await Promise.all(queued.slice(i, i + 25).map((id) => alice('POST', `/v1/jobs/${id}/cancel`)));
  });

  it('pages job lists so that 600 jobs with 1 MB of env each still list, and bounds each page', async () => {
    // A job holding the one CPU keeps the 600 queued: they are only listed, never started.
    const hold = await bob('POST', '/v1/jobs', { command: ['sleep', '300'], workspace: workspaceIn(dir), gpus: 0 });
    holder = hold.body.id as string;
    await waitFor('the holder to run', async () => (await bob('GET', `/v1/jobs/${hold.body.id}`)).body.state === 'running');
    const big = 'x'.repeat(1_000_000);
    for (let i = 0; i < 600; i += 20) {
      const batch = await Promise.all(Array.from({ length: 20 }, () => bob('POST', '/v1/jobs', { command: ['true'], workspace: workspaceIn(dir), gpus: 0, env: { BIG: big } })));
      assert.ok(batch.every((a) => a.status === 201), JSON.stringify(batch.find((a) => a.status !== 201)?.body));
    }
    let pages = 0;
    let seen = 0;
    let before = '';
    for (;;) {
      const r = await fetch(`${broker.url}/v1/jobs?all=1&limit=1000${before ? `&before=${before}` : ''}`, { headers: { authorization: `Bearer ${bobToken}` } });
      assert.equal(r.status, 200);
      const text = await r.text();
      assert.ok(text.length <= 9 << 20, `a page of ${text.length} bytes`);
      const page = JSON.parse(text) as { jobs: Job[]; next?: string };
      pages++;
      seen += page.jobs.length;
      if (!page.next) break;
      before = page.next;
    }
    assert.ok(seen >= 601 && pages > 1, `${seen} jobs in ${pages} pages`);
    const env = testEnv(join(dir, 'bob'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: bobToken });
    const ls = await gpurun(['ls', '--all', '--limit', '1000'], env, { timeoutMs: 120_000 });
    assert.equal(ls.code, 0, ls.stderr);
    assert.ok(ls.stdout.trim().split('\n').length >= 602, `${ls.stdout.split('\n').length} lines`);
  });

  it('refuses a too-large body (413) and an env over the cap, with code, message and hint', async () => {
    const r = await fetch(`${broker.url}/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${bobToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ command: ['true'], workspace: workspaceIn(dir), name: 'x'.repeat(5 << 20) }) });
    assert.equal(r.status, 413);
    const body = (await r.json()) as Answer['body'];
    assert.equal(body.code, 'E_TOO_LARGE');
    assert.ok(body.hint);
  });

  it('cuts an authenticated request whose body never finishes within 30 s', async () => {
    const u = new URL(broker.url);
    const t0 = Date.now();
    const answer = await new Promise<string>((resolve) => {
      const s = connect(Number(u.port), u.hostname, () => {
        s.write(`POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${bobToken}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"command":`);
      });
      let got = '';
      s.on('data', (d) => (got += d));
      s.on('close', () => resolve(got));
      s.on('error', () => {});
    });
    const took = Date.now() - t0;
    console.log(`      figure: a slow body was cut after ${took} ms`);
    assert.ok(took < 40_000, `held for ${took} ms`);
    assert.match(answer, /^HTTP\/1\.1 408/);
    assert.match(answer, /"code":"E_TIMEOUT"/);
  });

  it('answers 429 after too many failed sign-ins from one address, and logs them without the token', async () => {
    const codes: number[] = [];
    for (let i = 0; i < 40; i++) {
      const r = await fetch(`${broker.url}/v1/whoami`, { headers: { authorization: `Bearer gpr_wrong_${i}_secretvalue` } });
      codes.push(r.status);
      const body = (await r.json()) as Answer['body'];
      assert.ok(body.code && body.message && body.hint);
    }
    assert.equal(codes.filter((c) => c === 401).length, 20);
    assert.equal(codes.filter((c) => c === 429).length, 20);
    assert.match(broker.log(), /"msg":"authentication failed","from":"127\.0\.0\.1"/);
    assert.doesNotMatch(broker.log(), /secretvalue/);
  });

  it('keeps an audit log (0600) of who submitted and cancelled which job and who created tokens', async () => {
    const path = join(broker.home, 'data', 'audit.log');
    const lines = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { action: string; by?: string; job?: string; user?: string });
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.ok(lines.some((l) => l.action === 'token.create' && l.user === 'bob'));
    assert.ok(lines.some((l) => l.action === 'job.submit' && l.by === 'bob' && l.job));
    assert.ok(lines.some((l) => l.action === 'job.cancel' && l.by === 'alice'));
  });
});

describe('team broker: per-user limits', function () {
  this.timeout(60_000);
  let dir: string;
  let broker: BrokerProc;

  before(async () => {
    dir = scratch();
    broker = await startBrokerProcess(join(dir, 'b'), { hosts: [{ name: 'local', type: 'local', cpus: 1, memory: '4G' }], limits: { maxQueuedJobs: 3, submitsPerMinute: 6 } });
  });
  after(async () => {
    await stopBroker(broker);
    cleanup(dir);
  });

  it('answers 429 with what limit and what to do, for queued jobs and for the submit rate', async () => {
    const carol = api(broker, await createToken(broker, 'carol'));
    const dave = api(broker, await createToken(broker, 'dave'));
    const ok = [];
    for (let i = 0; i < 4; i++) ok.push(await carol('POST', '/v1/jobs', { command: ['sleep', '60'], workspace: workspaceIn(dir), gpus: 0 }));
    assert.deepEqual(ok.map((a) => a.status), [201, 201, 201, 201]); // one runs, three queue
    const fifth = await carol('POST', '/v1/jobs', { command: ['sleep', '60'], workspace: workspaceIn(dir), gpus: 0 });
    assert.equal(fifth.status, 429);
    assert.equal(fifth.body.code, 'E_LIMIT');
    assert.match(fifth.body.message!, /carol already has 3 queued jobs/);
    assert.match(fifth.body.hint!, /limits\.maxQueuedJobs/);
    // Another user is not affected by carol's queue, only by their own rate.
    const statuses = [];
    for (let i = 0; i < 7; i++) {
      const r = await dave('POST', '/v1/jobs', { command: ['true'], workspace: workspaceIn(dir), gpus: 0, queue: 'offline' });
      statuses.push(r.status);
      if (r.status === 201) await dave('POST', `/v1/jobs/${r.body.id}/cancel`);
      else assert.match(r.body.message!, /submitted 6 jobs in the last minute/);
    }
    assert.deepEqual(statuses, [201, 201, 201, 201, 201, 201, 429]);
    const env = testEnv(join(dir, 'c'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: (await createToken(broker, 'carol')) });
    const cli = await gpurun(['run', '--detach', '--gpus', '0', '--workspace', workspaceIn(dir), '--', 'true'], env);
    assert.notEqual(cli.code, 0);
    assert.match(cli.stderr, /already has 3 queued jobs/);
  });
});

describe('team broker: per-user GPU cap', function () {
  this.timeout(60_000);
  let dir: string;
  let broker: BrokerProc;

  before(async () => {
    dir = scratch();
    const bin = fakeNvidiaSmi(dir, [{ name: 'NVIDIA L4', memoryMiB: 23034 }, { name: 'NVIDIA L4', memoryMiB: 23034 }]);
    broker = await startBrokerProcess(join(dir, 'b'), { hosts: [{ name: 'local', type: 'local', cpus: 4, memory: '4G' }], limits: { maxRunningGpus: 1 } }, { PATH: `${bin}:${process.env.PATH}` });
  });
  after(async () => {
    await stopBroker(broker);
    cleanup(dir);
  });

  it("holds a user's second GPU job at the cap, says why, and gives the free GPU to another user", async () => {
    const erin = api(broker, await createToken(broker, 'erin'));
    const fred = api(broker, await createToken(broker, 'fred'));
    const a = await erin('POST', '/v1/jobs', { command: ['sleep', '30'], workspace: workspaceIn(dir), gpus: 1 });
    await waitFor("erin's first job to run", async () => (await erin('GET', `/v1/jobs/${a.body.id}`)).body.state === 'running');
    const b = await erin('POST', '/v1/jobs', { command: ['sleep', '30'], workspace: workspaceIn(dir), gpus: 1 });
    const c = await fred('POST', '/v1/jobs', { command: ['sleep', '30'], workspace: workspaceIn(dir), gpus: 1 });
    await waitFor("fred's job to run", async () => (await fred('GET', `/v1/jobs/${c.body.id}`)).body.state === 'running');
    const held = await erin('GET', `/v1/jobs/${b.body.id}`);
    assert.equal(held.body.state, 'queued');
    assert.match(held.body.reason as string, /erin's running jobs hold 1 GPU, and one user may hold at most 1 at once \(limits\.maxRunningGpus\)/);
    const two = await erin('POST', '/v1/jobs', { command: ['true'], workspace: workspaceIn(dir), gpus: 2 });
    assert.equal(two.status, 429);
    for (const [who, id] of [[erin, a.body.id], [erin, b.body.id], [fred, c.body.id]] as const) await who('POST', `/v1/jobs/${id}/cancel`);
  });
});

describe('team broker: stuck event-stream readers', function () {
  this.timeout(90_000);
  let dir: string;
  let broker: BrokerProc;
  let bob: ReturnType<typeof api>;
  let bobToken: string;

  before(async () => {
    dir = scratch();
    broker = await startBrokerProcess(join(dir, 'b'), { hosts: [{ name: 'local', type: 'local', cpus: 2, memory: '4G' }], limits: { submitsPerMinute: 0, maxBodyBytes: '4M' } });
    bobToken = await createToken(broker, 'bob');
    bob = api(broker, bobToken);
  });
  after(async () => {
    await stopBroker(broker);
    cleanup(dir);
  });

  it('drops event-stream readers that stop reading, so 30 of them do not grow the broker', async () => {
    const u = new URL(broker.url);
    const pid = broker.proc.pid!;
    const before = rssKiB(pid);
    const stuck = await Promise.all(Array.from({ length: 30 }, () => new Promise<{ closed: () => boolean; s: Socket }>((resolve) => {
      let closed = false;
      const s: Socket = connect({ port: Number(u.port), host: u.hostname }, () => {
        s.write(`GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${bobToken}\r\n\r\n`);
        s.once('data', () => {
          s.pause(); // never reads again
          resolve({ closed: () => closed, s });
        });
      });
      s.on('close', () => (closed = true));
      s.on('error', () => {});
    })));
    // Each job change is an event of ~200 KB (a long command) to every reader.
    const long = Array.from({ length: 100 }, () => 'y'.repeat(2000));
    for (let i = 0; i < 60; i += 20) {
      await Promise.all(Array.from({ length: 20 }, () => bob('POST', '/v1/jobs', { command: ['true', ...long], workspace: workspaceIn(dir), gpus: 0 })));
    }
    await new Promise((r) => setTimeout(r, 3000));
    const after = rssKiB(pid);
    console.log(`      figure: broker RSS with 30 stuck event readers: ${Math.round(before / 1024)} MiB before, ${Math.round(after / 1024)} MiB after`);
    assert.ok(after - before < 200 * 1024, `RSS grew by ${Math.round((after - before) / 1024)} MiB`);
    assert.match(broker.log(), /dropped an event-stream reader that stopped reading/);
    for (const x of stuck) x.s.destroy();
  });

});
