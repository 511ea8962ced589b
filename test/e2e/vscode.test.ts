/**
 * End to end in a real VS Code (code-server's, in Chromium through Playwright) with the extension installed from
 * its .vsix and a real broker process (TCP, token, two stand-in A100s). What is checked is what a person sees: the
 * terminal's text, the sidebar's rows, the lens's title, and the jobs' states at the broker.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import type { Job } from '../../server/protocol/jobs.ts';
import { cleanup, createToken, fakeNvidiaSmi, requirePart, scratch, startBrokerProcess, waitFor, type BrokerProc } from '../support/harness.ts';
import { answerInput, installExtension, openSidebar, launchBrowser, missingVsCode, openFile, openWorkbench, RESULTS, runCommand, startCodeServer, waitForTerminal, type CodeServer } from './support/codeServer.ts';

describe('VS Code extension, end to end (code-server + Chromium)', function () {
  this.timeout(180_000);
  let dir: string;
  let broker: BrokerProc;
  let token: string;
  let cs: CodeServer;
  let browser: Browser;
  let page: Page;
  let ws: string;

  const api = async <T>(path: string): Promise<T> => {
    const r = await fetch(`${broker.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
    return (await r.json()) as T;
  };
  const jobs = async () => (await api<{ jobs: Job[] }>('/v1/jobs?all=1')).jobs;
  const jobRow = (text: string) => page.locator(`.monaco-list-row[aria-label*="${text}"]`).first();
  const shot = async (name: string) => {
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: join(RESULTS, name) });
  };

  before(async function () {
    const missing = missingVsCode();
    requirePart(this, 'VS Code (code-server) and Chromium', !missing, missing ?? '');
    dir = scratch('gpurun-e2e-');
    ws = join(dir, 'project');
    mkdirSync(ws);
    writeFileSync(
      join(ws, 'train.py'),
      [
        'import os, time',
        '',
        'def main():',
        '    for epoch in range(1, 4):',
        '        print(f"epoch {epoch} loss {1.0 / epoch:.3f}", flush=True)',
        '        time.sleep(0.3)',
        '    print("CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", ""), flush=True)',
        '',
        'if __name__ == "__main__":',
        '    main()',
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(ws, 'big.py'),
      ['# gpurun: gpus=2 gpu-type=A100 queue=offline', 'import os', 'print("big job sees GPUs " + os.environ["CUDA_VISIBLE_DEVICES"], flush=True)', ''].join('\n'),
    );
    writeFileSync(join(ws, 'bad.py'), ['# gpurun: gpus=two queue=offline', 'print("never runs")', ''].join('\n'));
    writeFileSync(join(ws, 'long.py'), ['import time', 'print("long job started", flush=True)', 'time.sleep(600)', ''].join('\n'));

    const fakeBin = fakeNvidiaSmi(dir, [
      { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 },
      { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 },
    ]);
    broker = await startBrokerProcess(join(dir, 'broker'), { hosts: [{ name: 'gpu-box', type: 'local', cpus: 8, memory: '16G' }] }, { PATH: `${fakeBin}:${process.env.PATH}` });
    token = await createToken(broker, 'alice');

    const extDir = join(dir, 'extensions');
    mkdirSync(extDir);
    installExtension(dir, extDir);
    cs = await startCodeServer(dir, { folder: ws, extDir, settings: { 'gpurun.brokerUrl': broker.url }, env: { GPURUN_HOME: join(dir, 'gpurun-home') } });
    browser = await launchBrowser();
    page = await openWorkbench(browser, cs, ws);
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && page) await shot(`vscode-failed-${this.currentTest.title.replace(/\W+/g, '-').slice(0, 60)}.png`).catch(() => {});
  });

  after(async function () {
    await browser?.close().catch(() => {});
    await cs?.stop();
    await broker?.stop();
    if (dir) cleanup(dir);
  });

  it('signs in: the token is asked once and the sidebar connects', async () => {
    // The broker URL is in the settings; without a token the broker refuses, and the sidebar says so.
    await openSidebar(page);
    await page.locator('.monaco-list-row', { hasText: 'Not signed in' }).waitFor({ timeout: 30_000 });
    await runCommand(page, 'GPU Run: Sign In');
    await answerInput(page, 'Sign In (1/2)', broker.url);
    await answerInput(page, 'Sign In (2/2)', token);
    await page.locator('.notifications-toasts', { hasText: 'signed in' }).waitFor({ timeout: 30_000 });
    await page.locator('.monaco-list-row', { hasText: 'Not signed in' }).waitFor({ state: 'detached', timeout: 30_000 });
    await runCommand(page, 'Notifications: Clear All Notifications');
  });

  it('runs the current file from the command palette: output lines and exit code in the terminal, succeeded in the sidebar', async () => {
    await openFile(page, 'train.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    const text = await waitForTerminal(page, /succeeded \(exit code 0\)/);
    assert.match(text, /running on gpu-box, GPU \d/);
    assert.match(text, /epoch 1 loss 1\.000\n.*epoch 2 loss 0\.500\n.*epoch 3 loss 0\.333/s);
    const job = (await jobs()).find((j) => j.command.includes('train.py'));
    assert.ok(job, 'the broker has the job');
    assert.equal(job.state, 'succeeded');
    // The terminal's name is in the panel (its title, or its tab once there are several terminals).
    await page.locator('.part.panel', { hasText: `gpurun: ${job.id} train.py` }).first().waitFor({ timeout: 10_000 });
    await jobRow(`${job.id} train.py, succeeded`).waitFor({ timeout: 10_000 });
    await shot('vscode-terminal.png');
  });

  it('cancels a long job from the sidebar: it ends cancelled, and a job queued behind it starts', async () => {
    await openFile(page, 'long.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    await waitForTerminal(page, /long job started/);
    const long = await waitFor('the long job to run', async () => (await jobs()).find((j) => j.command.includes('long.py') && j.state === 'running'));

    // big.py asks for both GPUs (its directive): it waits behind long.py, and its terminal says where it stands.
    await openFile(page, 'big.py');
    const lens = page.locator('.contentWidgets .codelens-decoration a', { hasText: '▶ Run on GPU (2×A100, offline' });
    await lens.waitFor({ timeout: 30_000 });
    await shot('vscode-codelens.png');
    await lens.click();
    await waitForTerminal(page, /queued \(position 1 in offline\)/);
    const big = await waitFor('the big job to be queued', async () => (await jobs()).find((j) => j.command.includes('big.py') && j.state === 'queued'));
    await jobRow(`${big.id} big.py, queued`).waitFor({ timeout: 10_000 });
    await page.locator('.statusbar-item', { hasText: '1 running, 1 queued' }).waitFor({ timeout: 10_000 });

    const row = jobRow(`${long.id} long.py, running`);
    await row.waitFor({ timeout: 10_000 });
    await row.hover();
    await shot('vscode-sidebar-jobs.png');
    await row.locator('.action-label[aria-label="Cancel Job"]').click();
    await jobRow(`${long.id} long.py, cancelled`).waitFor({ timeout: 30_000 });
    assert.equal((await jobs()).find((j) => j.id === long.id)!.state, 'cancelled');
  });

  it("the CodeLens job gets the directive's resources (2×A100, offline) and its terminal shows them", async () => {
    const big = (await jobs()).find((j) => j.command.includes('big.py'))!;
    const text = await waitForTerminal(page, /big job sees GPUs [\d,]+[\s\S]*succeeded/);
    assert.match(text, /queued \(position 1 in offline\)/);
    assert.match(text, /running on gpu-box, GPU (0,1|1,0) \(2×A100/);
    assert.match(text, /big job sees GPUs (0,1|1,0)/);
    const job = (await jobs()).find((j) => j.id === big.id)!;
    assert.equal(job.resources.gpus, 2);
    assert.equal(job.resources.gpuType, 'A100');
    assert.equal(job.queue, 'offline');
    assert.deepEqual([...job.gpuIndices].sort(), [0, 1]);
    assert.equal(job.state, 'succeeded');
    await jobRow(`${big.id} big.py, succeeded`).waitFor({ timeout: 10_000 });
    // The hosts view follows the events too: both GPUs free again.
    await page.locator('.monaco-list-row', { hasText: '2/2 GPUs free' }).waitFor({ timeout: 10_000 });
    await page.mouse.move(700, 300);
    await shot('vscode-sidebar.png');
  });

  it('Run on GPU… offers the pool\'s GPUs and submits the picked GPUs, queue and time limit', async () => {
    await runCommand(page, 'GPU Run: Run on GPU…');
    await answerInput(page, 'Run on GPU (1/4)', 'train.py');
    await page.locator('.quick-input-widget', { hasText: 'Run on GPU (2/4)' }).waitFor({ timeout: 15_000 });
    await page.locator('.quick-input-list .monaco-list-row', { hasText: '2 of 2 A100 free now' }).first().waitFor();
    await answerInput(page, 'Run on GPU (2/4)', '2×A100');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'offline' }).first().waitFor({ timeout: 15_000 });
    await answerInput(page, 'Run on GPU (3/4)', 'offline');
    await answerInput(page, 'Run on GPU (4/4)', '5m');
    await waitForTerminal(page, /running on gpu-box, GPU (0,1|1,0) \(2×A100, 1 CPU, 1G, limit 5m\)[\s\S]*succeeded \(exit code 0\)/);
    const job = (await jobs()).filter((j) => j.command.includes('train.py')).sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    assert.equal(job.resources.gpus, 2);
    assert.equal(job.resources.gpuType, 'A100');
    assert.equal(job.resources.timeLimitSec, 300);
    assert.equal(job.queue, 'offline');
    assert.equal(job.state, 'succeeded');
  });

  it("a malformed directive shows the parser's message as a problem, and its lens says to fix it", async () => {
    await openFile(page, 'bad.py');
    await page.locator('.contentWidgets .codelens-decoration a', { hasText: 'fix the # gpurun: line first' }).waitFor({ timeout: 30_000 });
    await runCommand(page, 'View: Focus Problems');
    await page.locator('.markers-panel .monaco-list-row', { hasText: 'gpus: must be a whole number, got "two"' }).waitFor({ timeout: 15_000 });
    await shot('vscode-diagnostic.png');
  });

  it('closing a job\'s terminal leaves the job running; Show Job Output replays it; Ctrl+C asks, then cancels', async () => {
    await openFile(page, 'long.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    await waitForTerminal(page, /long job started/);
    const job = await waitFor('the long job to run', async () => (await jobs()).filter((j) => j.command.includes('long.py') && j.state === 'running').pop());
    await runCommand(page, 'Terminal: Kill the Active Terminal Instance');
    await page.locator('.part.panel', { hasText: `gpurun: ${job.id} long.py` }).waitFor({ state: 'detached', timeout: 10_000 }).catch(() => {});
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await jobs()).find((j) => j.id === job.id)!.state, 'running', 'closing the terminal does not cancel the job');

    const row = jobRow(`${job.id} long.py, running`);
    await row.hover();
    await row.locator('.action-label[aria-label="Show Job Output"]').click();
    // The tree redraws elapsed times every few seconds; a click that lands during a redraw reaches the command
    // without its row, and the command then asks which job (as it does from the palette): answer it.
    const picker = page.locator('.quick-input-widget', { hasText: 'Job whose output to show' });
    if (await picker.waitFor({ state: 'visible', timeout: 2000 }).then(() => true, () => false)) {
      await picker.locator('.monaco-list-row', { hasText: job.id }).first().click();
    }
    await waitForTerminal(page, new RegExp(`job ${job.id}: python3 long\\.py[\\s\\S]*long job started`));
    await page.locator('.terminal-wrapper.active .xterm').click();
    await page.keyboard.press('Control+C');
    const dialog = page.locator('.monaco-dialog-box', { hasText: `Cancel job ${job.id}?` });
    await dialog.waitFor({ timeout: 10_000 });
    await dialog.locator('.monaco-button', { hasText: 'Cancel Job' }).click();
    await waitForTerminal(page, new RegExp(`job ${job.id} cancelled`));
    assert.equal((await jobs()).find((j) => j.id === job.id)!.state, 'cancelled');
  });
});
