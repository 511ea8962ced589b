import assert from 'node:assert/strict';
import { codeActions, completions, diagnostics, hover, lineSummary, runEstimate, type PoolView } from '../../server/lsp/providers.ts';
import { gpuTypes, shortGpuType } from '../../server/lsp/fit.ts';
import { host, pool } from './lsp-fixtures.ts';

const online: PoolView = { snapshot: pool(), online: true, takenAt: Date.now() };
const at = (line: number, character: number) => ({ line, character });
const labels = (text: string, pos = at(0, text.split('\n')[0].length)) => completions(text, pos, online).map((c) => `${c.label}${c.labelDetails?.detail ?? ''}`);
const messages = (text: string, view = online) => diagnostics(text, view).map((d) => `${['', 'error', 'warning', 'info', 'hint'][d.severity!]}: ${d.message}`);

describe('language server: pool facts', () => {
  it('names GPU types as a gpu-type value names them, with free and total counts', () => {
    assert.equal(shortGpuType('NVIDIA A100-SXM4-80GB'), 'A100');
    assert.equal(shortGpuType('NVIDIA GeForce RTX 4090'), '4090');
    assert.equal(shortGpuType('Tesla V100-PCIE-16GB'), 'V100');
    assert.deepEqual(gpuTypes(pool()).map((t) => [t.type, t.free, t.total, t.largest]), [['A100', 3, 8, 8], ['L4', 2, 2, 2]]);
  });
});

describe('language server: completion', () => {
  it('offers the keys not yet on the line, with their meaning', () => {
    const l = labels('# gpurun: gpus=2 ');
    assert.ok(l.includes('gpu-type') && l.includes('time') && !l.includes('gpus'), l.join());
    const item = completions('# gpurun: ', at(0, 10), online).find((c) => c.label === 'gpu-type')!;
    assert.equal(item.insertText, 'gpu-type=');
    assert.match(item.detail!, /GPU type/);
  });
  it('offers the GPU types of the pool with their counts', () => {
    assert.deepEqual(labels('# gpurun: gpu-type='), ['A100 — 3 of 8 free', 'L4 — 2 of 2 free']);
  });
  it('offers GPU counts that fit, saying where they fit now', () => {
    const l = labels('# gpurun: gpu-type=A100 gpus=', at(0, 29));
    assert.equal(l.length, 9);
    assert.equal(l[3], '3 — fits now on gpu4');
    assert.equal(l[4], '4 — fits, none free now');
  });
  it('offers queues with their limits and lengths, and the queue maximum as a time', () => {
    assert.deepEqual(labels('# gpurun: queue='), ['online — max time 8h, default 1h; 0 queued', 'offline — max time 7d; 2 queued']);
    assert.equal(labels('# gpurun: queue=offline time=', at(0, 29))[0], "7d — the offline queue's maximum");
  });
  it('offers Slurm clusters as backends with their partitions and gres', () => {
    const view: PoolView = { online: true, snapshot: pool({ clusters: [{ name: 'hpc', partitions: { online: 'gpu-short', offline: 'gpu-long' }, gres: 'gpu', images: false }], backends: ['hosts', 'hpc'] }) };
    const l = completions('# gpurun: backend=', at(0, 18), view).map((c) => `${c.label}${c.labelDetails?.detail}`);
    assert.deepEqual(l, ['hosts — the host pool: 2 hosts (default)', 'hpc — Slurm cluster: partitions gpu-short (online), gpu-long (offline); gres gpu']);
  });
  it("offers the images the pool's Docker hosts have, the broker's default first, and where each is", () => {
    const view: PoolView = { online: true, snapshot: pool({ images: ['python:3.12', 'local/busybox:1'], defaultImage: 'python:3.12', hosts: [host('gpu1', 'NVIDIA L4', 2, 0, { runtime: 'docker', images: ['local/busybox:1', 'python:3.12'] })] }) };
    const l = completions('# gpurun: image=', at(0, 16), view).map((c) => `${c.label}${c.labelDetails?.detail ?? ''}`);
    assert.deepEqual(l, ["python:3.12 — the broker's default; on gpu1", 'local/busybox:1 — on gpu1']);
  });
  it('replaces the value being typed, and offers nothing outside a directive', () => {
    const c = completions('# gpurun: gpu-type=a1', at(0, 21), online)[0];
    assert.deepEqual(c.textEdit, { range: { start: at(0, 19), end: at(0, 21) }, newText: 'A100' });
    assert.deepEqual(completions('print("hi")', at(0, 3), online), []);
  });
  it('still completes keys and static values without a pool', () => {
    const none: PoolView = { online: false };
    assert.ok(completions('# gpurun: ', at(0, 10), none).length > 5);
    assert.deepEqual(completions('# gpurun: queue=', at(0, 16), none).map((c) => c.label), ['online', 'offline']);
  });
});

describe('language server: hover', () => {
  it('explains a key and says where the line fits now', () => {
    const h = hover('# gpurun: gpus=2 gpu-type=A100 queue=offline\n', at(0, 12), online)!;
    const text = (h.contents as { value: string }).value;
    assert.match(text, /\*\*gpus\*\*: GPUs, all on one host/);
    assert.match(text, /Valid: a whole number from 0 to 1024/);
    assert.match(text, /fits now on gpu4; 2 jobs queued ahead in offline; max time 7d/);
  });
  it('says how old the pool is when the broker is unreachable', () => {
    const s = lineSummary('# gpurun: gpus=1\n', { ...online, online: false, takenAt: 1000 }, 121_000);
    assert.match(s!, /fits now on gpu1, gpu4; 0 jobs queued ahead in online; max time 8h \(pool as of 2 min ago; the broker is unreachable\)/);
  });
});

describe('language server: diagnostics and quick fixes', () => {
  it('names an unknown key with a did-you-mean, and a bad value with the valid range', () => {
    assert.deepEqual(messages('# gpurun: gpu_type=A100 gpus=two queue=ofline'), [
      'error: unknown key "gpu_type"; did you mean "gpu-type"?',
      'error: gpus: must be a whole number, got "two"; valid: a whole number from 0 to 1024',
      'error: queue: must be one of online, offline, got "ofline"',
    ]);
  });
  it('says when no host could ever run the request, naming the largest host', () => {
    assert.deepEqual(messages('# gpurun: gpus=16'), ['error: 16 GPUs: the largest host has 8 (gpu4, 8×A100)']);
    assert.deepEqual(messages('# gpurun: gpu-type=H100'), ['error: no host has a GPU of type H100; the pool has A100, L4']);
  });
  it("refuses a time over the queue's maximum", () => {
    assert.deepEqual(messages('# gpurun: queue=online time=2d'), ["error: time 2d is over the online queue's maximum of 8h"]);
  });
  it('says as information when nothing is free now, with the queue position it would get', () => {
    assert.deepEqual(messages('# gpurun: gpus=4 gpu-type=A100 queue=offline'), ['info: Nothing free right now for this request: it would be #3 in the offline queue.']);
  });
  it('offers the nearest valid value as a quick fix', () => {
    const text = '# gpurun: gpu-type=a100 gpus=16\n# gpurun: queue=ofline\n';
    const diags = diagnostics(text, online);
    const fixes = codeActions('file:///t.py', diags).map((a) => [a.title, a.edit!.changes!['file:///t.py'][0].newText]);
    assert.deepEqual(fixes, [['Change to queue=offline', 'queue=offline']]);
    const fixed = '# gpurun: gpu-type=a100 gpus=16\n';
    assert.deepEqual(codeActions('u', diagnostics(fixed, online)).map((a) => a.edit!.changes!.u[0].newText), ['A100', 'gpus=8']);
  });
  it('keeps the pool checks of the last snapshot offline, and adds one warning with its age', () => {
    const text = '# gpurun: gpus=16';
    const off: PoolView = { ...online, online: false, takenAt: Date.now() - 90_000 };
    assert.deepEqual(messages(text, off), ['error: 16 GPUs: the largest host has 8 (gpu4, 8×A100)', 'warning: The broker is unreachable: pool checks use the snapshot of 1 min ago.']);
    assert.deepEqual(messages('# gpurun: gpus=two', { online: false }), [
      'error: gpus: must be a whole number, got "two"; valid: a whole number from 0 to 1024',
      'warning: The broker is unreachable and no pool was seen yet: only the options themselves are checked.',
    ]);
  });
  it('names a broker that refuses (a token it does not know) as such, not as unreachable', () => {
    const refused: PoolView = { online: false, problem: 'invalid token' };
    assert.deepEqual(messages('# gpurun: gpus=1', refused), ['warning: The broker refused the pool (invalid token) and no pool was seen yet: only the options themselves are checked.']);
  });
  it('has nothing to say about a file without directives', () => {
    assert.deepEqual(diagnostics('import torch\n'.repeat(100), { online: false }), []);
  });
});

describe('language server: run estimate', () => {
  it('says ~now, the queue position, or never', () => {
    assert.equal(runEstimate('# gpurun: gpus=2 gpu-type=A100\n', online), '~now');
    assert.equal(runEstimate('# gpurun: gpus=1 queue=offline\n', online), '~queued #3');
    assert.equal(runEstimate('# gpurun: gpus=16\n', online), 'never fits');
    assert.equal(runEstimate('# gpurun: gpus=1\n', { ...online, online: false }), undefined);
    const down: PoolView = { online: true, snapshot: pool({ hosts: [host('gpu4', 'NVIDIA A100', 8, 8)] }) };
    assert.equal(runEstimate('# gpurun: gpus=1\n', down), '~queued #1');
  });
});
