import assert from 'node:assert/strict';
import { pickBrokerNode, nodeVersionOk } from '../../../extension/core/brokerNode.ts';
import { actionsFor, editorErrorText, errorText } from '../../../extension/core/errors.ts';
import { endNotice } from '../../../extension/core/notice.ts';
import { fieldLine, setField, show } from '../../../extension/core/editFields.ts';
import { buildSubmit, gpuChoices, parseEnvPairs, scriptCommand, shortGpuName, splitCommandLine } from '../../../extension/core/runRequest.ts';
import { host, job } from './fixtures.ts';

describe('extension core: what a run submits', () => {
  it("submits the script with the directive's resources", () => {
    const req = buildSubmit({
      command: scriptCommand('python3', 'src/train.py'),
      workspace: '/w',
      directive: { gpus: 2, gpuType: 'A100', cpus: 8, memoryMiB: 32768, timeSec: 7200, queue: 'offline', image: 'pytorch:2' },
    });
    assert.deepEqual(req, { command: ['python3', 'src/train.py'], workspace: '/w', gpus: 2, gpuType: 'A100', cpus: 8, memory: 32768, time: 7200, queue: 'offline', image: 'pytorch:2' });
  });

  it('lets picked options win over the directive; a picked untyped GPU count drops the directive type', () => {
    const req = buildSubmit({ command: ['python3', 't.py'], workspace: '/w', directive: { gpus: 2, gpuType: 'A100', queue: 'offline' }, choice: { gpus: 1, queue: 'online', time: '30m' } });
    assert.deepEqual(req, { command: ['python3', 't.py'], workspace: '/w', gpus: 1, queue: 'online', time: '30m' });
  });

  it('leaves out what neither says, so the broker defaults apply', () => {
    assert.deepEqual(buildSubmit({ command: ['python3', 't.py'], workspace: '/w' }), { command: ['python3', 't.py'], workspace: '/w' });
  });

  it('offers GPU counts per type from the live pool with how many are free now', () => {
    const choices = gpuChoices([
      host('a', [{ name: 'NVIDIA A100-SXM4-80GB', jobId: 'j1' }, { name: 'NVIDIA A100-SXM4-80GB' }, { name: 'NVIDIA A100-SXM4-80GB' }, { name: 'NVIDIA A100-SXM4-80GB' }]),
      host('b', [{ name: 'NVIDIA L4' }, { name: 'NVIDIA L4' }]),
      host('c', [{ name: 'NVIDIA H100 80GB HBM3' }], 'down'),
    ]);
    assert.deepEqual(
      choices.map((c) => `${c.label} | ${c.description}`),
      [
        '1×A100 | 3 of 4 A100 free now',
        '2×A100 | 3 of 4 A100 free now',
        '3×A100 | 3 of 4 A100 free now',
        '4×A100 | 3 of 4 A100 free now',
        '1×L4 | 2 of 2 L4 free now',
        '2×L4 | 2 of 2 L4 free now',
        '1 GPU (any type) | 5 of 6 free now',
        '2 GPUs (any type) | 5 of 6 free now',
        '3 GPUs (any type) | 5 of 6 free now',
        '4 GPUs (any type) | 5 of 6 free now',
        'No GPU | CPU only',
      ],
    );
    assert.deepEqual(gpuChoices([]), [{ label: 'No GPU', description: 'CPU only', gpus: 0 }]);
  });

  it('shortens nvidia-smi names to the word the broker matches', () => {
    assert.equal(shortGpuName('NVIDIA A100-SXM4-80GB'), 'A100');
    assert.equal(shortGpuName('NVIDIA H100 80GB HBM3'), 'H100');
    assert.equal(shortGpuName('NVIDIA GeForce RTX 4090'), 'RTX 4090');
    assert.equal(shortGpuName('NVIDIA RTX A6000'), 'RTX A6000');
    assert.equal(shortGpuName('Tesla V100-PCIE-16GB'), 'V100');
  });

  it('splits a typed command into argv without a shell', () => {
    assert.deepEqual(splitCommandLine(`python3 train.py --name "my run" --tag 'a b' x\\ y $HOME`), ['python3', 'train.py', '--name', 'my run', '--tag', 'a b', 'x y', '$HOME']);
    assert.deepEqual(splitCommandLine('  '), []);
    assert.deepEqual(splitCommandLine(`echo ""`), ['echo', '']);
    assert.equal(splitCommandLine('echo "unclosed'), 'unclosed " quote');
  });

  it('picks a runtime for the local broker that has node:sqlite', () => {
    assert.equal(nodeVersionOk('22.5.0'), true);
    assert.equal(nodeVersionOk('v24.21.0'), true);
    assert.equal(nodeVersionOk('22.4.1'), false);
    assert.equal(nodeVersionOk('20.20.2'), false);
    assert.deepEqual(pickBrokerNode({ execPath: '/cs/node', nodeVersion: '24.21.0', electron: false }, undefined), { path: '/cs/node', version: '24.21.0' });
    assert.deepEqual(pickBrokerNode({ execPath: '/code/code', nodeVersion: '22.15.1', electron: true }, undefined), { path: '/code/code', version: '22.15.1', env: { ELECTRON_RUN_AS_NODE: '1' } });
    assert.equal(pickBrokerNode({ execPath: '/code/code', nodeVersion: '20.18.0', electron: true }, undefined), undefined);
    assert.deepEqual(pickBrokerNode({ execPath: '/code/code', nodeVersion: '20.18.0', electron: true }, '/opt/node22/bin/node'), { path: '/opt/node22/bin/node' });
  });

  it('offers the action that fixes an error, and Show Log', () => {
    assert.deepEqual(actionsFor('E_UNAUTHORIZED', false), ['Sign In', 'Show Log']);
    assert.deepEqual(actionsFor('E_UNREACHABLE', false), ['Open Settings', 'Sign In', 'Show Log']);
    assert.deepEqual(actionsFor('E_UNREACHABLE', true), ['Show Log']);
    assert.deepEqual(actionsFor('E_UNSATISFIABLE', false), ['Show Hosts', 'Show Log']);
    assert.deepEqual(actionsFor(undefined, false), ['Show Log']);
    assert.equal(errorText({ message: 'no host has 8 GPUs', hint: 'The largest host has 4.' }), 'no host has 8 GPUs. The largest host has 4.');
  });
});

describe('Run on GPU… extras', () => {
  it('reads env pairs as the command line splits words', () => {
    assert.deepEqual(parseEnvPairs(`A=1 B='two words' C=`), { A: '1', B: 'two words', C: '' });
    assert.equal(parseEnvPairs('A=1 nope'), '"nope" is not NAME=VALUE');
  });
  it('submits memory, CPUs and image as chosen', () => {
    const req = buildSubmit({ command: ['x'], workspace: '/w', choice: { memory: '16G', cpus: 4, image: 'local/python:3' }, env: { A: '1' } });
    assert.deepEqual(req, { command: ['x'], workspace: '/w', memory: '16G', cpus: 4, image: 'local/python:3', env: { A: '1' } });
  });
});

describe('editor texts', () => {
  it('names the setting, not the CLI variable, when the broker cannot be reached', () => {
    const err = { code: 'E_UNREACHABLE', message: 'cannot reach the broker at http://gpu:8750 (ECONNREFUSED)', hint: 'Check that the broker runs and the address (GPURUN_BROKER or --broker) is right.' };
    const t = editorErrorText(err, false);
    assert.match(t, /gpurun\.brokerUrl/);
    assert.doesNotMatch(t, /GPURUN_BROKER|--broker/);
    // The setting is named where a collapsed notification still shows it.
    assert.equal(t, 'cannot reach the broker (gpurun.brokerUrl: http://gpu:8750, ECONNREFUSED). Check that it runs there and that the setting is its address.');
    assert.ok(`GPU Run: ${t}`.indexOf('gpurun.brokerUrl') < 40);
  });
  it('says how a job ended, with its last lines, in one line', () => {
    const n = endNotice(job({ id: 'j1', state: 'failed', exitCode: 3, reason: 'exited with code 3' }), 'epoch 9\n\x1b[31mTraceback\x1b[0m\nValueError: x\n');
    assert.equal(n.text, 'GPU Run: job j1 train.py failed (exit 3): exited with code 3 — last output: epoch 9 ⏎ Traceback ⏎ ValueError: x');
    assert.equal(n.ok, false);
  });
});

describe('the request editor (Rerun with Changes, Run on GPU… step 5)', () => {
  const req = { command: ['python3', 'train.py'], workspace: '/w', gpus: 1, time: 3600 };
  it('shows each line as a person reads it', () => {
    assert.equal(show(req, 'time'), '1h');
    assert.equal(show(req, 'memory'), "the broker's default");
    assert.equal(show({ ...req, gpuType: 'A100', gpus: 2 }, 'gpus'), '2 × A100');
    assert.equal(fieldLine({ ...req, cpus: 4 }, 'cpus'), 'CPUs: 4');
    assert.equal(fieldLine(req, 'gpus'), 'GPUs: 1');
  });
  it('takes typed values, refuses bad ones, and clears with an empty one', () => {
    assert.deepEqual(setField(req, 'gpus', '2×A100'), { ...req, gpus: 2, gpuType: 'A100' });
    assert.deepEqual(setField(req, 'command', `python3 train.py --lr '3e-4'`), { ...req, command: ['python3', 'train.py', '--lr', '3e-4'] });
    assert.deepEqual(setField(req, 'time', '90'), { ...req, time: '90' });
    assert.deepEqual(setField(req, 'time', ''), { command: req.command, workspace: '/w', gpus: 1 });
    assert.match(setField(req, 'time', 'soon') as string, /not a duration/);
    assert.equal(setField(req, 'cpus', '0'), 'a whole number of CPUs, 1 or more');
    assert.deepEqual(setField(req, 'env', 'A=1'), { ...req, env: { A: '1' } });
  });
});
