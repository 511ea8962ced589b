/**
 * `gpurun lsp` driven over stdio by a plain LSP client, against a real broker process whose two local hosts have
 * 4×A100 each (nvidia-smi stand-in): completion from the live pool and its update when a GPU is taken, hover, the
 * never-fits error and its quick fix, and diagnostics that stay put when the broker goes away.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { BrokerClient } from '../../server/protocol/client.ts';
import { CLI, NODE, cleanup, createToken, fakeNvidiaSmi, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';
import { LspClient } from '../support/lspClient.ts';

type Item = { label: string; labelDetails?: { detail?: string } };

describe('gpurun lsp over stdio (real broker, stand-in GPUs)', function () {
  this.timeout(60_000);
  let dir: string;
  let broker: BrokerProc;
  let token: string;
  let lsp: LspClient;
  const uri = 'file:///work/train.py';

  before(async () => {
    dir = scratch();
    const bin = fakeNvidiaSmi(dir, Array.from({ length: 4 }, () => ({ name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 })));
    broker = await startBrokerProcess(join(dir, 'broker'), {
      hosts: [
        { name: 'gpu1', type: 'local', cpus: 8, memory: '16G' },
        { name: 'gpu2', type: 'local', cpus: 8, memory: '16G' },
      ],
      queues: { offline: { maxTime: '7d' } },
    }, { PATH: `${bin}:${process.env.PATH}` });
    token = await createToken(broker, 'alice');
    lsp = new LspClient([NODE, CLI, 'lsp', '--stdio', `--clientProcessId=${process.pid}`], testEnv(join(dir, 'client'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: token, GPURUN_LSP_POLL_MS: '500' }));
    const init = await lsp.initialize();
    assert.ok(init.capabilities.completionProvider && init.capabilities.hoverProvider && init.capabilities.codeActionProvider);
  });
  after(async () => {
    await lsp?.close();
    await broker?.stop();
    cleanup(dir);
  });

  const complete = async (text: string, line: number, character: number): Promise<string[]> => {
    const r = await lsp.request<Item[] | { items: Item[] }>('textDocument/completion', { textDocument: { uri }, position: { line, character } });
    return (Array.isArray(r) ? r : r.items).map((i) => `${i.label}${i.labelDetails?.detail ?? ''}`);
  };

  it('completes GPU types from the live pool, and shows a GPU taken within 2 s', async () => {
    lsp.open(uri, '# gpurun: gpu-type=\nimport torch\n');
    await waitFor('the pool', async () => (await complete('', 0, 19)).length > 0, 10_000);
    assert.deepEqual(await complete('', 0, 19), ['A100 — 8 of 8 free']);
    const client = new BrokerClient({ address: broker.url, token });
    // The workspace sits beside the broker's folder: a workspace may never contain the broker's data.
    const ws = join(dir, 'ws');
    mkdirSync(ws, { recursive: true });
    const job = await client.submit({ command: ['sleep', '30'], workspace: ws, gpus: 1 });
    const t0 = Date.now();
    await waitFor('a GPU taken to show in completion', async () => (await complete('', 0, 19))[0] === 'A100 — 7 of 8 free', 5_000);
    const ms = Date.now() - t0;
    assert.ok(ms < 2000, `completion updated after ${ms} ms`);
    await client.cancel(job.id);
    await client.close();
  });

  it('hovers with where the line fits now and the queue ahead', async () => {
    lsp.change(uri, '# gpurun: gpus=2 gpu-type=A100 queue=offline\n', 2);
    const h = await lsp.request<{ contents: { value: string } }>('textDocument/hover', { textDocument: { uri }, position: { line: 0, character: 12 } });
    assert.match(h.contents.value, /\*\*gpus\*\*: GPUs, all on one host/);
    assert.match(h.contents.value, /fits now on gpu1, gpu2; 0 jobs queued ahead in offline; max time 7d/);
  });

  it('marks 16 GPUs as an error naming the largest host, with a quick fix to the most there is', async () => {
    const before = lsp.notifications.length;
    lsp.change(uri, '# gpurun: gpus=16\nimport torch\n', 3);
    const diags = await lsp.waitDiagnostics(uri, (d) => d.some((x) => /16 GPUs/.test(x.message)), 10_000, before);
    const err = diags.find((d) => /16 GPUs/.test(d.message))!;
    assert.equal(err.message, '16 GPUs: the largest host has 4 (gpu1, 4×A100)');
    assert.equal(err.severity, 1);
    const actions = await lsp.request<Array<{ title: string; edit: { changes: Record<string, Array<{ newText: string; range: unknown }>> } }>>('textDocument/codeAction', {
      textDocument: { uri },
      range: err.range,
      context: { diagnostics: [err] },
    });
    assert.equal(actions[0].title, 'Change to gpus=4');
    assert.deepEqual(actions[0].edit.changes[uri][0], { range: { start: { line: 0, character: 10 }, end: { line: 0, character: 17 } }, newText: 'gpus=4' });
  });

  it('keeps its diagnostics when the broker stops, adding one warning with the age of the pool', async () => {
    const before = lsp.notifications.length;
    await broker.stop();
    const diags = await lsp.waitDiagnostics(uri, (d) => d.some((x) => /unreachable/.test(x.message)), 10_000, before);
    assert.deepEqual(
      diags.map((d) => d.message.replace(/\d+ s ago/, 'N s ago')),
      ['16 GPUs: the largest host has 4 (gpu1, 4×A100)', 'The broker is unreachable: pool checks use the snapshot of N s ago.'],
    );
    // Nothing flaps while it stays away: every publication since has the same error.
    await new Promise((r) => setTimeout(r, 1500));
    const since = lsp.notifications.slice(before).filter((n) => n.method === 'textDocument/publishDiagnostics').map((n) => (n.params as { diagnostics: Array<{ message: string }> }).diagnostics.map((d) => d.message));
    assert.ok(since.every((msgs) => msgs[0] === '16 GPUs: the largest host has 4 (gpu1, 4×A100)'), JSON.stringify(since));
  });
});
