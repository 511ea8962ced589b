import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { interpreterProbeArgs, missingInterpreterMessage, parseInterpreterProbe } from '../../server/core/interpreter.ts';

/** Runs the probe in sh on a real folder, as the runtimes do on a host's mount. */
function probe(root: string, seen: string, cmd: string): string {
  const [bin, ...args] = interpreterProbeArgs(root, seen, cmd);
  return execFileSync(bin, args, { encoding: 'utf8' });
}

describe('a virtualenv interpreter the image or host lacks', () => {
  let ws: string;
  before(() => {
    ws = mkdtempSync(join(tmpdir(), 'gpurun-venv-'));
    mkdirSync(join(ws, '.venv', 'bin'), { recursive: true });
    symlinkSync('/opt/nowhere/bin/python3.12', join(ws, '.venv', 'bin', 'python3.12'));
    symlinkSync('python3.12', join(ws, '.venv', 'bin', 'python'));
    writeFileSync(join(ws, '.venv', 'pyvenv.cfg'), 'home = /opt/nowhere/bin\ninclude-system-site-packages = false\nversion = 3.12.1\n');
    writeFileSync(join(ws, 'train.sh'), 'echo hi\n');
  });
  after(() => rmSync(ws, { recursive: true, force: true }));

  it('follows the links inside the workspace to the absolute one and reads pyvenv.cfg (probe run in sh)', () => {
    const f = parseInterpreterProbe('.venv/bin/python', probe(ws, '/workspace', '.venv/bin/python'));
    assert.deepEqual(f, { command: '.venv/bin/python', links: ['python3.12', '/opt/nowhere/bin/python3.12'], file: false, venv: { home: '/opt/nowhere/bin', version: '3.12.1' } });
    // The same path as the job in the container names it.
    assert.deepEqual(parseInterpreterProbe('/workspace/.venv/bin/python', probe(ws, '/workspace', '/workspace/.venv/bin/python')).links.at(-1), '/opt/nowhere/bin/python3.12');
  });

  it('says nothing for a bare name, a path outside the workspace, or a real file', () => {
    assert.equal(probe(ws, '/workspace', 'python3'), '');
    assert.equal(probe(ws, '/workspace', '/usr/bin/python3'), '');
    const f = parseInterpreterProbe('./train.sh', probe(ws, '/workspace', './train.sh'));
    assert.equal(missingInterpreterMessage(f, { kind: 'image', name: 'x' }), null);
    assert.equal(missingInterpreterMessage(parseInterpreterProbe('python3', ''), { kind: 'image' }), null);
    // A hostile first word is only data to the probe.
    assert.equal(probe(ws, '/workspace', '$(touch /tmp/gpurun-pwned)/x'), '');
  });

  it('names the interpreter, where its link points, the venv\'s Python, and what to do, for an image and for a host', () => {
    const f = parseInterpreterProbe('.venv/bin/python', probe(ws, '/workspace', '.venv/bin/python'));
    const img = missingInterpreterMessage(f, { kind: 'image', name: 'local/python:3' })!;
    assert.match(img, /^the job's interpreter \.venv\/bin\/python is a link to \/opt\/nowhere\/bin\/python3\.12, which the image local\/python:3 does not have\. /);
    assert.match(img, /A virtualenv's python is a link to the Python of the machine that made it \(pyvenv\.cfg of \.venv: Python 3\.12\.1 at \/opt\/nowhere\/bin\), not a copy\./);
    assert.match(img, /Use an image that has Python 3\.12\.1 at \/opt\/nowhere\/bin \(--image\), or make the virtualenv with the image's own Python \(e\.g\. gpurun run -- python3 -m venv --copies \.venv-gpu/);
    assert.match(img, /or set the interpreter to the image's/);
    const host = missingInterpreterMessage(f, { kind: 'host', name: 'gpu-1' })!;
    assert.match(host, /which host gpu-1 does not have\. .* Install Python 3\.12\.1 at \/opt\/nowhere\/bin on host gpu-1, or make the virtualenv with host gpu-1's own Python/);
    assert.match(missingInterpreterMessage(f, { kind: 'host', name: 'local' })!, /which this machine does not have/);
  });
});
