import assert from 'node:assert/strict';
import { parseArgs } from '../../server/cli/args.ts';
import { closest } from '../../server/cli/suggest.ts';
import { filterJobs, jobFilter, lastLines } from '../../server/cli/history.ts';
import { jobEnv } from '../../server/cli/env.ts';
import type { Job } from '../../server/protocol/jobs.ts';
import { parseRunConfigs } from '../../server/core/runConfigs.ts';

describe('CLI pure parts', () => {
  it('suggests the nearest subcommand or option', () => {
    assert.equal(closest('lss', ['run', 'ls', 'logs', 'cancel']), 'ls');
    assert.equal(closest('--gpu', ['--gpus', '--gpu-type', '--cpus']), '--gpus');
    assert.equal(closest('canecl', ['run', 'ls', 'cancel']), 'cancel');
    assert.equal(closest('frobnicate', ['run', 'ls', 'logs', 'cancel']), undefined);
  });
  it('refuses words before "--" and says where options go', () => {
    const spec = { values: ['time'], flags: [], stopAtPositional: true };
    assert.throws(() => parseArgs(['--time', '5', 'minutes', '--', 'echo', 'hi'], spec, 'run'), /unexpected word before "--": "minutes"/);
    assert.deepEqual(parseArgs(['--time', '5', '--', 'echo', 'hi'], spec, 'run').rest, ['echo', 'hi']);
    assert.deepEqual(parseArgs(['--time', '5', 'python3', 'x.py'], spec, 'run').rest, ['python3', 'x.py']);
    assert.throws(() => parseArgs(['--gpu', '2'], { values: ['gpus', 'gpu-type'], flags: [] }, 'run'), /unknown option --gpu \(did you mean --gpus\?\)/);
  });
  it('filters jobs by state, age and name', () => {
    const now = Date.parse('2026-12-01T12:00:00Z');
    const j = (id: string, state: string, name: string, hoursAgo: number) => ({ id, state, name, createdAt: new Date(now - hoursAgo * 3600_000).toISOString() }) as unknown as Job;
    const jobs = [j('a', 'failed', 'train.py', 1), j('b', 'failed', 'eval.py', 2), j('c', 'succeeded', 'train.py', 3), j('d', 'failed', 'Train-big', 24 * 8)];
    assert.deepEqual(filterJobs(jobs, jobFilter({ state: 'failed', since: '7d', name: 'train' }, now)).map((x) => x.id), ['a']);
    assert.deepEqual(filterJobs(jobs, jobFilter({ name: 'TRAIN' }, now)).map((x) => x.id), ['a', 'c', 'd']);
    assert.deepEqual(filterJobs(jobs, jobFilter({ state: 'ended', since: '150m' }, now)).map((x) => x.id), ['a', 'b']);
    assert.throws(() => jobFilter({ state: 'broken' }), /"broken" is not a job state/);
    assert.throws(() => jobFilter({ since: 'lately' }), /--since: "lately" is not a duration/);
  });
  it('keeps the last lines', () => {
    assert.equal(lastLines('1\n2\n3\n', 2), '2\n3\n');
    assert.equal(lastLines('1\n2\n3', 2), '2\n3');
    assert.equal(lastLines('1\n2\n', 5), '1\n2\n');
    assert.equal(lastLines('1\n2\n', 0), '');
  });
  it('builds a job environment from files, pairs and names from the shell', () => {
    assert.deepEqual(jobEnv([], ['A=1', 'MYVAR', 'B=x=y'], { MYVAR: 'hello' }), { A: '1', MYVAR: 'hello', B: 'x=y' });
    assert.throws(() => jobEnv([], ['NOPE'], {}), /--env NOPE: NOPE is not set in this shell/);
    assert.throws(() => jobEnv([], ['1X=2'], {}), /--env needs NAME=VALUE or NAME, got "1X=2"/);
    assert.throws(() => jobEnv(['/no/such/.env'], [], {}), /cannot read the env file \/no\/such\/.env: ENOENT/);
  });
});

describe('run configurations (gpurun.json)', () => {
  it('reads named configs', () => {
    const r = parseRunConfigs(JSON.stringify({ configs: { train: { command: ['python3', 'train.py'], gpus: 2, time: '2h', env: { SEED: '1' } }, 'eval-small': { gpus: 0 } } }));
    assert.deepEqual(r, { train: { command: ['python3', 'train.py'], gpus: 2, time: '2h', env: { SEED: '1' } }, 'eval-small': { gpus: 0 } });
  });
  it('says what is wrong', () => {
    assert.match(parseRunConfigs('{') as string, /not JSON/);
    assert.equal(parseRunConfigs('{"configs": []}'), 'expected { "configs": { "NAME": { … }, … } }');
    assert.match(parseRunConfigs('{"configs": {"a": {"gpu": 1}}}') as string, /configs\.a\.gpu: unknown setting; known: command, gpus/);
    assert.equal(parseRunConfigs('{"configs": {"a": {"command": "python3 x.py"}}}'), 'configs.a.command: must be a non-empty array of strings (argv)');
    assert.equal(parseRunConfigs('{"configs": {"a b": {}}}'), 'configs: "a b" is not a config name (letters, digits, . _ -)');
  });
});
