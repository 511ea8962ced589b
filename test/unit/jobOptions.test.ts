import assert from 'node:assert/strict';
import { DIRECTIVE_OPTIONS, JOB_OPTIONS, didYouMean, optionByKey, optionsHelp, parseOptionJson, parseOptionText } from '../../server/core/jobOptions.ts';
import { validateSubmit } from '../../server/core/submit.ts';
import { parseDirectives } from '../../server/core/directives.ts';

const opt = (k: string) => optionByKey(k)!;
const defaults = { gpus: 1, cpus: 1, memoryMiB: 1024, queues: { online: { maxTimeSec: 0, defaultTimeSec: 0 }, offline: { maxTimeSec: 0, defaultTimeSec: 0 } } };

describe('job options schema', () => {
  it('names every option once, with a flag, a directive key and an API field', () => {
    assert.deepEqual(JOB_OPTIONS.map((o) => o.key), ['gpus', 'gpu-type', 'cpus', 'memory', 'time', 'queue', 'image', 'restarts', 'restart-on-exit', 'checkpoint-signal', 'backend', 'name']);
    assert.equal(new Set(JOB_OPTIONS.map((o) => o.field)).size, JOB_OPTIONS.length);
    assert.ok(!DIRECTIVE_OPTIONS.some((o) => o.key === 'name'), 'a script does not name itself');
  });

  it('parses text forms with the units parser and the ranges', () => {
    assert.deepEqual(parseOptionText(opt('memory'), '16G'), { value: 16384 });
    assert.deepEqual(parseOptionText(opt('time'), '1h30m'), { value: 5400 });
    assert.deepEqual(parseOptionText(opt('restart-on-exit'), '75,143,75'), { value: [75, 143] });
    assert.deepEqual(parseOptionText(opt('restarts'), '101'), { error: 'must be at most 100' });
    assert.deepEqual(parseOptionText(opt('gpus'), '2000'), { error: 'must be at most 1024' });
    assert.match((parseOptionText(opt('restart-on-exit'), '75,0') as { error: string }).error, /must be exit codes from 1 to 255 separated by commas, e.g. 75,143; got "75,0"/);
    assert.match((parseOptionText(opt('image'), 'x; rm -rf /') as { error: string }).error, /must be an image reference/);
  });

  it('checks API values with the same rules (numbers stay numbers)', () => {
    assert.deepEqual(parseOptionJson(opt('restart-on-exit'), [143, 75]), { value: [143, 75] });
    assert.deepEqual(parseOptionJson(opt('restarts'), 2.5), { error: 'must be a whole number from 0 to 100' });
    const v = validateSubmit({ command: ['a'], workspace: '/w', restarts: 3, restartOnExit: [75] }, defaults);
    assert.equal(v.restarts, 3);
    assert.deepEqual(v.restartOnExit, [75]);
    assert.throws(() => validateSubmit({ command: ['a'], workspace: '/w', restartOnExit: [300] }, defaults), /restartOnExit: must be a list of exit codes from 1 to 255/);
  });

  it('is what the directive parser accepts, so a directive and a flag agree', () => {
    const r = parseDirectives('# gpurun: restarts=2 restart-on-exit=75,143 gpus=2000 image=bad;image\n');
    assert.deepEqual(r.directive, { restarts: 2, restartOnExit: [75, 143] });
    assert.deepEqual(r.errors.map((e) => e.message), ['gpus: must be at most 1024', 'image: must be an image reference such as python:3.12, got "bad;image"']);
  });

  it('writes the run options of --help, one line per option with its default', () => {
    const help = optionsHelp();
    for (const o of JOB_OPTIONS) assert.match(help, new RegExp(`--${o.key} ${o.metavar.replace(',', ',')} +${o.description.replace(/[()"']/g, '.')}`));
    assert.match(help, /--restart-on-exit C,C also restart it when it exits with one of these codes/);
  });

  it('suggests the likely key or value of a typo', () => {
    assert.equal(didYouMean('gpu_type', DIRECTIVE_OPTIONS.map((o) => o.key)), 'gpu-type');
    assert.equal(didYouMean('ofline', ['online', 'offline']), 'offline');
    assert.equal(didYouMean('colour', DIRECTIVE_OPTIONS.map((o) => o.key)), undefined);
  });
});
