/**
 * What a new user of the CLI hits in the first hour, through the real `gpurun` and the embedded broker: time units,
 * the job's environment, the Ctrl+C prompt (in a real terminal: tmux), `logs -f` exit codes, help and "did you
 * mean", history filters, completion, and `kill PID` of a `gpurun broker` started under an older Node.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanup, CLI, createToken, fakeNvidiaSmi, gpurun, NODE, newTmuxTerminal, requirePart, ROOT, scratch, startBrokerProcess, stopEmbedded, testEnv, waitFor } from '../support/harness.ts';

describe('daily loop: the CLI', function () {
  this.timeout(90_000);
  let home: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    home = scratch();
    env = testEnv(home);
  });
  after(async () => {
    await stopEmbedded(home);
    cleanup(home);
  });

  it('reads --time 1 as one minute (Slurm), not one second', async () => {
    const r = await gpurun(['run', '--gpus', '0', '--time', '1', '--', 'sh', '-c', 'sleep 2; echo still here'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'still here\n');
  });

  it('refuses stray words before "--" and submits nothing', async () => {
    const before = JSON.parse((await gpurun(['ls', '--json', '--all'], env)).stdout).length;
    const r = await gpurun(['run', '--time', '5', 'minutes', '--', 'echo', 'hi'], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /gpurun: error: unexpected word before "--": "minutes"\ngpurun: Options go before "--" and the command after it/);
    assert.equal(JSON.parse((await gpurun(['ls', '--json', '--all'], env)).stdout).length, before);
  });

  it('a --time over the online queue\'s limit names the queue that allows it, and submits nothing', async () => {
    // A team broker with the usual queue limits (the local broker has none).
    const b = await startBrokerProcess(join(home, 'team'), { hosts: [{ name: 'box', type: 'local', cpus: 2, memory: '2G' }], queues: { online: { maxTime: '8h' }, offline: { maxTime: '7d' } } });
    try {
      const team = { ...env, GPURUN_BROKER: b.url, GPURUN_TOKEN: await createToken(b, 'newuser') };
      const r = await gpurun(['run', '--gpus', '0', '--time', '9h', '--', 'echo', 'hi'], team);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /online queue allows at most 8h, asked for 9h\ngpurun: Pass --time 8h or less, or --queue offline \(it allows up to 7d/);
      assert.deepEqual(JSON.parse((await gpurun(['ls', '--json', '--all'], team)).stdout), []);
      const ok = await gpurun(['run', '--gpus', '0', '--time', '9h', '--queue', 'offline', '--', 'echo', 'hi'], team);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout, 'hi\n');
    } finally {
      await b.stop();
    }
  });

  it('passes --env NAME from the shell, --env NAME=VALUE and --env-file, and says what the environment is', async () => {
    const ws = scratch();
    writeFileSync(join(ws, '.env'), '# for the job\nFROM_FILE="one two"\nexport OVERRIDDEN=file\n');
    const r = await gpurun(['run', '--gpus', '0', '--workspace', ws, '--env-file', join(ws, '.env'), '--env', 'MYVAR', '--env', 'OVERRIDDEN=flag', '--', 'sh', '-c', 'echo "$MYVAR|$FROM_FILE|$OVERRIDDEN|${NOT_PASSED:-unset}"'], { ...env, MYVAR: 'hello', NOT_PASSED: 'x' }, { cwd: ws });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello|one two|flag|unset\n');
    const missing = await gpurun(['run', '--env', 'MYVAR', '--', 'true'], env);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--env MYVAR: MYVAR is not set in this shell/);
    const help = await gpurun(['help', 'run'], env);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: gpurun run /);
    assert.match(help.stdout, /The job's environment: .*\n.*Variables of your shell are NOT passed on/);
    cleanup(ws);
  });

  it('runs a named configuration of gpurun.json; options and a command after "--" win', async () => {
    const ws = scratch();
    writeFileSync(join(ws, 'gpurun.json'), JSON.stringify({ configs: { hello: { command: ['sh', '-c', 'echo "$GREETING from $0"', 'config'], gpus: 0, env: { GREETING: 'hi' }, name: 'greeter' } } }));
    const r = await gpurun(['run', '--workspace', ws, '--config', 'hello'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hi from config\n');
    assert.match(r.stderr, /submitted \(greeter, /);
    const o = await gpurun(['run', '--workspace', ws, '--config', 'hello', '--env', 'GREETING=hey', '--', 'sh', '-c', 'echo "$GREETING"'], env);
    assert.equal(o.stdout, 'hey\n');
    const bad = await gpurun(['run', '--workspace', ws, '--config', 'helo'], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /has no config "helo" \(did you mean "hello"\?\)\ngpurun: Its configs: hello\./);
    cleanup(ws);
  });

  it('says nothing about the queue when the job starts at once', async () => {
    const r = await gpurun(['run', '--gpus', '0', '--', 'echo', 'hi'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /queued/);
    assert.match(r.stderr, /running on local \(no GPU\)/);
  });

  it('logs -f ends with the job: its final state on stderr and its exit code; --tail shows the last lines', async () => {
    const id = (await gpurun(['run', '--detach', '--gpus', '0', '--', 'sh', '-c', 'for i in 1 2 3 4 5; do echo line $i; done; sleep 1; exit 3'], env)).stdout.trim();
    const f = await gpurun(['logs', '-f', id], env);
    assert.equal(f.code, 3);
    assert.equal(f.stdout, 'line 1\nline 2\nline 3\nline 4\nline 5\n');
    assert.match(f.stderr, new RegExp(`gpurun: job ${id} failed: `));
    const t = await gpurun(['logs', '--tail', '2', id], env);
    assert.equal(t.stdout, 'line 4\nline 5\n');
    const w = await gpurun(['wait', id], env);
    assert.equal(w.code, 3);
  });

  it('filters history by state, age and name', async () => {
    await gpurun(['run', '--gpus', '0', '--name', 'train-small', '--', 'sh', '-c', 'exit 1'], env);
    await gpurun(['run', '--gpus', '0', '--name', 'train-ok', '--', 'true'], env);
    const r = await gpurun(['ls', '--state', 'failed', '--since', '7d', '--name', 'train'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /train-small\s+failed/);
    assert.doesNotMatch(r.stdout, /train-ok/);
    const bad = await gpurun(['ls', '--state', 'broken'], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /"broken" is not a job state/);
  });

  it('--notify rings the bell and sends a desktop notification when the job ends, also after --detach', async () => {
    const bin = scratch();
    const sent = join(bin, 'sent');
    writeFileSync(join(bin, 'notify-send'), `#!/bin/sh\nprintf '%s|' "$@" >> '${sent}'; echo >> '${sent}'\n`, { mode: 0o755 });
    const nenv = { ...env, PATH: `${bin}:${env.PATH}` };
    const r = await gpurun(['run', '--notify', '--gpus', '0', '--name', 'bell', '--', 'sh', '-c', 'exit 3'], nenv);
    assert.equal(r.code, 3);
    assert.ok(r.stderr.includes('\x07'), JSON.stringify(r.stderr));
    assert.match(readFileSync(sent, 'utf8'), /^--app-name=gpurun\|gpurun: bell failed\|job \S+ failed: exited with code 3\|\n$/);
    const d = await gpurun(['run', '--detach', '--notify', '--gpus', '0', '--name', 'later', '--', 'sleep', '6'], nenv);
    assert.equal(d.code, 0, d.stderr);
    assert.doesNotMatch(readFileSync(sent, 'utf8'), /later/);
    await waitFor('the detached waiter to notify', () => /gpurun: later succeeded\|job \S+ succeeded\|/.test(readFileSync(sent, 'utf8')), 20_000, 200);
    cleanup(bin);
  });

  it('suggests what was meant for a mistyped command or option', async () => {
    const c = await gpurun(['lss'], env);
    assert.equal(c.code, 2);
    assert.match(c.stderr, /gpurun: error: unknown command "lss" \(did you mean "ls"\?\)\ngpurun: Run: gpurun ls/);
    const o = await gpurun(['run', '--gpu', '1', '--', 'true'], env);
    assert.equal(o.code, 2);
    assert.match(o.stderr, /unknown option --gpu \(did you mean --gpus\?\)/);
  });

  it('prints completion scripts that bash accepts', async () => {
    const r = await gpurun(['completion', 'bash'], env);
    assert.equal(r.code, 0);
    const words = execFileSync('bash', ['--norc', '--noprofile', '-c', `${r.stdout}\nCOMP_WORDS=(gpurun run --gp); COMP_CWORD=2; _gpurun; echo "\${COMPREPLY[@]}"`]).toString();
    assert.equal(words.trim(), '--gpus --gpu-type');
    // run's options are the job options schema's: the restart options are offered too.
    const more = execFileSync('bash', ['--norc', '--noprofile', '-c', `${r.stdout}\nCOMP_WORDS=(gpurun run --rest); COMP_CWORD=2; _gpurun; echo "\${COMPREPLY[@]}"`]).toString();
    assert.equal(more.trim(), '--restarts --restart-on-exit');
    for (const sh of ['zsh', 'fish']) assert.match((await gpurun(['completion', sh], env)).stdout, /gpurun/);
  });

  describe('Ctrl+C in a terminal', () => {
    const sock = `gpurun-daily-${process.pid}`;
    const tmux = (...args: string[]) => spawnSync('tmux', ['-L', sock, ...args], { encoding: 'utf8' });
    const screen = () => tmux('capture-pane', '-p', '-t', 't').stdout;
    before(function () {
      requirePart(this, 'tmux', spawnSync('tmux', ['-V']).status === 0, 'tmux runs the CLI in a real terminal');
    });
    afterEach(() => tmux('kill-server'));

    function start(cmd: string[], rcFile: string): void {
      const envs = Object.entries({ GPURUN_HOME: home, PATH: process.env.PATH! }).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ');
      const line = `env ${envs} ${NODE} ${CLI} run --gpus 0 -- ${cmd.join(' ')}; echo "rc=$?" > ${rcFile}; sleep 60`;
      newTmuxTerminal(sock, { cols: 200, rows: 50, command: [line] });
    }

    it('holds output back while the prompt is open, and prints the final state when the job ends meanwhile', async () => {
      const rc = join(home, 'rc1');
      start(['sh', '-c', "'i=0; while [ $i -lt 15 ]; do i=$((i+1)); echo tick $i; sleep 0.2; done; exit 4'"], rc);
      await waitFor('output', () => screen().includes('tick 2'));
      tmux('send-keys', '-t', 't', 'C-c');
      await waitFor('the prompt', () => screen().includes('cancel job'));
      await sleep(1000);
      const prompt = screen().split('\n').filter((l) => l.includes('cancel job'));
      assert.equal(prompt.length, 1);
      assert.match(prompt[0], /: $|: *$/, `output ran into the prompt line: ${prompt[0]}`);
      await waitFor('the job to end', () => existsSync(rc), 20_000);
      const s = screen();
      assert.equal(readFileSync(rc, 'utf8').trim(), 'rc=4', s);
      assert.match(s, /tick 15/);
      assert.match(s, /gpurun: job \S+ failed: /);
    });

    it('answering y cancels the job, prints it and exits 130', async () => {
      const rc = join(home, 'rc2');
      start(['sh', '-c', "'echo started; sleep 30'"], rc);
      await waitFor('output', () => screen().includes('started'));
      tmux('send-keys', '-t', 't', 'C-c');
      await waitFor('the prompt', () => screen().includes('cancel job'));
      tmux('send-keys', '-t', 't', 'y', 'Enter');
      await waitFor('the job to end', () => existsSync(rc), 20_000);
      const s = screen();
      assert.equal(readFileSync(rc, 'utf8').trim(), 'rc=130', s);
      assert.doesNotMatch(s, /cancel failed/);
      assert.match(s, /gpurun: job \S+ cancelled/);
    });
  });

  it('kill PID of `gpurun broker` under Node 20 stops the broker it runs under Node 24 (SIGTERM, SIGINT, SIGHUP)', async function () {
    const old = '/usr/bin/node';
    const v = spawnSync(old, ['--version'], { encoding: 'utf8' }).stdout.trim();
    requirePart(this, 'a Node older than 22.5 at /usr/bin/node', /^v(1\d|20|21|22\.[0-4])\./.test(v), `found ${v || 'none'}`);
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      const bh = scratch();
      writeFileSync(join(bh, 'broker.json'), JSON.stringify({ listen: '127.0.0.1:0', dataDir: join(bh, 'data'), trustLocalUsers: true }));
      const p = spawn(old, [CLI, 'broker', '--config', join(bh, 'broker.json')], { env: testEnv(bh, { PATH: `/usr/bin:${process.env.PATH}` }), stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT });
      let log = '';
      p.stderr.on('data', (d) => (log += d));
      await waitFor(`the broker to listen (${sig})`, () => log.includes('broker listening'));
      const children = () => execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(p.pid)]).toString().trim();
      const child = Number(children().split(/\s+/)[0]);
      assert.ok(child > 0, 'the broker runs as a child under Node 24');
      const exited = new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
      process.kill(p.pid!, sig);
      const code = await Promise.race([exited, sleep(15_000).then(() => 'still running')]);
      assert.equal(code, 0, `gpurun broker exits with the broker's status after ${sig}\n${log}`);
      await waitFor(`the Node 24 broker to be gone after ${sig}`, () => !existsSync(`/proc/${child}`));
      cleanup(bh);
    }
    // The embedded broker, started by a CLI under Node 20: the pid in broker.lock is the broker itself (no stand-in),
    // and each of the three signals stops it.
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      const eh = scratch();
      const r = spawnSync(old, [CLI, 'run', '--gpus', '0', '--', 'true'], { env: testEnv(eh), encoding: 'utf8', cwd: ROOT });
      assert.equal(r.status, 0, r.stderr);
      const pid = Number(readFileSync(join(eh, 'broker.lock'), 'utf8'));
      assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /broker\0--embedded/);
      process.kill(pid, sig);
      await waitFor(`the embedded broker to stop after ${sig}`, () => !existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] === 'Z', 15_000);
      cleanup(eh);
    }
    // Killed outright, the parent cannot pass anything on: the broker notices its pipe closing and stops.
    const bh = scratch();
    writeFileSync(join(bh, 'broker.json'), JSON.stringify({ listen: '127.0.0.1:0', dataDir: join(bh, 'data'), trustLocalUsers: true }));
    const p = spawn(old, [CLI, 'broker', '--config', join(bh, 'broker.json')], { env: testEnv(bh), stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT });
    let log = '';
    p.stderr.on('data', (d) => (log += d));
    await waitFor('the broker to listen (SIGKILL)', () => log.includes('broker listening'));
    const child = Number(execFileSync('ps', ['-o', 'pid=', '--ppid', String(p.pid)]).toString().trim());
    process.kill(p.pid!, 'SIGKILL');
    await waitFor('the Node 24 broker to stop after its parent was killed', () => !existsSync(`/proc/${child}`) || readFileSync(`/proc/${child}/stat`, 'utf8').split(' ')[2] === 'Z', 15_000);
    cleanup(bh);
  });
});

describe('daily loop: GPU usage of a running job', function () {
  this.timeout(120_000);
  it('gpurun ls, gpurun show and gpurun hosts show the utilisation and memory the GPUs report, and follow their changes', async () => {
    const home = scratch();
    const fake = fakeNvidiaSmi(home, [{ name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920, usage: [{ pct: 37, usedMiB: 12288 }, { pct: 91, usedMiB: 40960 }] }]);
    const env = testEnv(home, { PATH: `${fake}:${process.env.PATH}` });
    try {
      const id = (await gpurun(['run', '--detach', '--gpus', '1', '--', 'sleep', '60'], env)).stdout.trim();
      const seen = new Set<string>();
      await waitFor('two different readings in gpurun ls', async () => {
        const ls = await gpurun(['ls'], env);
        const m = new RegExp(`${id}.*running.*\\s(0:\\d+% \\S+/80G)\\s`).exec(ls.stdout);
        if (m) seen.add(m[1]);
        return seen.size >= 2;
      }, 90_000);
      assert.deepEqual([...seen].sort(), ['0:37% 12G/80G', '0:91% 40G/80G']);
      assert.match((await gpurun(['ls'], env)).stdout, /GPU USE/);
      assert.match((await gpurun(['hosts'], env)).stdout, new RegExp(`local GPU 0  NVIDIA A100-SXM4-80GB  (37|91)%  (12|40)G/80G  used by ${id}`));
      // gpurun show: each GPU of the job with a bar per probe (two readings by now).
      const show = await gpurun(['show', id], env);
      assert.equal(show.code, 0, show.stderr);
      assert.match(show.stdout, /\nGPUs \(the broker's last probes, about 30 s apart\):\n  GPU 0:  (37|91)%  (12|40)G\/80G  [▁▂▃▄▅▆▇█]{2,}  \(NVIDIA A100-SXM4-80GB\)\n/);
      await gpurun(['cancel', id], env);
    } finally {
      await stopEmbedded(home);
      cleanup(home);
    }
  });
});
