import assert from 'node:assert/strict';
import { defaultName, validateSubmit, type SubmitDefaults } from '../../server/core/submit.ts';

const d: SubmitDefaults = {
  gpus: 1,
  cpus: 1,
  memoryMiB: 1024,
  queues: { online: { maxTimeSec: 3600, defaultTimeSec: 600 }, offline: { maxTimeSec: 0, defaultTimeSec: 0 } },
};

describe('submit validation', () => {
  it('fills defaults and keeps the argv as given', () => {
    const v = validateSubmit({ command: ['python3', 'train.py', '$(rm -rf ~)', 'a b'], workspace: '/w' }, d);
    assert.deepEqual(v.command, ['python3', 'train.py', '$(rm -rf ~)', 'a b']);
    assert.deepEqual(v.resources, { gpus: 1, cpus: 1, memoryMiB: 1024, timeLimitSec: 600 });
    assert.equal(v.queue, 'online');
    assert.equal(v.name, 'train.py');
  });

  it('parses resources', () => {
    const v = validateSubmit({ command: ['x'], workspace: '/w', gpus: 2, gpuType: 'A100', cpus: 8, memory: '32G', time: '2h', queue: 'offline', env: { SEED: '1' } }, d);
    assert.deepEqual(v.resources, { gpus: 2, gpuType: 'A100', cpus: 8, memoryMiB: 32768, timeLimitSec: 7200 });
    assert.deepEqual(v.env, { SEED: '1' });
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['not an object', [1], /body: must be a JSON object/],
    ['no command', { workspace: '/w' }, /command: must be a non-empty array/],
    ['a shell string', { command: 'python3 train.py', workspace: '/w' }, /command: must be a non-empty array of strings \(argv\)/],
    ['a non-string arg', { command: ['a', 3], workspace: '/w' }, /command\[1\]: must be a string/],
    ['relative workspace', { command: ['a'], workspace: 'w' }, /workspace: must be an absolute path/],
    ['negative gpus', { command: ['a'], workspace: '/w', gpus: -1 }, /gpus: must be a whole number/],
    ['bad memory', { command: ['a'], workspace: '/w', memory: 'lots' }, /memory: "lots" is not a memory size/],
    ['bad queue', { command: ['a'], workspace: '/w', queue: 'urgent' }, /queue: must be one of online, offline/],
    ['over the queue limit', { command: ['a'], workspace: '/w', time: '2h' }, /time: the online queue allows at most 1h, asked for 2h/],
    ['bad env name', { command: ['a'], workspace: '/w', env: { 'A-B': 'x' } }, /env.A-B: is not a valid variable name/],
    ['unknown field', { command: ['a'], workspace: '/w', gpu: 1 }, /gpu: unknown field/],
    ['hostile image', { command: ['a'], workspace: '/w', image: 'x; rm -rf /' }, /image: must be an image reference/],
    ['unknown workspaceFrom', { command: ['a'], workspace: '/w', workspaceFrom: 'laptop' }, /workspaceFrom: must be "broker" or "client"/],
    ['negative restarts', { command: ['a'], workspace: '/w', restarts: -1 }, /restarts: must be a whole number from 0 to 100/],
    ['too many restarts', { command: ['a'], workspace: '/w', restarts: 1e9 }, /restarts: must be a whole number from 0 to 100/],
    ['restartOnExit not a list', { command: ['a'], workspace: '/w', restartOnExit: '75' }, /restartOnExit: must be a list of exit codes from 1 to 255/],
    ['restartOnExit 0 (success)', { command: ['a'], workspace: '/w', restartOnExit: [0] }, /restartOnExit: must be a list of exit codes from 1 to 255/],
  ];
  for (const [what, body, re] of bad) {
    it(`refuses ${what} with a message naming the field`, () => {
      assert.throws(() => validateSubmit(body, d), (e: Error & { code?: string }) => e.code === 'E_BAD_REQUEST' && re.test(e.message));
    });
  }

  it('keeps workspaceFrom "client", and leaves it out for "broker" (the default)', () => {
    assert.equal(validateSubmit({ command: ['a'], workspace: '/w', workspaceFrom: 'client' }, d).workspaceFrom, 'client');
    assert.equal(validateSubmit({ command: ['a'], workspace: '/w', workspaceFrom: 'broker' }, d).workspaceFrom, undefined);
    assert.equal(validateSubmit({ command: ['a'], workspace: '/w' }, d).workspaceFrom, undefined);
  });

  it('keeps restarts and restart exit codes as asked (duplicates once), and leaves them out when not asked', () => {
    const v = validateSubmit({ command: ['x'], workspace: '/w', restarts: 3, restartOnExit: [75, 143, 75] }, d);
    assert.equal(v.restarts, 3);
    assert.deepEqual(v.restartOnExit, [75, 143]);
    const none = validateSubmit({ command: ['x'], workspace: '/w' }, d);
    assert.equal('restarts' in none || 'restartOnExit' in none, false);
  });

  it('names a job after the script it runs', () => {
    assert.equal(defaultName(['python3', '-u', 'src/train.py', '--x']), 'train.py');
    assert.equal(defaultName(['/usr/bin/nvidia-smi']), 'nvidia-smi');
    assert.equal(defaultName(['bash', 'run.sh']), 'run.sh');
  });
});
