/**
 * End to end in a real VS Code (code-server + Chromium), with the local broker the extension starts itself: a job
 * whose GPU sits at 0 % (the nvidia-smi stand-in's reading) gets a warning icon in its row and one notification
 * after the window of gpurun.idleGpuWarning; Rerun with Changes runs a past job again with a changed variable, and its
 * terminal takes the place of the ended jobs' terminals (gpurun.reuseTerminals).
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { BrokerClient } from '../../server/protocol/client.ts';
import { embeddedSocket } from '../../server/protocol/paths.ts';
import type { Job } from '../../server/protocol/jobs.ts';
import { cleanup, fakeNvidiaSmi, requirePart, scratch, stopEmbedded, waitFor } from '../support/harness.ts';
import { answerInput, installExtension, launchBrowser, missingVsCode, openFile, openSidebar, openWorkbench, runCommand, screenshot, startCodeServer, waitForTerminal, type CodeServer } from './support/codeServer.ts';

describe('VS Code extension, end to end: idle GPUs and Rerun with Changes', function () {
  this.timeout(180_000);
  this.retries(1);
  let dir: string;
  let home: string;
  let ws: string;
  let cs: CodeServer;
  let browser: Browser;
  let page: Page;

  const jobs = async (): Promise<Job[]> => {
    const c = new BrokerClient({ address: `unix:${embeddedSocket(home)}` });
    try {
      return (await c.list({ all: true })) as Job[];
    } finally {
      await c.close();
    }
  };
  const shot = (name: string) => screenshot(page, name);

  before(async function () {
    const missing = missingVsCode();
    requirePart(this, 'VS Code (code-server) and Chromium', !missing, missing ?? '');
    dir = scratch('gpurun-e2e-daily-');
    home = join(dir, 'gpurun-home');
    ws = join(dir, 'project');
    mkdirSync(ws);
    writeFileSync(join(ws, 'stuck.py'), ['import time', 'print("waiting for data", flush=True)', 'time.sleep(300)', ''].join('\n'));
    writeFileSync(join(ws, 'greet.py'), ['import os', 'print("greeting=" + os.environ.get("GREETING", "unset"), flush=True)', ''].join('\n'));
    // One A100 that always reads 0 %.
    const fakeBin = fakeNvidiaSmi(dir, [{ name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 }]);
    // The local broker the extension starts gets the environment VS Code reads from a login shell (PATH set by
    // /etc/profile): the stand-in goes on PATH in that shell's profile, in the test's own home (startCodeServer's).
    mkdirSync(join(dir, 'home'), { recursive: true });
    writeFileSync(join(dir, 'home', '.profile'), `export PATH='${fakeBin}':"$PATH"\n`);
    const extDir = join(dir, 'extensions');
    mkdirSync(extDir);
    installExtension(dir, extDir);
    cs = await startCodeServer(dir, { folder: ws, extDir, settings: { 'gpurun.idleGpuWarning': '5s' }, env: { GPURUN_HOME: home, PATH: `${fakeBin}:${process.env.PATH}` } });
    browser = await launchBrowser();
    page = await openWorkbench(browser, cs, ws);
  });

  afterEach(async function () {
    if (this.currentTest?.state !== 'failed') return;
    if (page) await shot(`vscode-failed-daily-${this.currentTest.title.replace(/\W+/g, '-').slice(0, 50)}.png`).catch(() => {});
    // A failed try must not leave its job running into the next (its terminal could not be reused).
    const c = new BrokerClient({ address: `unix:${embeddedSocket(home)}` });
    for (const j of await jobs().catch(() => [])) if (j.state === 'running' || j.state === 'queued') await c.cancel(j.id).catch(() => {});
    await c.close();
  });

  after(async function () {
    await browser?.close().catch(() => {});
    await cs?.stop();
    if (home) await stopEmbedded(home);
    if (dir) cleanup(dir);
  });

  it("warns once when a running job's GPU sits at 0 % for the window: a warning icon in its row, and a notification", async () => {
    await openSidebar(page);
    await openFile(page, 'stuck.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    await waitForTerminal(page, /waiting for data/);
    const job = await waitFor('the job to run', async () => (await jobs()).find((j) => j.command.includes('stuck.py') && j.state === 'running'));
    const toast = page.locator('.notifications-toasts .notification-toast', { hasText: `job ${job.id} stuck.py has had its GPU at 0 %` });
    await toast.waitFor({ timeout: 90_000 });
    assert.match(await toast.innerText(), /a data-loading bottleneck, or a hung job\?/);
    assert.deepEqual((await toast.locator('.monaco-button').allInnerTexts()).slice(0, 1), ['Show Output']);
    const row = page.locator(`.monaco-list-row[aria-label*="${job.id} stuck.py"]`).first();
    await row.locator('.label-description', { hasText: /GPUs idle (<1m|\d+m)/ }).waitFor({ timeout: 30_000 });
    assert.equal(await row.locator('.codicon-warning').count(), 1, 'the row has the warning icon');
    await shot('vscode-idle-gpu.png');
    // Once per job: later refreshes (every 15 s while a GPU is held) do not raise it again.
    await runCommand(page, 'Notifications: Clear All Notifications');
    await page.waitForTimeout(20_000);
    assert.equal(await toast.count(), 0, 'no second notification');
    const c = new BrokerClient({ address: `unix:${embeddedSocket(home)}` });
    await c.cancel(job.id).finally(() => c.close());
  });

  it('Rerun with Changes runs a past job again with what was changed (here a variable)', async () => {
    await openFile(page, 'greet.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    await waitForTerminal(page, /greeting=unset[\s\S]*succeeded/);
    const first = await waitFor('the job to end', async () => (await jobs()).find((j) => j.command.includes('greet.py') && j.state === 'succeeded'));
    await runCommand(page, 'GPU Run: Rerun with Changes…');
    await page.locator('.quick-input-widget:has(input[placeholder="Job to run again with changes"])').waitFor({ state: 'visible', timeout: 15_000 });
    await page.locator('.quick-input-widget input').fill(first.id);
    await page.keyboard.press('Enter');
    await answerInput(page, `Rerun ${first.id} with changes`, 'Env:');
    await answerInput(page, 'with changes: env', 'GREETING=changed');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'GREETING=changed' }).first().waitFor({ timeout: 15_000 });
    await answerInput(page, `Rerun ${first.id} with changes`, 'Run');
    await waitForTerminal(page, /greeting=changed[\s\S]*succeeded/);
    const again = (await jobs()).filter((j) => j.command.includes('greet.py')).sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    assert.notEqual(again.id, first.id);
    assert.deepEqual(again.command, first.command);
    // gpurun.reuseTerminals (on by default): each new job's terminal took the place of the ended jobs' terminals, so
    // one gpurun terminal is left of the three jobs (Terminal: Switch Active Terminal lists them).
    await page.keyboard.press('F1');
    await page.locator('.quick-input-widget input').fill('term ');
    await page.locator('.quick-input-list .monaco-list-row').first().waitFor({ timeout: 10_000 });
    const terminals = (await page.locator('.quick-input-list .monaco-list-row').allInnerTexts()).filter((t) => t.includes('gpurun:'));
    await page.keyboard.press('Escape');
    assert.equal(terminals.length, 1, terminals.join(' | '));
    assert.match(terminals[0], new RegExp(`gpurun: ${again.id} greet\\.py`));
  });
});
