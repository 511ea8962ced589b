/**
 * Interactive work through a dropped connection, against a real broker process (listening on 127.0.13.2) and a real
 * SSH host with Docker (sshd on 127.0.13.1, the real engine, the workspace relayed over sshfs): the connection between
 * the CLI and the broker is cut with iptables (every packet on the broker's port answered with a TCP reset, so both
 * ends see the drop; rules removed in after()). A shell under `gpurun exec -it` keeps running through the cut and the
 * CLI attaches to it again, with the output printed meanwhile; `gpurun run -it` does the same and its output is in
 * the job's log; `gpurun forward` and `gpurun run -p` answer again once the broker is back. Debug on GPU's job (a
 * program under debugpy, from Debian's package in the image) answers the Debug Adapter Protocol through a forward.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { debugpyCommand, debugState } from '../../extension/core/debugLaunch.ts';
import { CLI, NODE, cleanup, createToken, gpurun, newTmuxTerminal, requirePart, scratch, startBrokerProcess, stopBroker, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';
import { makeSshHosts, removeLeftovers, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';

const HOST = '127.0.13.1';
const BROKER = '127.0.13.2';
const hasTmux = spawnSync('tmux', ['-V']).status === 0;
const hasIptables = spawnSync('iptables', ['-L', '-n']).status === 0;

describe('interactive work through a dropped connection to the broker (sshd + Docker + sshfs + iptables)', function () {
  this.timeout(180_000);
  let dir: string;
  let set: TestHostSet | undefined;
  let broker: BrokerProc | undefined;
  let alice: NodeJS.ProcessEnv;
  let ws: string;
  let brokerPort: string;
  const rules: string[][] = [];
  const tmuxSock = `gpurun-drop-${process.pid}`;
  const tmux = (...args: string[]) => execFileSync('tmux', ['-L', tmuxSock, ...args], { encoding: 'utf8' });
  const screen = () => tmux('capture-pane', '-p', '-J', '-S', '-200', '-t', 't');
  const children: ChildProcess[] = [];

  /**
   * Cuts the CLI's connections to the broker: every TCP packet to or from the broker's port gets a reset (the resets
   * themselves pass, so both ends hear of it, and a new connection is refused at once).
   */
  function cut(): void {
    for (const r of [['OUTPUT', '-d', BROKER, '-p', 'tcp', '--dport', brokerPort], ['OUTPUT', '-s', BROKER, '-p', 'tcp', '--sport', brokerPort]]) {
      r.push('!', '--tcp-flags', 'RST', 'RST');
      const rule = [...r, '-j', 'REJECT', '--reject-with', 'tcp-reset'];
      execFileSync('iptables', ['-I', ...rule]);
      rules.push(rule);
    }
  }
  function heal(): void {
    for (const rule of rules.splice(0)) spawnSync('iptables', ['-D', ...rule]);
  }
  const newTerminal = () => newTmuxTerminal(tmuxSock);
  /** Waits until the terminal shows `re`; a timeout says what it shows. */
  const shows = (what: string, re: RegExp, ms: number) => waitFor(what, () => re.test(screen()), ms).catch((e: Error) => {
    throw new Error(`${e.message}; the terminal shows:\n${screen()}`);
  });
  const vars = () => `GPURUN_BROKER=${broker!.url} GPURUN_TOKEN=${alice.GPURUN_TOKEN}`;

  before(async function () {
    requirePart(this, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
    requirePart(this, 'the local/python:3 image', spawnSync('docker', ['image', 'inspect', 'local/python:3']).status === 0, 'run test/setup/30-ssh-docker.sh');
    requirePart(this, 'iptables', hasIptables, 'iptables -L fails (apt-get install iptables)');
    requirePart(this, 'tmux', hasTmux, 'tmux is not installed (apt-get install tmux)');
    dir = scratch('gpurun-drop-');
    set = await makeSshHosts(join(dir, 'hosts'), [{ name: 'gpu1', address: HOST, gpus: [{ name: 'NVIDIA L4', memoryMiB: 23034 }] }]);
    ws = join(dir, 'workspace');
    mkdirSync(ws);
    writeFileSync(join(ws, 'marker.txt'), 'from the developer\n');
    const host = { type: 'ssh', name: 'gpu1', address: HOST, user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir: join(dir, 'hostwork'), mount: { transport: 'relay' } };
    broker = await startBrokerProcess(join(dir, 'home'), { listen: `${BROKER}:0`, hosts: [host], defaults: { image: 'local/python:3', gpus: 1, memory: '256M' } });
    brokerPort = new URL(broker.url).port;
    alice = { ...testEnv(join(dir, 'home')), GPURUN_BROKER: broker.url, GPURUN_TOKEN: await createToken(broker, 'alice') };
    await waitFor('the host up', async () => /gpu1\s+up/.test((await gpurun(['hosts'], alice)).stdout), 30_000);
  });
  afterEach(async () => {
    heal();
    // A failed test leaves no job holding the host's one GPU for the next.
    const ls = await gpurun(['ls', '--json'], alice);
    for (const j of (JSON.parse(ls.stdout || '[]') as Array<{ id: string; state: string }>)) if (['queued', 'starting', 'running'].includes(j.state)) await gpurun(['cancel', j.id], alice);
  });
  after(async () => {
    heal();
    for (const c of children) c.kill('SIGKILL');
    spawnSync('tmux', ['-L', tmuxSock, 'kill-server']);
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      removeLeftovers('alice', [join(dir, 'hostwork')]);
      cleanup(dir);
    }
  });

  it('keeps a shell of gpurun exec -it running through a cut and attaches to it again, with what it printed meanwhile', async () => {
    const sub = await gpurun(['run', '--detach', '--workspace', ws, '--', 'sleep', '600'], alice);
    assert.equal(sub.code, 0, sub.stderr);
    const id = sub.stdout.trim();
    await waitFor('the job to run', async () => (JSON.parse((await gpurun(['show', '--json', id], alice)).stdout) as { state: string }).state === 'running', 60_000);
    newTerminal();
    tmux('send-keys', '-t', 't', `clear; ${vars()} ${NODE} ${CLI} exec -it ${id} -- env 'PS1=gp> ' sh; echo EXIT=$?`, 'Enter');
    await shows('the prompt in the job', /^gp>\s*$/m, 30_000);
    tmux('send-keys', '-t', 't', 'echo pid-$$', 'Enter');
    const pid = await waitFor('the shell\'s pid', () => /^pid-(\d+)$/m.exec(screen())?.[1], 10_000);
    tmux('send-keys', '-t', 't', 'sleep 4; echo slept-through-$$', 'Enter');
    cut();
    await shows('the CLI to see the drop', /gpurun: the connection to the broker dropped; the process runs on in the job, attaching again/, 20_000);
    await new Promise((r) => setTimeout(r, 5_000));
    assert.doesNotMatch(screen(), /^slept-through-\d+$/m);
    heal();
    await shows('the CLI attached again', /gpurun: attached again/, 20_000);
    await shows('the output printed during the cut', new RegExp(`^slept-through-${pid}$`, 'm'), 10_000);
    tmux('send-keys', '-t', 't', 'echo still-$$', 'Enter');
    await shows('the same shell', new RegExp(`^still-${pid}$`, 'm'), 10_000);
    tmux('send-keys', '-t', 't', 'C-d');
    await shows('the exec to end', /^EXIT=\d+$/m, 10_000);
    assert.match(screen(), /^EXIT=0$/m);
    const audit = readFileSync(join(broker!.home, 'data', 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { action: string; job?: string });
    assert.ok(audit.some((a) => a.action === 'job.exec.attach' && a.job === id));
    assert.equal((await gpurun(['cancel', id], alice)).code, 0);
  });

  it('keeps gpurun run -it through a cut; what its terminal showed is in the job\'s log', async () => {
    newTerminal();
    tmux('send-keys', '-t', 't', `clear; cd ${ws}; ${vars()} ${NODE} ${CLI} run -it --gpus 0 -- python3 -q; echo EXIT=$?`, 'Enter');
    await shows('the Python prompt', /^>>>\s*$/m, 60_000);
    const id = /job (\w+) submitted/.exec(screen())![1];
    tmux('send-keys', '-t', 't', 'print(6*7)', 'Enter');
    await shows('the answer', /^42$/m, 10_000);
    cut();
    tmux('send-keys', '-t', 't', 'x = "typed-during-the-cut"', 'Enter');
    await shows('the CLI to see the drop', /the connection to the broker dropped/, 20_000);
    heal();
    await shows('the CLI attached again', /gpurun: attached again/, 20_000);
    tmux('send-keys', '-t', 't', 'print(x.upper())', 'Enter');
    await shows('the variable set during the cut', /^TYPED-DURING-THE-CUT$/m, 10_000);
    tmux('send-keys', '-t', 't', 'C-d');
    await shows('the job to end', /^EXIT=\d+$/m, 20_000);
    assert.match(screen(), /^EXIT=0$/m);
    const job = JSON.parse((await gpurun(['show', '--json', id], alice)).stdout) as { state: string; exitCode: number };
    assert.deepEqual([job.state, job.exitCode], ['succeeded', 0]);
    const logs = await gpurun(['logs', id], alice);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /print\(6\*7\)\r?\n42\r?\n/);
    assert.match(logs.stdout, /TYPED-DURING-THE-CUT/);
  });

  it('forwards again after a cut (gpurun forward), and gpurun run -p forwards a port while the job runs', async () => {
    const port = 8000 + (process.pid % 1000);
    const run = spawn(NODE, [CLI, 'run', '-p', `${port}:0`, '--workspace', ws, '--', 'python3', '-m', 'http.server', String(port)], { env: alice, cwd: ws, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(run);
    let err = '';
    run.stderr.on('data', (d) => (err += d));
        if (process.env.GPURUN_TEST_TRACE) console.error('trace', Date.now(), "const local = await waitFor('the local p");
const local = await waitFor('the local port of run -p', () => /forwarding 127\.0\.0\.1:(\d+) to port \d+ of job/.exec(err)?.[1], 30_000);
    const id = /job (\w+) submitted/.exec(err)![1];
    const get = async (p: string) => {
      const r = await fetch(`http://127.0.0.1:${p}/marker.txt`);
      return r.status === 200 && (await r.text());
    };
    assert.equal(await waitFor('an answer through run -p', () => get(local).catch(() => false), 60_000, 500).catch((e: Error) => {
      throw new Error(`${e.message}; gpurun run said:\n${err}`);
    }), 'from the developer\n');

        if (process.env.GPURUN_TEST_TRACE) console.error('trace', Date.now(), "const fwd = spawn(NODE, [CLI, 'forward'");
const fwd = spawn(NODE, [CLI, 'forward', id, `${port}:0`], { env: alice, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(fwd);
    let out = '';
    fwd.stdout.on('data', (d) => (out += d));
    const local2 = await waitFor('the local port of forward', () => /forwarding 127\.0\.0\.1:(\d+) to port/.exec(out)?.[1], 20_000);
    assert.equal(await waitFor('an answer through forward', () => get(local2).catch(() => false), 30_000, 500), 'from the developer\n');
    if (process.env.GPURUN_TEST_TRACE) console.error('trace', Date.now(), 'cut();\n    await assert.rejects(get(');
    cut();
    await assert.rejects(get(local2));
    await new Promise((r) => setTimeout(r, 3_000));
    if (process.env.GPURUN_TEST_TRACE) console.error('trace', Date.now(), 'heal();\n    assert.equal(await waitF');
    heal();
    assert.equal(await waitFor('an answer through forward after the cut', () => get(local2).catch(() => false), 30_000, 500), 'from the developer\n');
    assert.equal(await waitFor('an answer through run -p after the cut', () => get(local).catch(() => false), 30_000, 500), 'from the developer\n');
    assert.equal(fwd.exitCode, null, 'gpurun forward is still running');

    if (process.env.GPURUN_TEST_TRACE) console.error('trace', Date.now(), "assert.equal((await gpurun(['cancel'");
    assert.equal((await gpurun(['cancel', id], alice)).code, 0);
    const code = await new Promise<number | null>((r) => (run.exitCode !== null ? r(run.exitCode) : run.once('close', (c) => r(c))));
    assert.equal(code, 130, err);
    await waitFor('gpurun forward to stop with the job', () => fwd.exitCode !== null, 20_000);
    await assert.rejects(get(local));
  });

  it('runs a program under debugpy in the container (Debug on GPU\'s job) and answers the Debug Adapter Protocol through a forward', async () => {
    writeFileSync(join(ws, 'dbg.py'), 'answer = 6 * 7\nprint("the answer is", answer)\n');
    const sub = await gpurun(['run', '--detach', '--workspace', ws, '--', ...debugpyCommand('python3', 'dbg.py', [], 5678)], alice);
    assert.equal(sub.code, 0, sub.stderr);
    const id = sub.stdout.trim();
    const ready = await waitFor('debugpy to listen in the job', async () => debugState((await gpurun(['logs', id], alice)).stdout), 60_000, 500);
    assert.deepEqual(ready, { ready: { port: 5678, cwd: '/workspace' } });
    const fwd = spawn(NODE, [CLI, 'forward', id, '5678:0'], { env: alice, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(fwd);
    let out = '';
    fwd.stdout.on('data', (d) => (out += d));
    const local = Number(await waitFor('the local port', () => /forwarding 127\.0\.0\.1:(\d+) to port/.exec(out)?.[1], 20_000));
    // A DAP initialize request, as VS Code's debug client sends it first; debugpy's adapter answers it.
    const answer = await new Promise<string>((resolve, reject) => {
      const s = connect(local, '127.0.0.1');
      const body = JSON.stringify({ seq: 1, type: 'request', command: 'initialize', arguments: { adapterID: 'gpurun', clientID: 'test', pathFormat: 'path' } });
      let got = '';
      s.on('connect', () => s.write(`Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`));
      s.on('data', (d) => {
        got += d;
        if (/"command":\s*"initialize"/.test(got)) {
          s.destroy();
          resolve(got);
        }
      });
      s.on('error', reject);
      setTimeout(() => reject(new Error(`no answer; got ${got}`)), 20_000);
    });
    assert.match(answer, /"success":\s*true/);
    assert.match(answer, /"supportsConfigurationDoneRequest":\s*true/);
    fwd.kill('SIGINT');
    assert.equal((await gpurun(['cancel', id], alice)).code, 0);
  });
});
