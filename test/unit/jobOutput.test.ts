/** What the editor reads from a job's output: the addresses it prints (TensorBoard, Jupyter), debugpy's ready line. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { findJobUrls } from '../../extension/core/jobUrls.ts';
import { debugpyCommand, debugState } from '../../extension/core/debugLaunch.ts';

describe('job URLs in output', () => {
  it('finds TensorBoard, Jupyter with its token, and http.server', () => {
    assert.deepEqual(findJobUrls('TensorBoard 2.16.2 at http://localhost:6006/ (Press CTRL+C to quit)\n'), [{ port: 6006, path: '/' }]);
    assert.deepEqual(findJobUrls('    http://127.0.0.1:8888/lab?token=0a1b2c3d\n'), [{ port: 8888, path: '/lab?token=0a1b2c3d' }]);
    assert.deepEqual(findJobUrls('Serving HTTP on 0.0.0.0 port 8000 (http://0.0.0.0:8000/) ...'), [{ port: 8000, path: '/' }]);
    assert.deepEqual(findJobUrls('Running on http://gpu-box:7860.'), [{ port: 7860, path: '/' }]);
  });

  it('leaves out other sites, ports out of range, and repeats', () => {
    assert.deepEqual(findJobUrls('see https://pytorch.org/docs and http://example.com:8080/x'), []);
    assert.deepEqual(findJobUrls('http://localhost:99999/'), []);
    assert.deepEqual(findJobUrls('http://localhost:6006/ http://localhost:6006/#scalars http://[::1]:5000/a'), [{ port: 6006, path: '/' }, { port: 5000, path: '/a' }]);
  });
});

describe('Debug on GPU: the command under debugpy and what its output says', () => {
  it('passes the program and its arguments as argv words, never as code', () => {
    const argv = debugpyCommand('python3', 'train.py', ['--lr', '1e-3; import os'], 5679);
    assert.deepEqual([argv[0], argv[1], ...argv.slice(3)], ['python3', '-c', '5679', 'train.py', '--lr', '1e-3; import os']);
    assert.doesNotMatch(argv[2], /train\.py|1e-3/);
  });

  it('reads the ready line (port and folder) and the missing-debugpy line', () => {
    assert.deepEqual(debugState('x\ngpurun: debugpy 1.6.6 listening on port 5678 in /workspace\r\n'), { ready: { port: 5678, cwd: '/workspace' } });
    assert.deepEqual(debugState('gpurun: debugpy is not installed for /usr/bin/python3: install it\n'), { missing: 'debugpy is not installed for /usr/bin/python3: install it' });
    assert.equal(debugState('loading\n'), undefined);
  });

  it('runs under a real Python: says when debugpy is missing, with exit code 127', function () {
    const py = spawnSync('python3', ['-c', 'import debugpy']);
    if (py.error) this.skip();
    const argv = debugpyCommand('python3', 'nothing.py', []);
    const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env: { ...process.env, PYTHONPATH: '', PYTHONNOUSERSITE: '1' } });
    if (py.status === 0) return; // debugpy is installed here: the missing case cannot be shown with this Python
    assert.equal(r.status, 127);
    assert.ok(debugState(r.stdout) && 'missing' in debugState(r.stdout)!);
  });
});
