import assert from 'node:assert/strict';
import { findEntryPoint } from '../../../extension/core/entryPoints.ts';
import { lensTitle } from '../../../extension/core/format.ts';

describe('extension core: entry points and lens titles', () => {
  it('puts the lens on the __main__ guard of a script', () => {
    const src = 'import torch\n\ndef main():\n    pass\n\nif __name__ == "__main__":\n    main()\n';
    const ep = findEntryPoint(src);
    assert.deepEqual(ep, { line: 5, kind: 'main-guard', directive: {}, errors: [] });
    assert.equal(lensTitle(ep!.directive), '▶ Run on GPU');
  });

  it("accepts single quotes and spacing in the guard, and CRLF files", () => {
    assert.equal(findEntryPoint("x = 1\r\nif  __name__=='__main__' :\r\n    x\r\n")?.line, 1);
  });

  it('finds no entry point in a module without a guard or directive', () => {
    assert.equal(findEntryPoint('def helper():\n    return 1\n'), undefined);
    // An indented guard is not the module's entry point.
    assert.equal(findEntryPoint('def f():\n    if __name__ == "__main__":\n        pass\n'), undefined);
  });

  it('prefers the first directive line, and the title shows its resources', () => {
    const src = '#!/usr/bin/env python3\n# gpurun: gpus=2 gpu-type=A100\n# gpurun: queue=offline\nimport os\nif __name__ == "__main__":\n    pass\n';
    const ep = findEntryPoint(src)!;
    assert.equal(ep.line, 1);
    assert.equal(ep.kind, 'directive');
    assert.equal(lensTitle(ep.directive), '▶ Run on GPU (2×A100, offline)');
  });

  it('titles every kind of resource', () => {
    assert.equal(lensTitle({ gpus: 1 }), '▶ Run on GPU (1 GPU)');
    assert.equal(lensTitle({ gpus: 4, cpus: 16, memoryMiB: 65536, timeSec: 7200, queue: 'online' }), '▶ Run on GPU (4 GPUs, 16 CPUs, 64G, 2h, online)');
    assert.equal(lensTitle({ gpus: 0, timeSec: 5400 }), '▶ Run on GPU (CPU only, 1h30m)');
    assert.equal(lensTitle({ gpuType: 'L4' }), '▶ Run on GPU (L4)');
    assert.equal(lensTitle({ gpus: 2, gpuType: 'A100' }, '~now'), '▶ Run on GPU (2×A100, ~now)');
    assert.equal(lensTitle({ image: 'pytorch:2.4', timeSec: 0 }), '▶ Run on GPU (no time limit, pytorch:2.4)');
  });

  it("reports a malformed directive with the parser's message, line and column (for the diagnostic)", () => {
    const src = 'import os\n# gpurun: gpus=two queue=nightly\nif __name__ == "__main__":\n    pass\n';
    const ep = findEntryPoint(src)!;
    assert.equal(ep.line, 1);
    assert.equal(ep.errors.length, 2);
    assert.deepEqual(
      ep.errors.map((e) => [e.line, e.column, e.length]),
      [
        [1, 10, 8],
        [1, 19, 13],
      ],
    );
    assert.equal(src.split('\n')[1].slice(10, 18), 'gpus=two');
    assert.match(ep.errors[0].message, /gpus: must be a whole number, got "two"/);
    assert.match(ep.errors[1].message, /queue: must be one of online, offline, got "nightly"/);
  });
});
