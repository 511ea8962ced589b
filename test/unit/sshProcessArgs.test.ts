import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { followArgs, JOB_SCRIPT, launchArgs, launchInput, listRunsArgs, parsePidFile, parseRunState, parseRuns, removeArgs, runDir, signalArgs, statusArgs, stopArgs } from '../../server/runtimes/sshProcessArgs.ts';

const JOB_SECRET = 'value-only-on-stdin-77';
const hostile = `it's $(touch /tmp/x) \`id\` "q" ;\n two  spaces`;

describe('ssh process runtime: commands', () => {
  it('launches with every user word as a positional argument, after a constant script', () => {
    const a = launchArgs({ dir: '/w/jobs/j1', brokerId: 'b0b0', cwd: '/w/mnt/j1', env: { A: hostile, CUDA_VISIBLE_DEVICES: '2,3' }, command: ['python3', hostile] });
    assert.deepEqual(a.slice(0, 2), ['sh', '-c']);
    assert.equal(a[3], 'gpurun-launch');
    assert.equal(a[4], JOB_SCRIPT);
    // The variables' values travel on stdin, never on a command line.
    assert.deepEqual(a.slice(5), ['/w/jobs/j1', 'b0b0', '/w/mnt/j1', '2', 'python3', hostile]);
    assert.equal(launchInput({ A: hostile, CUDA_VISIBLE_DEVICES: '2,3' }).toString(), `A ${Buffer.byteLength(hostile)}\n${hostile}CUDA_VISIBLE_DEVICES 3\n2,3`);
    // The scripts are the same whatever the job: no user data in shell text.
    const b = launchArgs({ dir: '/x', brokerId: 'c', cwd: '/y', env: {}, command: ['true'] });
    assert.equal(a[2], b[2]);
    assert.ok(!a[2].includes(hostile) && !JOB_SCRIPT.includes(hostile));
  });

  it('refuses what could not be a variable name (it becomes a file name) and an empty command', () => {
    assert.throws(() => launchArgs({ dir: '/x', brokerId: 'b', cwd: '/y', env: { '../evil': 'v' }, command: ['true'] }), /not a variable name/);
    assert.throws(() => launchArgs({ dir: '/x', brokerId: 'b', cwd: '/y', env: {}, command: [] }), /empty command/);
  });

  it('builds the other commands as constant scripts with positional arguments', () => {
    assert.equal(runDir('/var/tmp/gpurun', 'ab12'), '/var/tmp/gpurun/jobs/ab12');
    assert.deepEqual(statusArgs('/w/jobs/j1').slice(3), ['gpurun-status', '/w/jobs/j1']);
    assert.deepEqual(stopArgs('/w/jobs/j1', 10_000).slice(3), ['gpurun-stop', '/w/jobs/j1', '100']);
    assert.deepEqual(signalArgs('/w/jobs/j1', 'SIGUSR1').slice(3), ['gpurun-signal', '/w/jobs/j1', 'USR1'], 'sh\'s kill takes the name without SIG');
    assert.deepEqual(stopArgs('/w/jobs/j1', 0).slice(4), ['/w/jobs/j1', '1'], 'at least a tenth of a second of grace');
    assert.deepEqual(removeArgs('/w/jobs/j1').slice(3), ['gpurun-remove', '/w/jobs/j1']);
    assert.deepEqual(listRunsArgs('/w/').slice(3), ['gpurun-runs', '/w/jobs']);
    // tail -c +N counts from 1: a log file of 1234 bytes resumes at the 1235th.
    assert.deepEqual(followArgs('/w/jobs/j1', 1234, 4242).slice(3), ['gpurun-follow', '/w/jobs/j1', '1235', '4242']);
  });

  it('the launch script writes each variable from stdin exactly (line breaks, spaces, UTF-8, empty)', () => {
    const shell = spawnSync('dash', ['-c', 'true']).status === 0 ? 'dash' : 'sh';
    const t = mkdtempSync(join(tmpdir(), 'gpurun-launch-'));
    const env = { A: hostile, E: '', U: 'grüße\n\n', S: JOB_SECRET };
    const argv = launchArgs({ dir: join(t, 'jobs', 'j1'), brokerId: 'b', cwd: t, env, command: ['sh', '-c', 'printf "%s|" "$A" "$E" "$U" "$S"'] });
    const r = spawnSync(shell, argv.slice(1), { input: launchInput(env), encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    for (const [k, v] of Object.entries(env)) assert.equal(readFileSync(join(t, 'jobs', 'j1', 'env', k), 'utf8'), v, k);
    assert.ok(!argv.some((w) => w.includes(JOB_SECRET)));
    spawnSync('sh', ['-c', 'sleep 0.5']);
    rmSync(t, { recursive: true, force: true });
  });

  it('the remove script leaves neither the run directory nor any of its processes, every time', () => {
    // The supervisor writes the exit file once the job dies: a removal that raced it used to leave the folder.
    const shell = spawnSync('dash', ['-c', 'true']).status === 0 ? 'dash' : 'sh';
    const t = mkdtempSync(join(tmpdir(), 'gpurun-remove-'));
    try {
      for (let i = 0; i < 30; i++) {
        const dir = join(t, 'jobs', `j${i}`);
        const mark = `gpurun-remove-test-${process.pid}-${i}`;
        const launch = launchArgs({ dir, brokerId: 'b', cwd: t, env: {}, command: ['sh', '-c', 'sleep 300', mark] });
        assert.equal(spawnSync(shell, launch.slice(1), { input: '', encoding: 'utf8', timeout: 20_000 }).status, 0);
        const r = spawnSync(shell, removeArgs(dir).slice(1), { encoding: 'utf8', timeout: 20_000 });
        assert.equal(r.status, 0, r.stderr);
        assert.equal(existsSync(dir), false, `run ${i}: the run directory is gone (${existsSync(dir) ? readdirSync(dir).join(' ') : ''})`);
        const left = spawnSync('pgrep', ['-f', mark], { encoding: 'utf8' }).stdout.trim();
        assert.equal(left, '', `run ${i}: no process of the job is left`);
      }
    } finally {
      spawnSync('pkill', ['-f', `gpurun-remove-test-${process.pid}-`]);
      rmSync(t, { recursive: true, force: true });
    }
  });

  it('every script is valid POSIX sh (dash when it is there)', () => {
    const shell = spawnSync('dash', ['-c', 'true']).status === 0 ? 'dash' : 'sh';
    const a = launchArgs({ dir: '/x', brokerId: 'b', cwd: '/y', env: {}, command: ['true'] });
    for (const script of [a[2], JOB_SCRIPT, statusArgs('/x')[2], stopArgs('/x', 1)[2], removeArgs('/x')[2], listRunsArgs('/x')[2], followArgs('/x', 0, 1)[2]]) {
      const r = spawnSync(shell, ['-n', '-c', script], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${r.stderr}\n${script}`);
    }
  });
});

describe('ssh process runtime: parsers', () => {
  it('reads the pid file', () => {
    assert.deepEqual(parsePidFile('9076 9074 995887\n'), { pid: 9076, supervisor: 9074 });
    assert.deepEqual(parsePidFile(''), { pid: 0, supervisor: 0 }, 'ended before it recorded its pid');
    assert.throws(() => parsePidFile('Welcome to gpu1!\n9076 9074 1\n'), /not a pid file/);
  });

  it('reads the job state line', () => {
    // Captured from the status script on Debian 12 (dash).
    assert.deepEqual(parseRunState('exit 9076 9074 3 2026-11-22T12:45:58Z\n'), { kind: 'exit', pid: 9076, supervisor: 9074, exitCode: 3, endedAt: '2026-11-22T12:45:58.000Z' });
    assert.deepEqual(parseRunState('exit 0 0 125 2026-11-22T12:45:58Z'), { kind: 'exit', pid: 0, supervisor: 0, exitCode: 125, endedAt: '2026-11-22T12:45:58.000Z' });
    assert.deepEqual(parseRunState('running 9076 9074\n'), { kind: 'running', pid: 9076, supervisor: 9074 });
    assert.deepEqual(parseRunState('gone 9076 9074\n'), { kind: 'gone', pid: 9076, supervisor: 9074 });
    assert.deepEqual(parseRunState('nopid\n'), { kind: 'nopid' });
    assert.deepEqual(parseRunState('missing\n'), { kind: 'missing' });
    assert.throws(() => parseRunState('sh: 1: tr: not found\nrunning 1 2'), /unexpected job status/);
  });

  it('keeps the run directories of this broker only', () => {
    assert.deepEqual(parseRuns('j1 b0b0\nj2 other\nj3 b0b0\n\n', 'b0b0'), ['j1', 'j3']);
    assert.deepEqual(parseRuns('', 'b0b0'), []);
  });
});
