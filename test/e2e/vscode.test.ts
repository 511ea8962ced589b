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
import { answerInput, installExtension, openSidebar, launchBrowser, missingVsCode, openFile, openWorkbench, runCommand, screenshot, signIn, startCodeServer, waitForTerminal, type CodeServer } from './support/codeServer.ts';

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
  const shot = (name: string) => screenshot(page, name);

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
    writeFileSync(join(ws, 'fails.py'), ['import sys, time', 'print("loading data", flush=True)', 'time.sleep(5)', 'print("ValueError: bad batch", flush=True)', 'sys.exit(3)', ''].join('\n'));
    writeFileSync(join(ws, 'long.py'), ['import time', 'print("long job started", flush=True)', 'time.sleep(600)', ''].join('\n'));

    // The stand-in reports changing utilisation and memory, probe by probe (the GPU usage view shows them).
    const usage = [10, 35, 60, 85, 95, 70, 90, 100].map((pct, k) => ({ pct, usedMiB: 8192 + k * 4096 }));
    const fakeBin = fakeNvidiaSmi(dir, [
      { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920, usage },
      { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920, usage: [...usage].reverse() },
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
    if (this.currentTest?.state !== 'failed') return;
    if (page) await shot(`vscode-failed-${this.currentTest.title.replace(/\W+/g, '-').slice(0, 60)}.png`).catch(() => {});
    // What the extension did and what the broker holds, for a failure seen only in CI.
    console.log(`      the extension's log (last lines):\n${cs?.extensionLog()}\n      the broker's jobs: ${JSON.stringify((await jobs().catch(() => [])).map((j) => [j.id, j.command.join(' '), j.state, j.reason]))}`);
    // A failed test must not leave jobs holding the GPUs for the tests after it.
    for (const j of await jobs().catch(() => [])) {
      if (['queued', 'starting', 'running'].includes(j.state)) await fetch(`${broker.url}/v1/jobs/${j.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${token}` } }).catch(() => {});
    }
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
    await signIn(page, broker.url, token);
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
    // VS Code rebuilds a row's buttons when it redraws the row, and a click pressed on one build and released on the
    // next is lost: the row stays as it is (two of the view's 5 s ticks here) unless what it shows changed.
    const cancel = row.locator('.action-label[aria-label="Cancel Job"]');
    const button = await cancel.elementHandle();
    const shown = await row.locator('.label-description').innerText();
    await page.waitForTimeout(11_000);
    if (!(await button!.evaluate((e) => e.isConnected))) assert.notEqual(await row.locator('.label-description').innerText(), shown, 'the row was redrawn though nothing it shows changed');
    await row.hover();
    await cancel.click();
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
    await answerInput(page, 'Run on GPU (1/5)', 'train.py');
    await page.locator('.quick-input-widget', { hasText: 'Run on GPU (2/5)' }).waitFor({ timeout: 15_000 });
    await page.locator('.quick-input-list .monaco-list-row', { hasText: '2 of 2 A100 free now' }).first().waitFor();
    await answerInput(page, 'Run on GPU (2/5)', '2×A100');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'offline' }).first().waitFor({ timeout: 15_000 });
    await answerInput(page, 'Run on GPU (3/5)', 'offline');
    // A bare number is minutes, as in Slurm.
    await answerInput(page, 'Run on GPU (4/5)', '5');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Memory:' }).first().waitFor({ timeout: 15_000 });
    await answerInput(page, 'Run on GPU (5/5)', 'Run');
    await waitForTerminal(page, /running on gpu-box, GPU (0,1|1,0) \(2×A100, 1 CPU, 1G, limit 5m\)[\s\S]*succeeded \(exit code 0\)/);
    const job = (await jobs()).filter((j) => j.command.includes('train.py')).sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    assert.equal(job.resources.gpus, 2);
    assert.equal(job.resources.gpuType, 'A100');
    assert.equal(job.resources.timeLimitSec, 300);
    assert.equal(job.queue, 'offline');
    assert.equal(job.state, 'succeeded');
  });

  it('Run on GPU… runs a command typed into its first box', async () => {
    await runCommand(page, 'GPU Run: Run on GPU…');
    await answerInput(page, 'Run on GPU (1/5)', 'python3 -c "print(6*7)"');
    await answerInput(page, 'Run on GPU (2/5)', 'No GPU');
    await answerInput(page, 'Run on GPU (3/5)', 'online');
    await answerInput(page, 'Run on GPU (4/5)', '');
    await answerInput(page, 'Run on GPU (5/5)', 'Run');
    await waitForTerminal(page, /\n42\n[\s\S]*succeeded \(exit code 0\)/);
    const job = (await jobs()).sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    assert.deepEqual(job.command, ['python3', '-c', 'print(6*7)']);
  });

  it('a second click on Cancel hits the same row: the next job does not move under the pointer', async () => {
    await openFile(page, 'long.py');
    // Two jobs of long.py, one after the other: a command typed into the palette while it still closes from the
    // first can be lost on a loaded machine, so each run is seen submitted (and typed again if not) before the next.
    const before = (await jobs()).filter((j) => j.command.includes('long.py')).length;
    for (let i = 1; i <= 2; i++) {
      for (let tries = 0; tries < 3; tries++) {
        await runCommand(page, 'GPU Run: Run Current File on GPU');
        const seen = await waitFor(`long.py job ${i} submitted`, async () => (await jobs()).filter((j) => j.command.includes('long.py')).length >= before + i, 10_000).catch(() => false);
        if (seen) break;
      }
    }
    const [a, b] = await waitFor('two long jobs to run', async () => {
      const r = (await jobs()).filter((j) => j.command.includes('long.py') && j.state === 'running').sort((x, y) => (x.startedAt ?? '').localeCompare(y.startedAt ?? ''));
      return r.length === 2 && r;
    });
    const row = jobRow(`${a.id} long.py, running`);
    await row.waitFor({ timeout: 15_000 });
    try {
      // The tree redraws now and then (elapsed times, GPU usage): hover until the inline button is there to measure.
      let box: { x: number; y: number; width: number; height: number } | null = null;
      for (let i = 0; i < 10 && !box; i++) {
        await row.hover();
        box = await row.locator('.action-label[aria-label="Cancel Job"]').boundingBox({ timeout: 2000 }).catch(() => null);
      }
      assert.ok(box, 'the inline Cancel button shows on hover');
      await secondClickOnCancel(box, a, b);
    } finally {
      // Whatever happened, the two long jobs must not hold the GPUs for the tests after this one.
      for (const j of [a, b]) await fetch(`${broker.url}/v1/jobs/${j.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${token}` } }).catch(() => {});
    }
  });

  async function secondClickOnCancel(box: { x: number; y: number; width: number; height: number }, a: Job, b: Job): Promise<void> {
    await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
    await page.waitForTimeout(700);
    // The same place again, as an impatient double click would.
    await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
    await waitFor('the first job to be cancelled', async () => (await jobs()).find((j) => j.id === a.id)!.state === 'cancelled');
    await page.waitForTimeout(1500);
    assert.equal((await jobs()).find((j) => j.id === b.id)!.state, 'running', 'the job below was not cancelled by the second click');
    await jobRow(`${b.id} long.py, running`).waitFor({ timeout: 10_000 });
    await jobRow(`${b.id} long.py, running`).hover();
    await jobRow(`${b.id} long.py, running`).locator('.action-label[aria-label="Cancel Job"]').click();
    // A click that lands while the tree redraws reaches the command without its row; the command then asks which job
    // (as it does from the palette): answer it.
    const picker = page.locator('.quick-input-widget:has(input[placeholder="Job to cancel"])');
    if (await picker.waitFor({ state: 'visible', timeout: 2000 }).then(() => true, () => false)) await picker.locator('.monaco-list-row', { hasText: b.id }).first().click();
    await waitFor('the second job to be cancelled', async () => (await jobs()).find((j) => j.id === b.id)!.state === 'cancelled');
  }

  it('shows what a running job\'s GPUs do: utilisation and a bar per probe in its row, per GPU in its tooltip and the Hosts view', async () => {
    await openFile(page, 'long.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    const job = await waitFor('the long job to run', async () => (await jobs()).find((j) => j.command.includes('long.py') && j.state === 'running'));
    const row = jobRow(`${job.id} long.py, running`);
    // Two probes (30 s apart) make a history of two bars.
    await page.locator(`.monaco-list-row[aria-label*="${job.id} long.py"] .label-description`, { hasText: /\d+% [▁▂▃▄▅▆▇█]{2,}/ }).first().waitFor({ timeout: 90_000 });
    await page.locator('.monaco-list-row', { hasText: /GPU \d NVIDIA A100-SXM4-80GB/ }).filter({ hasText: `used by ${job.id}` }).first().waitFor({ timeout: 30_000 });
    await row.hover();
    await page.locator('.monaco-hover', { hasText: 'GPU usage' }).waitFor({ timeout: 10_000 }).catch(() => {});
    await shot('vscode-gpu-usage.png');
    await fetch(`${broker.url}/v1/jobs/${job.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    await waitFor('the long job to be cancelled', async () => (await jobs()).find((j) => j.id === job.id)!.state === 'cancelled');
  });

  it('a job that ends while its terminal is not in view raises a notification with its state, last lines, Show Output and Rerun', async () => {
    await runCommand(page, 'Notifications: Clear All Notifications');
    await openFile(page, 'fails.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    await waitForTerminal(page, /loading data/);
    // Another job's terminal takes the view while fails.py still runs.
    await openFile(page, 'long.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    await waitForTerminal(page, /long job started/);
    const toast = page.locator('.notifications-toasts .notification-toast', { hasText: /fails\.py failed \(exit 3\)/ });
    await toast.waitFor({ timeout: 30_000 });
    assert.match(await toast.innerText(), /ValueError: bad batch/);
    assert.deepEqual((await toast.locator('.monaco-button').allInnerTexts()).slice(0, 2), ['Show Output', 'Rerun']);
    await shot('vscode-notification.png');
    await toast.locator('.monaco-button', { hasText: 'Show Output' }).click();
    await waitForTerminal(page, /ValueError: bad batch[\s\S]*exit code 3/);
    const long = (await jobs()).find((j) => j.command.includes('long.py') && j.state === 'running');
    if (long) await fetch(`${broker.url}/v1/jobs/${long.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
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
    // Under load the picker can take seconds: wait for it or for the terminal, whichever comes.
    const picker = page.locator('.quick-input-widget', { hasText: 'Job whose output to show' });
    const opened = page.locator('.terminal-wrapper.active .xterm-rows', { hasText: `job ${job.id}: python3 long.py` });
    const first = await Promise.race([
      picker.waitFor({ state: 'visible', timeout: 15_000 }).then(() => 'picker', () => 'none'),
      opened.waitFor({ timeout: 15_000 }).then(() => 'terminal', () => 'none'),
    ]);
    if (first === 'picker') await picker.locator('.monaco-list-row', { hasText: job.id }).first().click();
    await waitForTerminal(page, new RegExp(`job ${job.id}: python3 long\\.py[\\s\\S]*long job started`));
    // A job-end notification must not sit over the terminal.
    await runCommand(page, 'Notifications: Clear All Notifications');
    await page.locator('.terminal-wrapper.active .xterm').click();
    await page.keyboard.press('Control+C');
    const ask = page.locator('.quick-input-widget', { hasText: `Stop job ${job.id}` });
    await ask.waitFor({ state: 'visible', timeout: 10_000 });
    // The choices say what they do; the first, what Enter picks, keeps the job. Each row shows a label (after its
    // icon) and, beside it, a description: both are read as shown, in the order shown.
    const choices = await ask.locator('.quick-input-list .monaco-list-row').evaluateAll((rows) =>
      rows.map((r) => [r.querySelector('.label-name'), r.querySelector('.label-description')].map((e) => (e?.textContent ?? '').replace(/\s+/g, ' ').trim())),
    );
    assert.deepEqual(choices, [
      ['Keep it running', 'closing this terminal also leaves the job running'],
      ['Stop the job', `cancel ${job.id}: its processes are stopped`],
    ]);
    const focused = await ask.locator('.quick-input-list .monaco-list-row').evaluateAll((rows) => rows.findIndex((r) => r.classList.contains('focused')));
    assert.equal(focused, 0, 'Enter picks the first choice (Keep it running)');
    await shot('vscode-ctrl-c.png');
    await page.keyboard.press('Enter');
    await ask.waitFor({ state: 'hidden', timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await jobs()).find((j) => j.id === job.id)!.state, 'running', 'Enter keeps it running');
    await runCommand(page, 'Notifications: Clear All Notifications');
    await page.locator('.terminal-wrapper.active .xterm').click();
    await page.keyboard.press('Control+C');
    await ask.waitFor({ state: 'visible', timeout: 10_000 });
    await ask.locator('.quick-input-list .monaco-list-row', { hasText: 'Stop the job' }).click();
    await waitForTerminal(page, new RegExp(`job ${job.id} cancelled`));
    assert.equal((await jobs()).find((j) => j.id === job.id)!.state, 'cancelled');
  });
});
