import assert from 'node:assert/strict';
import { directiveLines, parseDirectives } from '../../server/core/directives.ts';

describe('directives', () => {
  it('reads every key of a # gpurun: line', () => {
    const r = parseDirectives('#!/usr/bin/env python3\n# gpurun: gpus=2 gpu-type=A100 cpus=8 memory=32G time=2h queue=offline image=py:3\nimport torch\n');
    assert.deepEqual(r.errors, []);
    assert.deepEqual(r.lines, [1]);
    assert.deepEqual(r.directive, { gpus: 2, gpuType: 'A100', cpus: 8, memoryMiB: 32768, timeSec: 7200, queue: 'offline', image: 'py:3' });
  });
  it('reads restarts and restart-on-exit, and names a bad exit code list', () => {
    assert.deepEqual(parseDirectives('# gpurun: restarts=3 restart-on-exit=75,143\n').directive, { restarts: 3, restartOnExit: [75, 143] });
    const r = parseDirectives('# gpurun: restart-on-exit=75,x\n');
    assert.match(r.errors[0].message, /^restart-on-exit: must be exit codes from 1 to 255 separated by commas/);
    assert.equal(r.errors[0].column, 10);
  });

  it('accepts spacing variants and merges several lines, later lines winning', () => {
    const r = parseDirectives('  #gpurun: gpus=1\n#   gpurun:   gpus=4   time=30m\n');
    assert.deepEqual(r.directive, { gpus: 4, timeSec: 1800 });
    assert.deepEqual(r.lines, [0, 1]);
  });
  it('ignores directives below the first 30 lines', () => {
    const r = parseDirectives('x = 1\n'.repeat(30) + '# gpurun: gpus=8\n');
    assert.deepEqual(r.directive, {});
    assert.deepEqual(r.lines, []);
  });
  it('names unknown keys, bad values and their position', () => {
    const r = parseDirectives('import os\n# gpurun: gpus=two colour=red queue=later memory=lots time=soon cpus=0 oops\n');
    const msgs = r.errors.map((e) => e.message);
    assert.equal(r.errors.length, 7);
    assert.match(msgs[0], /gpus: must be a whole number, got "two"/);
    assert.match(msgs[1], /unknown key "colour"; known keys: gpus, gpu-type/);
    assert.match(msgs[2], /queue: must be one of online, offline, got "later"/);
    assert.match(msgs[3], /memory: "lots" is not a memory size/);
    assert.match(msgs[4], /time: "soon" is not a duration/);
    assert.match(msgs[5], /cpus: must be at least 1/);
    assert.match(msgs[6], /"oops" is not key=value/);
    // Positions point at the bad word, for the editor's squiggle.
    const line = '# gpurun: gpus=two colour=red queue=later memory=lots time=soon cpus=0 oops';
    assert.equal(r.errors[0].line, 1);
    assert.equal(line.slice(r.errors[0].column, r.errors[0].column + r.errors[0].length), 'gpus=two');
    assert.equal(line.slice(r.errors[1].column, r.errors[1].column + r.errors[1].length), 'colour=red');
  });
  it('is not fooled by a similar comment', () => {
    assert.deepEqual(parseDirectives('# gpurun is great: gpus=9\nprint("# gpurun: gpus=3")\n').lines, []);
  });
  it('gives the language server each word with where its key and value are', () => {
    const [l] = directiveLines('# gpurun: gpus=2 oops colour=red\n');
    assert.equal(l.bodyColumn, 9);
    assert.deepEqual(l.words.map((w) => [w.key, w.value, w.column, w.eq, w.option?.field]), [
      ['gpus', '2', 10, 14, 'gpus'],
      ['oops', '', 17, -1, undefined],
      ['colour', 'red', 22, 28, undefined],
    ]);
  });
});
