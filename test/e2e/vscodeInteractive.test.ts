/**
 * Working in a job from a real VS Code (code-server's, in Chromium through Playwright) with the extension from its
 * .vsix and a real broker process (TCP, token, a local host with two stand-in GPUs): Open Terminal on GPU is a shell
 * in a job that runs what is typed and ends the job when closed; Open Terminal in Job is a shell in a running job; a
 * job that prints its web address gets an Open button that opens it in the browser through a forward.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import type { Job } from '../../server/protocol/jobs.ts';
import { cleanup, createToken, fakeNvidiaSmi, requirePart, scratch, startBrokerProcess, waitFor, type BrokerProc } from '../support/harness.ts';
import { RESULTS, missingVsCode, openFile, openSignedInWindow, runCommand, screenshot, waitForTerminal, type CodeServer } from './support/codeServer.ts';

describe('VS Code: terminals in jobs and forwarded ports, end to end (code-server + Chromium)', function () {
  this.timeout(180_000);
  let dir: string;
  let broker: BrokerProc;
  let token: string;
  let cs: CodeServer;
  let browser: Browser;
  let page: Page;
  let ws: string;
  const port = 18_000 + (process.pid % 2000);
  const debugPort = 21_000 + (process.pid % 2000);

  const api = async <T>(path: string, init: RequestInit = {}): Promise<T> => {
    const r = await fetch(`${broker.url}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } });
    return (await r.json()) as T;
  };
  const jobs = async () => (await api<{ jobs: Job[] }>('/v1/jobs?all=1')).jobs;
  const shot = (name: string) => screenshot(page, name);

  before(async function () {
    const missing = missingVsCode();
    requirePart(this, 'VS Code (code-server) and Chromium', !missing, missing ?? '');
    dir = scratch('gpurun-e2e-interactive-');
    ws = join(dir, 'project');
    mkdirSync(ws);
    writeFileSync(join(ws, 'index.html'), '<html><body><h1>hello from the job</h1></body></html>\n');
    writeFileSync(join(ws, 'dbg.py'), ['import os', '', 'def main():', '    answer = 6 * 7', '    print("the answer is", answer, flush=True)', '', 'if __name__ == "__main__":', '    main()', ''].join('\n'));
    // Debug on GPU with the interpreter that has debugpy (Debian's python3-debugpy for /usr/bin/python3, test/setup).
    mkdirSync(join(ws, '.vscode'));
    writeFileSync(join(ws, '.vscode', 'launch.json'), JSON.stringify({ version: '0.2.0', configurations: [{ type: 'gpurun', request: 'launch', name: 'Debug on GPU', program: '${workspaceFolder}/dbg.py', gpus: 1, python: '/usr/bin/python3', port: debugPort }] }, null, 2));
    const fakeBin = fakeNvidiaSmi(dir, [
      { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 },
      { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 },
    ]);
    // Jobs on the local host get the broker's HOME: one of the test's own, so bash reads no ~/.bashrc of this machine.
    const jobsHome = join(dir, 'jobs-home');
    mkdirSync(jobsHome);
    broker = await startBrokerProcess(join(dir, 'broker'), { hosts: [{ name: 'gpu-box', type: 'local', cpus: 8, memory: '16G' }] }, { PATH: `${fakeBin}:${process.env.PATH}`, HOME: jobsHome });
    token = await createToken(broker, 'alice');
    ({ cs, browser, page } = await openSignedInWindow(dir, { folder: ws, brokerUrl: broker.url, token }));
  });

  afterEach(async function () {
    if (this.currentTest?.state !== 'failed') return;
    if (page) await shot(`vscode-interactive-failed-${this.currentTest.title.replace(/\W+/g, '-').slice(0, 60)}.png`).catch(() => {});
    for (const j of await jobs().catch(() => [])) {
      if (['queued', 'starting', 'running'].includes(j.state)) await api(`/v1/jobs/${j.id}/cancel`, { method: 'POST' }).catch(() => {});
    }
  });

  after(async function () {
    await browser?.close().catch(() => {});
    await cs?.stop();
    await broker?.stop();
    if (dir) cleanup(dir);
  });

  it('Open Terminal on GPU: a shell in a job runs echo and shows its output; closing the terminal ends the job', async () => {
    await runCommand(page, 'GPU Run: Open Terminal on GPU');
    await waitForTerminal(page, /running on gpu-box \(GPU \d\)/);
    const job = await waitFor('the terminal job to run', async () => (await jobs()).find((j) => j.name === 'terminal' && j.state === 'running'));
    // The shell's prompt comes after the start line; what is typed then goes to the shell in the job.
    await waitForTerminal(page, /running on gpu-box[^\n]*\n.*[$#]\s*$/s, 30_000);
    await page.keyboard.type('echo from-the-gpu-$((6*7)) GPUs=$CUDA_VISIBLE_DEVICES job=$GPURUN_JOB_ID');
    await page.keyboard.press('Enter');
    await waitForTerminal(page, new RegExp(`^from-the-gpu-42 GPUs=\\d job=${job.id}$`, 'm'), 30_000);
    await shot('vscode-gpu-terminal.png');
    await runCommand(page, 'Terminal: Kill the Active Terminal Instance');
    const ended = await waitFor('the job to end', async () => (await jobs()).find((j) => j.id === job.id && ['cancelled', 'failed', 'succeeded'].includes(j.state)), 30_000);
    assert.equal(ended.state, 'cancelled');
    await page.locator('.monaco-list-row', { hasText: '2/2 GPUs free' }).waitFor({ timeout: 30_000 });
  });

  it('Open Terminal in Job: a shell in a running job; the job\'s printed address gets an Open button that opens it', async () => {
    const job = await api<Job>('/v1/jobs', { method: 'POST', body: JSON.stringify({ command: ['python3', '-u', '-m', 'http.server', '--bind', '127.0.0.1', String(port)], workspace: ws, gpus: 1, name: 'web' }) });
    await waitFor('the web job to run', async () => (await jobs()).find((j) => j.id === job.id && j.state === 'running'));
    await runCommand(page, 'GPU Run: Open Terminal in Job');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: job.id }).first().waitFor({ timeout: 15_000 });
    await page.keyboard.press('Enter');
    await waitForTerminal(page, /[$#]\s*$/, 30_000);
    await page.keyboard.type('echo in-job-$GPURUN_JOB_ID $(pwd)');
    await page.keyboard.press('Enter');
    await waitForTerminal(page, new RegExp(`^in-job-${job.id} ${ws}$`, 'm'), 30_000);

    // The job's output (its terminal) shows http.server's address: the extension offers to open it.
    await runCommand(page, 'GPU Run: Show Job Output');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: job.id }).first().waitFor({ timeout: 15_000 });
    await page.keyboard.press('Enter');
    await waitForTerminal(page, new RegExp(`http://127\\.0\\.0\\.1:${port}/`), 30_000);
    const toast = page.locator('.notification-toast', { hasText: `Job ${job.id} serves port ${port}` });
    await toast.waitFor({ timeout: 30_000 });
    await shot('vscode-open-port.png');
    const popup = page.context().waitForEvent('page', { timeout: 30_000 });
    await toast.locator('.monaco-button', { hasText: 'Open' }).click();
    // VS Code may ask before it opens an outside address: say Open there too.
    const ask = page.locator('.monaco-dialog-box .monaco-button', { hasText: /^Open$/ });
    void ask.waitFor({ timeout: 10_000 }).then(() => ask.click(), () => {});
    const opened = await popup;
    await opened.waitForLoadState('domcontentloaded');
    await opened.locator('h1', { hasText: 'hello from the job' }).waitFor({ timeout: 30_000 });
    assert.match(opened.url(), /^http:\/\/127\.0\.0\.1:\d+\//);
    await opened.close();
    await api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' });
  });

  it('Debug on GPU: F5 runs the script in a job under debugpy and stops at a breakpoint; the Variables view shows a local', async function () {
    requirePart(this, 'debugpy for /usr/bin/python3', spawnSync('/usr/bin/python3', ['-c', 'import debugpy']).status === 0, 'apt-get install python3-debugpy (test/setup/40-vscode.apt)');
    await openFile(page, 'dbg.py');
    // Quick Open's ":5" goes to line 5 (the print), F9 puts a breakpoint there.
    await page.keyboard.press('F1');
    await page.locator('.quick-input-widget input').fill(':5');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'go to line 5' }).first().waitFor({ timeout: 10_000 });
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-widget').waitFor({ state: 'hidden', timeout: 10_000 });
    await page.keyboard.press('F9');
    await page.locator('.codicon-debug-breakpoint').first().waitFor({ timeout: 10_000 });
    // Start Debugging is F5; the palette is used because the browser may take F5 for itself. It lists the launch
    // configurations: the time runs from picking "Debug on GPU" (what F5 starts).
    await runCommand(page, 'Debug: Select and Start Debugging');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Debug on GPU' }).first().waitFor({ timeout: 15_000 });
    const t0 = Date.now();
    await page.keyboard.press('Enter');
    await page.locator('.pane-header', { hasText: 'Paused on breakpoint' }).first().waitFor({ timeout: 120_000 });
    const ms = Date.now() - t0;
    // debugpy's scopes come collapsed: open Locals.
    await page.locator('.monaco-list-row', { hasText: /^Locals$/ }).first().click();
    await page.locator('.monaco-list-row', { hasText: /answer\s*[=:]\s*42/ }).first().waitFor({ timeout: 20_000 });
    const job = (await jobs()).find((j) => j.name === 'debug dbg.py')!;
    assert.equal(job.state, 'running');
    await page.locator('.debug-top-stack-frame-column, .debug-pane', { hasText: /dbg\.py/ }).first().waitFor({ timeout: 10_000 });
    await shot('vscode-debug.png');
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(join(RESULTS, 'debug-timing.txt'), `F5 to stopped at the first breakpoint: ${ms} ms\n`);
    console.log(`      F5 to stopped at the first breakpoint: ${ms} ms`);
    // Continue: the program finishes, the job succeeds with its output.
    await runCommand(page, 'Debug: Continue');
    const done = await waitFor('the debug job to end', async () => (await jobs()).find((j) => j.id === job.id && !['queued', 'starting', 'running'].includes(j.state)), 60_000);
    assert.equal(done.state, 'succeeded');
  });
});
