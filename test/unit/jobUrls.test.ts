/** The addresses a job prints for itself, found in its output (TensorBoard, Jupyter, http.server). */
import assert from 'node:assert/strict';
import { findJobUrls } from '../../extension/core/jobUrls.ts';

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
