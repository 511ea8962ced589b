/**
 * The language server's figures: completion and diagnostics latency on a 5,000-line script (over stdio, as an
 * editor sees them), the time from a pool change (a GPU taken) to completion that shows it, and the server's RSS.
 * Baseline: the round trip of a hover on a line without a directive (the server answers null at once).
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { BrokerClient } from '../server/protocol/client.ts';
import { CLI, NODE, cleanup, createToken, fakeNvidiaSmi, scratch, startBrokerProcess, testEnv } from '../test/support/harness.ts';
import { LspClient } from '../test/support/lspClient.ts';
import { fmt, percentile, report } from './_support.ts';

type Item = { label: string; labelDetails?: { detail?: string } };

export async function run(): Promise<void> {
  const dir = scratch('gpurun-bench-lsp-');
  const bin = fakeNvidiaSmi(dir, Array.from({ length: 8 }, () => ({ name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 })));
  const broker = await startBrokerProcess(join(dir, 'broker'), { hosts: [{ name: 'gpu4', type: 'local', cpus: 8, memory: '16G' }] }, { PATH: `${bin}:${process.env.PATH}` });
  const token = await createToken(broker, 'bench');
  const lsp = new LspClient([NODE, CLI, 'lsp', '--stdio'], testEnv(join(dir, 'client'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: token }));
  const client = new BrokerClient({ address: broker.url, token });
  try {
    await lsp.initialize();
    const uri = 'file:///bench/train.py';
    const body = Array.from({ length: 4998 }, (_, i) => `x_${i} = compute(${i})  # a line of model code`).join('\n');
    const script = (first: string) => `${first}\nimport torch\n${body}\n`;
    lsp.open(uri, script('# gpurun: gpus=2 gpu-type='));
    const complete = async (): Promise<Item[]> => {
      const r = await lsp.request<Item[] | { items: Item[] }>('textDocument/completion', { textDocument: { uri }, position: { line: 0, character: 26 } });
      return Array.isArray(r) ? r : r.items;
    };
    const freeShown = async () => (await complete())[0]?.labelDetails?.detail ?? '';
    for (let i = 0; i < 200 && !(await freeShown()).includes('free'); i++) await new Promise((r) => setTimeout(r, 25));

    const times = async (n: number, fn: () => Promise<unknown>) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        await fn();
        out.push(performance.now() - t0);
      }
      return out;
    };
    const base = await times(200, () => lsp.request('textDocument/hover', { textDocument: { uri }, position: { line: 3000, character: 2 } }));
    const comp = await times(200, complete);
    let version = 1;
    const diag = await times(100, async () => {
      const before = lsp.notifications.length;
      version++;
      lsp.change(uri, script(`# gpurun: gpus=${version % 2 ? 16 : 2} gpu-type=A100 time=2h`), version);
      await lsp.waitDiagnostics(uri, () => true, 5000, before);
    });
    const p = (xs: number[]) => `p50 ${fmt(percentile(xs, 50))}, p95 ${fmt(percentile(xs, 95))}`;
    const ratio = (xs: number[]) => `${(percentile(xs, 95) / percentile(base, 95)).toFixed(1)}× the baseline's p95`;
    console.log('  script: 5,000 lines, directive on line 1');
    report('completion of gpu-type values', `${p(comp)} (${ratio(comp)})`, 'p95 ≤ 50 ms', percentile(comp, 95) <= 50, p(base));
    report('diagnostics after an edit', `${p(diag)} (${ratio(diag)})`, 'p95 ≤ 50 ms', percentile(diag, 95) <= 50, p(base));

    // Pool change → completion: a GPU taken (submit), then given back (cancel), five times each.
    lsp.change(uri, script('# gpurun: gpus=2 gpu-type='), ++version);
    const change: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const job = await client.submit({ command: ['sleep', '60'], workspace: dir, gpus: 1 });
      while (!(await freeShown()).includes('7 of 8 free')) await new Promise((r) => setTimeout(r, 10));
      change.push(performance.now() - t0);
      const t1 = performance.now();
      await client.cancel(job.id);
      while (!(await freeShown()).includes('8 of 8 free')) await new Promise((r) => setTimeout(r, 10));
      change.push(performance.now() - t1);
    }
    report('pool change → completion shows it', `median ${fmt(percentile(change, 50))}, max ${fmt(Math.max(...change))} (10 changes)`, '≤ 2 s', Math.max(...change) <= 2000);
    const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${lsp.proc.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
    console.log(`  server RSS: ${rss.toFixed(0)} MiB`);
  } finally {
    await lsp.close();
    await client.close();
    await broker.stop();
    cleanup(dir);
  }
}
