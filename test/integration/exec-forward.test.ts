/**
 * `gpurun exec` and `gpurun forward` through a real broker process, on a real SSH host with Docker (sshd on
 * 127.0.9.1, the real engine, the workspace relayed over sshfs), on an SSH host without Docker (127.0.9.3, jobs as
 * processes in the relayed mount) and on the local host: an exec sees the job's files
 * and GPU variables, its exit code and stdin pass through, a terminal (driven through tmux) echoes, follows the window
 * size, takes Ctrl+C and ends on Ctrl+D; a forwarded port answers HTTP on this side; another user gets 404; every
 * exec and forward is in the audit log.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { CLI, NODE, cleanup, createToken, gpurun, newTmuxTerminal, requirePart, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, type BrokerProc, type CliResult } from '../support/harness.ts';
import { makeSshHosts, mountedUnder, removeLeftovers, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';

const hasTmux = spawnSync('tmux', ['-V']).status === 0;
const hasPython = spawnSync('python3', ['-c', 'pass']).status === 0;
const GPU_VARS = /^(CUDA_VISIBLE_DEVICES|NVIDIA_VISIBLE_DEVICES|GPURUN_GPUS|GPURUN_JOB_ID)=/;

interface Place {
  /** The broker, the job's workspace here, alice's and bob's environments. */
  broker: BrokerProc;
  ws: string;
  alice: NodeJS.ProcessEnv;
  bob: NodeJS.ProcessEnv;
  /** The job's own folder as the job sees it (absent: whatever the job found, e.g. a mount point on the host). */
  jobDir?: string;
  /** Argv of a server for `port` (HTTP, serving the current folder). */
  server(port: number): string[];
  /** Whether a later window size reaches the terminal (all three places). */
  resizes: boolean;
}

/** `gpurun ARGS` with `input` on its stdin. */
function gpurunInput(args: string[], env: NodeJS.ProcessEnv, input: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(NODE, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

/** The status of an upgrade request (101, or the error's). */
function upgradeStatus(url: string, path: string, token: string, protocol: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, path, headers: { authorization: `Bearer ${token}`, connection: 'Upgrade', upgrade: protocol, 'x-gpurun-exec': Buffer.from(JSON.stringify({ command: ['true'] })).toString('base64url') } });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

function suite(title: string, port: number, make: (this: Mocha.Context) => Promise<Place>, teardown: () => Promise<void>): void {
  describe(title, function () {
    this.timeout(120_000);
    let p: Place;
    let id: string;
    let jobDir: string;
    const tmuxSock = `gpurun-exec-${process.pid}-${port}`;
    const tmux = (...args: string[]) => execFileSync('tmux', ['-L', tmuxSock, ...args], { encoding: 'utf8' });
    const screen = () => tmux('capture-pane', '-p', '-t', 't');

    before(async function () {
      p = await make.call(this);
      writeFileSync(join(p.ws, 'marker.txt'), 'from the developer\n');
      const sub = await gpurun(['run', '--detach', '--workspace', p.ws, '--', 'sh', '-c', `env | grep -E '${GPU_VARS.source}' | sort >job-env; pwd >job-pwd; exec "$@"`, 'job', ...p.server(port)], p.alice);
      assert.equal(sub.code, 0, sub.stderr);
      id = sub.stdout.trim();
      // Through a relayed mount the file can show up empty a moment before its line does: wait for the line.
      const pwd = await waitFor('the job to write its variables', () => existsSync(join(p.ws, 'job-pwd')) && readFileSync(join(p.ws, 'job-pwd'), 'utf8').trim(), 60_000);
      jobDir = p.jobDir ?? pwd;
    });
    after(async () => {
      spawnSync('tmux', ['-L', tmuxSock, 'kill-server']);
      await teardown();
    });

    it('runs a process that sees the job\'s files and GPU variables; its exit code is the CLI\'s', async () => {
      const r = await gpurun(['exec', id, '--', 'sh', '-c', `env | grep -E '${GPU_VARS.source}' | sort; pwd; cat marker.txt; echo written >from-exec; echo to-stderr >&2; exit 7`], p.alice);
      assert.equal(r.code, 7, r.stderr);
      const jobEnv = readFileSync(join(p.ws, 'job-env'), 'utf8');
      assert.match(jobEnv, new RegExp(`^GPURUN_JOB_ID=${id}$`, 'm'));
      assert.equal(r.stdout, `${jobEnv}${jobDir}\nfrom the developer\n`);
      assert.equal(r.stderr, 'to-stderr\n');
      // On a snapshot mount the job's writes reach the developer's disk a moment later (its write-back, ~0.25 s).
      await waitFor('the file the exec wrote, on the developer\'s disk', () => existsSync(join(p.ws, 'from-exec')) && readFileSync(join(p.ws, 'from-exec'), 'utf8') === 'written\n', 5_000);
    });

    it('passes stdin with -i, and none without it', async () => {
      const r = await gpurunInput(['exec', '-i', id, '--', 'wc', '-l'], p.alice, 'a\nb\nc\n');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), '3');
      const none = await gpurunInput(['exec', id, '--', 'cat'], p.alice, 'not passed\n');
      assert.equal(none.code, 0, none.stderr);
      assert.equal(none.stdout, '');
    });

    it('gives -it a terminal: echo, window size, Ctrl+C, Ctrl+D', async function () {
      requirePart(this, 'tmux', hasTmux, 'tmux is not installed (apt-get install tmux)');
      newTmuxTerminal(tmuxSock);
      const vars = `GPURUN_BROKER=${p.broker.url} GPURUN_TOKEN=${p.alice.GPURUN_TOKEN}`;
      tmux('send-keys', '-t', 't', `clear; ${vars} ${NODE} ${CLI} exec -it ${id} -- env 'PS1=gp> ' sh; echo EXIT=$?`, 'Enter');
      await waitFor('the prompt in the job', () => /^gp>\s*$/m.test(screen()), 30_000);
      tmux('send-keys', '-t', 't', 'echo $((6*7)); stty size', 'Enter');
      await waitFor('the answer and the size', () => /^42\n30 100$/m.test(screen()), 10_000);
      if (p.resizes) {
        tmux('resize-window', '-t', 't', '-x', '120', '-y', '40');
        tmux('send-keys', '-t', 't', 'stty size', 'Enter');
        await waitFor('the new size', () => /^40 120$/m.test(screen()), 10_000);
      }
      tmux('send-keys', '-t', 't', 'sleep 100; echo not-interrupted', 'Enter');
      await new Promise((r) => setTimeout(r, 700));
      tmux('send-keys', '-t', 't', 'C-c');
      // The terminal drops what was typed ahead when Ctrl+C interrupts: type once the prompt is back.
      await waitFor('the prompt after Ctrl+C', () => /\^C\s*\n?gp>\s*$/m.test(screen()) || /^gp>\s*$/m.test(screen().trimEnd().split('\n').at(-1) ?? ''), 10_000);
      tmux('send-keys', '-t', 't', 'echo after-$((1+1))', 'Enter');
      await waitFor('the shell back after Ctrl+C', () => /^after-2$/m.test(screen()), 10_000);
      assert.doesNotMatch(screen(), /^not-interrupted$/m);
      tmux('send-keys', '-t', 't', 'C-d');
      await waitFor('the exec to end', () => /^EXIT=\d+$/m.test(screen()), 10_000);
      assert.match(screen(), /^EXIT=0$/m);
    });

    it('runs gpurun run -it -- python3 on this terminal: echo, size, Ctrl+D ends the job', async function () {
      requirePart(this, 'tmux', hasTmux, 'tmux is not installed (apt-get install tmux)');
      newTmuxTerminal(tmuxSock);
      const vars = `GPURUN_BROKER=${p.broker.url} GPURUN_TOKEN=${p.alice.GPURUN_TOKEN}`;
      tmux('send-keys', '-t', 't', `clear; cd ${p.ws}; ${vars} ${NODE} ${CLI} run -it --gpus 0 -- python3 -q; echo EXIT=$?`, 'Enter');
      await waitFor('the Python prompt', () => /^>>>\s*$/m.test(screen()), 60_000);
      tmux('send-keys', '-t', 't', 'import os, shutil; print(6*7, shutil.get_terminal_size(), os.getcwd())', 'Enter');
      await waitFor('the answer', () => new RegExp(`^42 os\\.terminal_size\\(columns=100, lines=30\\) ${p.jobDir ?? '/\\S+'}$`, 'm').test(screen()), 10_000);
      tmux('send-keys', '-t', 't', 'C-d');
      await waitFor('the job to end', () => /^EXIT=\d+$/m.test(screen()), 20_000);
      assert.match(screen(), /^EXIT=0$/m);
      const id2 = /job (\w+) submitted/.exec(screen())![1];
      const job = JSON.parse((await gpurun(['show', '--json', id2], p.alice)).stdout) as { state: string; exitCode: number };
      assert.deepEqual([job.state, job.exitCode], ['succeeded', 0]);
    });

    it('runs gpurun shell: a shell in a job on this terminal, which ends the job when it exits', async function () {
      requirePart(this, 'tmux', hasTmux, 'tmux is not installed (apt-get install tmux)');
      newTmuxTerminal(tmuxSock);
      const vars = `GPURUN_BROKER=${p.broker.url} GPURUN_TOKEN=${p.alice.GPURUN_TOKEN}`;
      tmux('send-keys', '-t', 't', `clear; cd ${p.ws}; ${vars} ${NODE} ${CLI} shell --gpus 0; echo EXIT=$?`, 'Enter');
      await waitFor('the job to start', () => /job (\w+) submitted/.test(screen()), 60_000);
      const id3 = /job (\w+) submitted/.exec(screen())![1];
      try {
        tmux('send-keys', '-t', 't', 'echo in-the-job-$((6*7)) $(cat marker.txt)', 'Enter');
        await waitFor('the answer', () => /^in-the-job-42 from the developer$/m.test(screen()), 60_000);
        tmux('send-keys', '-t', 't', 'exit 3', 'Enter');
        await waitFor('the job to end', () => /^EXIT=\d+$/m.test(screen()), 20_000);
        assert.match(screen(), /^EXIT=3$/m);
        const job = JSON.parse((await gpurun(['show', '--json', id3], p.alice)).stdout) as { state: string; exitCode: number };
        assert.deepEqual([job.state, job.exitCode], ['failed', 3]);
      } finally {
        await gpurun(['cancel', id3], p.alice); // a failed test leaves no job holding the host
      }
    });

    it('runs gpurun run -i with a pipe: stdin reaches the job, its exit code is the CLI\'s', async () => {
      const r = await gpurunInput(['run', '-i', '--gpus', '0', '--workspace', p.ws, '--', 'python3', '-c', 'import sys; n = len(sys.stdin.read().split()); print(n); sys.exit(n)'], p.alice, 'a b c d e\n');
      assert.equal(r.code, 5, r.stderr);
      assert.equal(r.stdout, '5\n');
      assert.match(r.stderr, /gpurun: job \w+ failed: exited with code 5/);
    });

    it('forwards a port of the job to this machine', async () => {
      const fwd = spawn(NODE, [CLI, 'forward', id, `${port}:0`], { env: p.alice, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      fwd.stdout.on('data', (d) => (out += d));
      fwd.stderr.on('data', (d) => (err += d));
      try {
        const local = await waitFor('the local port', () => /forwarding 127\.0\.0\.1:(\d+) to port/.exec(out)?.[1], 20_000);
        const res = await waitFor('an answer through the forward', async () => {
          const r = await fetch(`http://127.0.0.1:${local}/marker.txt`);
          return r.status === 200 && r;
        }, 30_000, 500);
        assert.equal(await res.text(), 'from the developer\n');
        const two = await Promise.all([1, 2].map(() => fetch(`http://127.0.0.1:${local}/job-pwd`).then((r) => r.text())));
        assert.deepEqual(two, [`${jobDir}\n`, `${jobDir}\n`]);
      } finally {
        fwd.kill('SIGINT');
      }
      await new Promise((r) => fwd.once('close', r));
      assert.equal(err, '');
    });

    it('refuses another user\'s exec and forward with 404, and audits the owner\'s', async () => {
      const r = await gpurun(['exec', id, '--', 'true'], p.bob);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`gpurun: error: no job ${id}`));
      const f = await gpurun(['forward', id, String(port)], p.bob);
      assert.equal(f.code, 1);
      assert.match(f.stderr, new RegExp(`gpurun: error: no job ${id}`));
      assert.equal(await upgradeStatus(p.broker.url, `/v1/jobs/${id}/exec`, p.bob.GPURUN_TOKEN!, 'gpurun-exec'), 404);
      assert.equal(await upgradeStatus(p.broker.url, `/v1/jobs/${id}/forward?port=${port}`, p.bob.GPURUN_TOKEN!, 'gpurun-tcp'), 404);
      assert.equal(await upgradeStatus(p.broker.url, `/v1/jobs/${id}/forward?port=0`, p.alice.GPURUN_TOKEN!, 'gpurun-tcp'), 400);
      const audit = readFileSync(join(p.broker.home, 'data', 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { action: string; by: string; job?: string; command?: string[]; exitCode?: number });
      const mine = audit.filter((a) => a.job === id);
      assert.ok(mine.some((a) => a.action === 'job.exec' && a.by === 'alice' && a.command?.[0] === 'wc'));
      assert.ok(mine.some((a) => a.action === 'job.exec.end' && a.by === 'alice' && a.exitCode === 7));
      assert.ok(mine.some((a) => a.action === 'job.forward' && a.by === 'alice'));
      assert.ok(!mine.some((a) => a.by === 'bob'));
    });

    it('ends an exec within seconds when its token is revoked', async () => {
      const token = await createToken(p.broker, 'alice');
      const child = spawn(NODE, [CLI, 'exec', id, '--', 'sleep', '60'], { env: { ...p.alice, GPURUN_TOKEN: token }, stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      const ended = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
      await new Promise((r) => setTimeout(r, 1500));
      const rev = await gpurun(['token', 'revoke', token, '--config', join(p.broker.home, 'broker.json')], testEnv(p.broker.home));
      assert.equal(rev.code, 0, rev.stderr);
      const t0 = Date.now();
      const code = await Promise.race([ended, new Promise<string>((r) => setTimeout(() => r('still running'), 10_000))]);
      child.kill();
      assert.equal(code, 1, err);
      assert.ok(Date.now() - t0 < 5_000);
      // The revoked token ends the stream, and the session with it: attaching again is refused.
      assert.match(err, /the connection to the broker dropped and the session could not be attached again/);
    });

    it('says so when the job is no longer running', async () => {
      assert.equal((await gpurun(['cancel', id], p.alice)).code, 0);
      const r = await gpurun(['exec', id, '--', 'true'], p.alice);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`gpurun: error: job ${id} is cancelled, not running`));
    });
  });
}

let dir: string;
let set: TestHostSet | undefined;
let dockerBroker: BrokerProc | undefined;
let localBroker: BrokerProc | undefined;

async function users(broker: BrokerProc, home: string): Promise<{ alice: NodeJS.ProcessEnv; bob: NodeJS.ProcessEnv }> {
  return {
    alice: { ...testEnv(home), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'alice') },
    bob: { ...testEnv(home), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'bob') },
  };
}

suite('gpurun exec and forward on an SSH Docker host', 8000, async function (this: Mocha.Context) {
  requirePart(this, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
  requirePart(this, 'the local/python:3 image', spawnSync('docker', ['image', 'inspect', 'local/python:3']).status === 0, 'run test/setup/30-ssh-docker.sh');
  dir = scratch('gpurun-exec-');
  set = await makeSshHosts(join(dir, 'hosts'), [{ name: 'gpu1', address: '127.0.9.1', gpus: [{ name: 'NVIDIA L4', memoryMiB: 23034 }] }]);
  const ws = join(dir, 'workspace');
  mkdirSync(ws);
  const host = { type: 'ssh', name: 'gpu1', address: '127.0.9.1', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir: join(dir, 'hostwork'), mount: { transport: 'relay' } };
  dockerBroker = await startBrokerProcess(join(dir, 'home'), { hosts: [host], defaults: { image: 'local/python:3', gpus: 1, memory: '256M' } });
  const u = await users(dockerBroker, join(dir, 'home'));
  await waitFor('the host up', async () => /gpu1\s+up/.test((await gpurun(['hosts'], u.alice)).stdout), 30_000);
  return { broker: dockerBroker, ws, ...u, jobDir: '/workspace', server: (port) => ['python3', '-m', 'http.server', String(port)], resizes: true };
}, async () => {
  await stopBroker(dockerBroker);
  await set?.stopAll();
  if (dir) {
    removeLeftovers('alice', [join(dir, 'hostwork')]);
    cleanup(dir);
  }
});

let processDir: string;
let processSet: TestHostSet | undefined;
let processBroker: BrokerProc | undefined;
suite('gpurun exec and forward on an SSH host without Docker', 40_000 + (process.pid % 20_000), async function (this: Mocha.Context) {
  const why = sshHostsMissing({ docker: false });
  requirePart(this, 'sshd, sshfs, setsid and GNU tail', why === null, why ?? '');
  requirePart(this, 'python3', hasPython, 'python3 is not installed (for the HTTP server in the job)');
  processDir = scratch('gpurun-exec-process-');
  processSet = await makeSshHosts(join(processDir, 'hosts'), [{ name: 'p1', address: '127.0.9.3', gpus: [{ name: 'NVIDIA L4', memoryMiB: 23034 }] }]);
  const ws = join(processDir, 'workspace');
  mkdirSync(ws);
  const host = { type: 'ssh', name: 'p1', address: '127.0.9.3', user: 'root', port: 2222, identityFile: processSet.clientKey, knownHosts: processSet.knownHosts, runtime: 'process', workDir: join(processDir, 'hostwork'), mount: { transport: 'relay' } };
  processBroker = await startBrokerProcess(join(processDir, 'home'), { hosts: [host], defaults: { gpus: 1, memory: '256M' } });
  const u = await users(processBroker, join(processDir, 'home'));
  await waitFor('the host up', async () => /p1\s+up/.test((await gpurun(['hosts'], u.alice)).stdout), 30_000);
  return { broker: processBroker, ws, ...u, server: (port) => ['python3', '-m', 'http.server', '--bind', '127.0.0.1', String(port)], resizes: true };
}, async () => {
  await stopBroker(processBroker);
  await processSet?.stopAll();
  if (processDir) {
    for (const m of mountedUnder(join(processDir, 'hostwork'))) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
    cleanup(processDir);
  }
});

let localDir: string;
suite('gpurun exec and forward on the local host', 20_000 + (process.pid % 20_000), async function (this: Mocha.Context) {
  requirePart(this, 'python3', hasPython, 'python3 is not installed (for the HTTP server in the job)');
  localDir = scratch('gpurun-exec-local-');
  const ws = join(localDir, 'workspace');
  mkdirSync(ws);
  // Local jobs get the broker's HOME: one of the test's own, so an interactive bash (gpurun shell) does not run root's
  // ~/.bashrc of this machine.
  const jobsHome = join(localDir, 'jobs-home');
  mkdirSync(jobsHome);
  localBroker = await startBrokerProcess(join(localDir, 'home'), { hosts: [{ name: 'local', type: 'local', cpus: 2, memory: '2G' }] }, { HOME: jobsHome });
  return { broker: localBroker, ws, ...(await users(localBroker, join(localDir, 'home'))), jobDir: ws, server: (port) => ['python3', '-m', 'http.server', '--bind', '127.0.0.1', String(port)], resizes: true };
}, async () => {
  await stopBroker(localBroker);
  if (localDir) cleanup(localDir);
});
