/**
 * A team broker tried as a hostile user would, through the HTTP API and the CLI only, against real broker processes:
 * a local host and a real sshd + Docker host (127.0.1.1) with sshfs. Each finding of "Running a team broker" in the
 * README is one test: workspace authority, job identity and environment, secrets (env file, file modes, event
 * stream, tokens), container hardening, and the smaller input findings.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Job } from '../../server/protocol/jobs.ts';
import { cleanup, createToken, gpurun, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, requirePart, type BrokerProc } from '../support/harness.ts';
import { makeSshHosts, mountedUnder, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';

const BROKER_SECRET = 'broker-secret-6d1f';
const JOB_SECRET = 's3cr3t-value-9f27c1';

/** One raw HTTP/1.1 exchange (fetch cannot send a malformed target or an Upgrade header). */
function raw(url: string, request: string): Promise<{ status: number; body: string; text: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => s.write(request));
    let text = '';
    s.on('data', (d) => (text += d));
    s.on('error', reject);
    s.on('close', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), body: text.slice(text.indexOf('\r\n\r\n') + 4), text }));
    setTimeout(() => s.destroy(), 3000);
  });
}

/** Every file and folder under `dir` whose mode is not 0600 (files) or 0700 (folders). */
function looseModes(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isSocket()) continue;
      const mode = statSync(p).mode & 0o777;
      if (e.isDirectory()) {
        if (mode !== 0o700) out.push(`${p} ${mode.toString(8)}`);
        walk(p);
      } else if (mode !== 0o600) out.push(`${p} ${mode.toString(8)}`);
    }
  };
  if ((statSync(dir).mode & 0o777) !== 0o700) out.push(`${dir} ${(statSync(dir).mode & 0o777).toString(8)}`);
  walk(dir);
  return out;
}

/** The pids whose command line contains `text` (every process of this machine, the GPU host's included). */
function cmdlinesWith(text: string): string[] {
  const hits: string[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (cmd.includes(text)) hits.push(`${p}: ${cmd.replace(/\0/g, ' ')}`);
    } catch {
      /* gone */
    }
  }
  return hits;
}

describe('team broker safety (real broker, local host, sshd + Docker host)', function () {
  this.timeout(120_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let tokens: Record<string, string>;
  let home: Record<string, string>;
  let dataDir: string;
  let workDir: string;
  let cfgPath: string;

  const api = (user: string, path: string, init: RequestInit = {}) =>
    fetch(`${broker.url}${path}`, { ...init, headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens[user]}`, ...(init.headers as Record<string, string> | undefined) } });
  const submit = (user: string, body: Record<string, unknown>) => api(user, '/v1/jobs', { method: 'POST', body: JSON.stringify(body) });
  const jobOf = async (user: string, id: string): Promise<Job> => (await (await api(user, `/v1/jobs/${id}`)).json()) as Job;
  const ended = (user: string, id: string) => waitFor(`job ${id} to end`, async () => {
    const j = await jobOf(user, id);
    return ['succeeded', 'failed', 'cancelled', 'timed_out', 'lost'].includes(j.state) && j;
  }, 60_000);
  const logOf = async (user: string, id: string) => (await api(user, `/v1/jobs/${id}/logs`)).text();
  const cli = (user: string) => testEnv(join(dir, 'client'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: tokens[user] });

  before(async function () {
    requirePart(this, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
    dir = scratch('gpurun-team-');
    set = await makeSshHosts(join(dir, 'keys'), [{ name: 'gpu1', address: '127.0.1.1', gpus: [{ name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 }] }]);
    home = { alice: join(dir, 'home', 'alice'), bob: join(dir, 'home', 'bob') };
    for (const h of Object.values(home)) mkdirSync(h, { recursive: true });
    writeFileSync(join(home.alice, 'private.txt'), 'alice only\n');
    symlinkSync(join(dir, 'broker', 'data'), join(home.bob, 'data-link'));
    workDir = join(dir, 'hostwork');
    dataDir = join(dir, 'broker', 'data');
    broker = await startBrokerProcess(join(dir, 'broker'), {
      workspaceRoots: { '*': join(dir, 'home', '{user}') },
      trustLocalUsers: true,
      hosts: [
        { name: 'local', type: 'local', cpus: 4, memory: '4G' },
        { name: 'gpu1', type: 'ssh', address: '127.0.1.1', port: 2222, user: 'root', identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir, mount: { transport: 'relay' } },
      ],
      defaults: { image: 'local/busybox:1', memory: '256M' },
    }, { SECRET_OF_BROKER: BROKER_SECRET, SSH_AUTH_SOCK: '/tmp/gpurun-test-agent.sock' });
    cfgPath = join(dir, 'broker', 'broker.json');
    tokens = { alice: await createToken(broker, 'alice'), bob: await createToken(broker, 'bob'), root: await createToken(broker, 'root', true) };
    await waitFor('gpu1 up', async () => /gpu1\s+up/.test((await gpurun(['hosts'], cli('alice'))).stdout), 30_000);
  });

  after(async function () {
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      for (const c of execFileSync('docker', ['ps', '-aq', '--filter', `label=gpurun.broker`, '--filter', 'label=gpurun.owner=alice'], { encoding: 'utf8' }).split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
      for (const m of mountedUnder(workDir)) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
      cleanup(dir);
    }
  });

  describe('workspace authority', () => {
    it("refuses bob's workspace when it is the data dir, the key folder, the config folder, /, or alice's folder, and queues nothing", async () => {
      const hostile: Array<[string, RegExp]> = [
        [dataDir, /is or contains a folder of the broker itself/],
        [join(dataDir, 'logs'), /is or contains a folder of the broker itself/],
        [join(home.bob, 'data-link'), /is or contains a folder of the broker itself/],
        [join(dir, 'keys'), /is or contains a folder of the broker itself/],
        [join(dir, 'broker'), /is or contains a folder of the broker itself/],
        [dir, /is or contains a folder of the broker itself/],
        ['/', /root folder of the broker machine/],
        ['/etc', /outside the folders bob may use/],
        [home.alice, /outside the folders bob may use/],
        [`${home.bob}/../alice`, /outside the folders bob may use/],
        ['relative/path', /workspace: must be an absolute path/],
      ];
      for (const [ws, re] of hostile) {
        const r = await submit('bob', { command: ['cat', 'private.txt'], workspace: ws, gpus: 0 });
        const body = (await r.json()) as { code: string; message: string; hint?: string };
        assert.ok(r.status === 403 || r.status === 400, `${ws}: ${r.status} ${JSON.stringify(body)}`);
        assert.match(body.message, re, ws);
      }
      const listed = (await (await api('bob', '/v1/jobs?all=1')).json()) as { jobs: Job[] };
      assert.deepEqual(listed.jobs, [], 'nothing was queued');
      // Through the CLI, as bob would type it.
      const r = await gpurun(['run', '--workspace', dataDir, '--gpus', '0', '--', 'ls'], cli('bob'));
      assert.equal(r.code, 1);
      assert.match(r.stderr, /error: workspace: .* is or contains a folder of the broker itself/);
    });

    it("runs bob's job in his own folder (its real path)", async () => {
      const r = await gpurun(['run', '--workspace', `${home.bob}/./`, '--gpus', '0', '--', 'pwd'], cli('bob'));
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${home.bob}\n`);
    });
  });

  describe('job identity and environment', () => {
    it("starts a local job from a clean environment: no broker secret, no SSH_AUTH_SOCK; GPU variables are the broker's", async () => {
      const r = await submit('bob', { command: ['env'], workspace: home.bob, gpus: 0, env: { MINE: 'yes' } });
      assert.equal(r.status, 201);
      const job = (await r.json()) as Job;
      assert.equal((await ended('bob', job.id)).state, 'succeeded');
      const env = await logOf('bob', job.id);
      assert.match(env, /^MINE=yes$/m);
      assert.match(env, /^PATH=/m);
      assert.match(env, /^HOME=/m);
      assert.match(env, /^PYTHONUNBUFFERED=1$/m);
      assert.match(env, /^CUDA_VISIBLE_DEVICES=$/m);
      assert.ok(!env.includes(BROKER_SECRET), env);
      assert.ok(!/SSH_AUTH_SOCK/.test(env), env);
      assert.ok(!/^GPURUN_TOKEN/m.test(env), env);
    });

    it('refuses a job env that names a GPU visibility or GPURUN_ variable, and stores nothing', async () => {
      for (const name of ['NVIDIA_VISIBLE_DEVICES', 'CUDA_VISIBLE_DEVICES', 'GPURUN_GPUS']) {
        const r = await submit('bob', { command: ['true'], workspace: home.bob, gpus: 1, env: { [name]: 'all' } });
        assert.equal(r.status, 400);
        assert.match(((await r.json()) as { message: string }).message, new RegExp(`env.${name}: is set by gpurun for every job`));
      }
    });
  });

  describe('secrets', () => {
    it('gives a Docker job its env through a file, never argv: no /proc/*/cmdline has the secret while it runs; the file is gone', async () => {
      const r = await submit('alice', { command: ['sh', '-c', 'echo "got $JOB_SECRET $GPURUN_JOB_ID $GPURUN_ATTEMPT"; sleep 4; echo done'], workspace: home.alice, gpus: 1, env: { JOB_SECRET } });
      assert.equal(r.status, 201);
      const job = (await r.json()) as Job;
      const seen: string[] = [];
      // Sampled from submit to the end, which covers the docker run of the start.
      while (!['succeeded', 'failed', 'cancelled', 'timed_out', 'lost'].includes((await jobOf('alice', job.id)).state)) {
        seen.push(...cmdlinesWith(JOB_SECRET));
        await new Promise((res) => setTimeout(res, 20));
      }
      const end = await jobOf('alice', job.id);
      assert.equal(end.state, 'succeeded', end.reason);
      assert.deepEqual(seen, []);
      assert.equal(await logOf('alice', job.id), `got ${JOB_SECRET} ${job.id} 1\ndone\n`, "the job's own and gpurun's variables arrive");
      assert.equal(existsSync(join(workDir, 'run', job.id)), false, 'the env file and its folder are removed');
    });

    it("keeps every file under the data dir 0600 and every folder 0700 (a local job's spec.json included)", async () => {
      const r = await submit('bob', { command: ['sleep', '2'], workspace: home.bob, gpus: 0, env: { TOKEN_OF_BOB: JOB_SECRET } });
      const job = (await r.json()) as Job;
      await waitFor('the spec', () => existsSync(join(dataDir, 'run', job.id, 'spec.json')));
      assert.equal(statSync(join(dataDir, 'run', job.id, 'spec.json')).mode & 0o777, 0o600);
      await ended('bob', job.id);
      assert.deepEqual(looseModes(dataDir), []);
    });

    it('gpurun token create before the first broker start makes the data dir 0700 and the database 0600', async () => {
      const fresh = join(dir, 'fresh');
      mkdirSync(fresh);
      writeFileSync(join(fresh, 'broker.json'), JSON.stringify({ listen: '127.0.0.1:0', dataDir: 'data' }));
      const r = await gpurun(['token', 'create', 'alice', '--config', join(fresh, 'broker.json')], testEnv(fresh));
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(looseModes(join(fresh, 'data')), []);
    });

    it("carries no env values on the event stream, not even to an admin; the owner's GET has them", async () => {
      const ac = new AbortController();
      const res = await api('root', '/v1/events', { signal: ac.signal });
      let text = '';
      const reading = (async () => {
        try {
          for await (const chunk of res.body as AsyncIterable<Uint8Array>) text += Buffer.from(chunk).toString();
        } catch {
          /* aborted */
        }
      })();
      const job = (await (await submit('alice', { command: ['true'], workspace: home.alice, gpus: 0, env: { JOB_SECRET } })).json()) as Job;
      await ended('alice', job.id);
      await waitFor('the final event', () => text.includes('"succeeded"'));
      ac.abort();
      await reading;
      assert.match(text, /"env":\{"JOB_SECRET":""\}/);
      assert.ok(!text.includes(JOB_SECRET), 'no env value on the stream');
      assert.equal((await jobOf('alice', job.id)).env.JOB_SECRET, JOB_SECRET, 'the owner sees it');
      assert.equal((await jobOf('root', job.id)).env.JOB_SECRET, '', "an admin sees another user's env names only");
      const listed = ((await (await api('root', '/v1/jobs?all=1')).json()) as { jobs: Job[] }).jobs.find((j) => j.id === job.id);
      assert.equal(listed?.env.JOB_SECRET, '', "an admin's job list has the names only too");
    });
  });

  describe('tokens', () => {
    it('lists tokens (no secret), expires them with a clear 401, and lets an admin list and revoke over HTTP', async () => {
      const short = (await gpurun(['token', 'create', 'erin', '--expires', '2s', '--config', cfgPath], testEnv(join(dir, 'broker')))).stdout.trim();
      const list = await gpurun(['token', 'list', '--config', cfgPath], testEnv(join(dir, 'broker')));
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, /^ID\s+USER\s+ADMIN\s+CREATED\s+EXPIRES\s+STATE$/m);
      assert.match(list.stdout, /erin\s+no\s+\S+\s+\S+\s+active/);
      assert.ok(!list.stdout.includes('gpr_'), 'no token is shown');
      const who = await fetch(`${broker.url}/v1/whoami`, { headers: { authorization: `Bearer ${short}` } });
      assert.equal(who.status, 200);
      await new Promise((r) => setTimeout(r, 2200));
      const late = await fetch(`${broker.url}/v1/whoami`, { headers: { authorization: `Bearer ${short}` } });
      assert.equal(late.status, 401);
      assert.match(((await late.json()) as { message: string }).message, /the token [0-9a-f]{12} of erin expired at/);

      assert.equal((await api('bob', '/v1/tokens')).status, 403);
      const all = (await (await api('root', '/v1/tokens')).json()) as { tokens: Array<{ id: string; user: string; state: string }> };
      assert.deepEqual(all.tokens.filter((t) => t.user === 'erin').map((t) => t.state), ['expired']);
      const bobTok = all.tokens.find((t) => t.user === 'bob')!;
      const del = await api('root', `/v1/tokens/${bobTok.id}`, { method: 'DELETE' });
      assert.equal(del.status, 200);
      const after = await api('bob', '/v1/whoami');
      assert.equal(after.status, 401);
      assert.match(((await after.json()) as { message: string }).message, /the token [0-9a-f]{12} of bob was revoked at/);
      tokens.bob = await createToken(broker, 'bob');
    });

    it("gpurun token revoke PREFIX ends the token's open event stream, log follow and served workspace within two seconds", async () => {
      const carol = await createToken(broker, 'carol');
      mkdirSync(join(dir, 'home', 'carol'), { recursive: true });
      tokens.carol = carol;
      const job = (await (await submit('carol', { command: ['sleep', '30'], workspace: join(dir, 'home', 'carol'), gpus: 0 })).json()) as Job;
      const events = await api('carol', '/v1/events');
      const follow = await api('carol', `/v1/jobs/${job.id}/logs?follow=1`);
      const endOf = (res: Response) => (async () => {
        try {
          for await (const _ of res.body as AsyncIterable<Uint8Array>) { /* drain */ }
        } catch {
          /* cut */
        }
        return Date.now();
      })();
      // A workspace the client serves (the stream a mount would read carol's files through), for a job that waits
      // behind her first one for gpu1's only GPU: the stream stays open until the revoke.
      const holder = (await (await submit('carol', { command: ['sleep', '30'], workspace: join(dir, 'home', 'carol'), gpus: 1 })).json()) as Job;
      const served = (await (await submit('carol', { command: ['true'], workspace: '/laptop/carol/project', workspaceFrom: 'client', gpus: 1 })).json()) as Job;
      const stream = await new Promise<Socket>((resolve, reject) => {
        const u = new URL(`${broker.url}/v1/jobs/${served.id}/workspace`);
        const req = request({ host: u.hostname, port: u.port, path: u.pathname, headers: { authorization: `Bearer ${carol}`, connection: 'Upgrade', upgrade: 'gpurun-sftp' } });
        req.on('upgrade', (_res, socket) => resolve(socket));
        req.on('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
        req.on('error', reject);
        req.end();
      });
      const streamEnd = new Promise<number>((resolve) => stream.once('close', () => resolve(Date.now())));
      stream.on('error', () => {});
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(stream.destroyed, false, 'the served workspace stream closed before the revoke');
      assert.equal((await jobOf('carol', served.id)).state, 'queued');
      const [evEnd, logEnd] = [endOf(events), endOf(follow)];
      const id = (((await (await api('root', '/v1/tokens')).json()) as { tokens: Array<{ id: string; user: string }> }).tokens.find((t) => t.user === 'carol')!).id;
      const t0 = Date.now();
      const r = await gpurun(['token', 'revoke', id.slice(0, 6), '--config', cfgPath], testEnv(join(dir, 'broker')));
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`token ${id} of carol revoked`));
      const ends = await Promise.all([evEnd, logEnd, streamEnd]);
      for (const e of ends) assert.ok(e - t0 < 2500, `a stream outlived the revoke by ${e - t0} ms`);
      for (const j of [job, holder, served]) await api('root', `/v1/jobs/${j.id}/cancel`, { method: 'POST' });
    });
  });

  describe('containers', () => {
    it('runs containers without new privileges, with every capability dropped and a pids limit; busybox and python jobs still work', async () => {
      const job = (await (await submit('alice', { command: ['sh', '-c', 'grep CapEff /proc/self/status; sleep 3'], workspace: home.alice, gpus: 1 })).json()) as Job;
      const inspect = await waitFor('the container', () => {
        const r = spawnSync('docker', ['inspect', '--format', '{{json .HostConfig}}', `gpurun-${job.id}`], { encoding: 'utf8' });
        return r.status === 0 && (JSON.parse(r.stdout) as { CapDrop: string[]; SecurityOpt: string[]; PidsLimit: number });
      });
      assert.deepEqual(inspect.CapDrop, ['ALL']);
      assert.deepEqual(inspect.SecurityOpt, ['no-new-privileges']);
      assert.equal(inspect.PidsLimit, 4096);
      assert.equal((await ended('alice', job.id)).state, 'succeeded');
      assert.match(await logOf('alice', job.id), /CapEff:\s+0000000000000000/);
      const py = (await (await submit('alice', { command: ['python3', '-c', 'import os; open("py-out.txt", "w").write("ok"); print("python", os.getuid())'], workspace: home.alice, gpus: 1, image: 'local/python:3' })).json()) as Job;
      const end = await ended('alice', py.id);
      assert.equal(end.state, 'succeeded', `${end.reason}\n${await logOf('alice', py.id)}`);
      assert.equal(await logOf('alice', py.id), 'python 0\n');
      assert.equal(readFileSync(join(home.alice, 'py-out.txt'), 'utf8'), 'ok');
    });

    it('refuses an image that docker would read as an option, storing nothing', async () => {
      const r = await submit('alice', { command: ['true'], workspace: home.alice, gpus: 1, image: '--privileged' });
      assert.equal(r.status, 400);
      assert.match(((await r.json()) as { message: string }).message, /image: must be an image reference/);
    });
  });

  describe('smaller findings', () => {
    it('a time limit of 25 days does not fire at once; a 400-digit time is refused', async () => {
      const job = (await (await submit('bob', { command: ['sh', '-c', 'sleep 2; echo still here'], workspace: home.bob, gpus: 0, time: '25d', queue: 'offline' })).json()) as Job;
      const end = await ended('bob', job.id);
      assert.equal(end.state, 'succeeded', end.reason);
      assert.equal(await logOf('bob', job.id), 'still here\n');
      const r = await submit('bob', { command: ['true'], workspace: home.bob, gpus: 0, time: '9'.repeat(400), queue: 'offline' });
      assert.equal(r.status, 400);
      assert.match(((await r.json()) as { message: string }).message, /time: .*longer than the longest time allowed/);
    });

    it("shows terminal escape sequences of a job's name and argv as text in gpurun ls", async () => {
      const evil = '\x1b]0;pwned\x07\x1b[2J\x1b[31mx.py';
      const job = (await (await submit('bob', { command: ['true', evil], workspace: home.bob, gpus: 0 })).json()) as Job;
      await ended('bob', job.id);
      const r = await gpurun(['ls'], cli('bob'));
      assert.equal(r.code, 0, r.stderr);
      assert.ok(!r.stdout.includes('\x1b') && !r.stdout.includes('\x07'), JSON.stringify(r.stdout));
      assert.ok(r.stdout.includes('\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mx.py'), r.stdout);
    });

    it('answers malformed targets, stray Upgrade headers and parser errors with a JSON error, never a 500', async () => {
      const nul = await raw(broker.url, 'GET //%00/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      assert.equal(nul.status, 404, nul.text);
      assert.equal((JSON.parse(nul.body) as { code: string }).code, 'E_NOT_FOUND');
      const star = await raw(broker.url, 'GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      assert.equal(star.status, 400, star.text);
      // An Upgrade header on another endpoint is a plain request to that endpoint.
      const up = await raw(broker.url, 'GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
      assert.equal(up.status, 200, up.text);
      assert.equal((JSON.parse(up.body) as { ok: boolean }).ok, true);
      const bad = await raw(broker.url, 'GARBAGE\r\n\r\n');
      assert.equal(bad.status, 400, bad.text);
      const body = JSON.parse(bad.body) as { code: string; message: string; hint: string };
      assert.equal(body.code, 'E_BAD_REQUEST');
      assert.match(body.message, /not valid HTTP/);
      assert.ok(body.hint);
      assert.ok(!broker.log().includes('request failed'), 'no internal error in the broker log');
    });
  });
});

describe('team broker start-up refusals', function () {
  this.timeout(60_000);
  let dir: string;
  before(() => (dir = scratch('gpurun-team-start-')));
  after(() => cleanup(dir));

  it('refuses to start a team broker with a local host unless trustLocalUsers is set', async () => {
    const cfg = join(dir, 'broker.json');
    writeFileSync(cfg, JSON.stringify({ listen: '127.0.0.1:0', dataDir: join(dir, 'data'), hosts: [{ name: 'box', type: 'local' }] }));
    const r = await gpurun(['broker', '--config', cfg], testEnv(dir));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /hosts\[0\] "box" is a local host: on a team broker it would run every user's job as the broker's own user/);
    assert.match(r.stderr, /"trustLocalUsers": true/);
  });

  it('without workspaceRoots refuses broker-read workspaces, pointing at --serve-workspace', async () => {
    const b = await startBrokerProcess(join(dir, 'b'), { workspaceRoots: undefined, hosts: [{ name: 'box', type: 'local' }] });
    try {
      const token = await createToken(b, 'alice');
      const r = await gpurun(['run', '--workspace', dir, '--gpus', '0', '--', 'true'], testEnv(join(dir, 'c'), { GPURUN_BROKER: b.url, GPURUN_TOKEN: token }));
      assert.equal(r.code, 1);
      assert.match(r.stderr, /error: this broker does not read workspaces from its own disk \(its config has no workspaceRoots\)/);
      assert.match(r.stderr, /gpurun run --serve-workspace/);
    } finally {
      await stopBroker(b);
    }
  });
});
