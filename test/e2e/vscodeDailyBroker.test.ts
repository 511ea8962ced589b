/**
 * End to end in a real VS Code (code-server + Chromium) against a team broker process (TCP, token, a local host):
 * when the broker goes away the editor shows one notification in its own words (the setting gpurun.brokerUrl, not
 * the CLI's GPURUN_BROKER or --broker), which closes by itself once the extension has reconnected; GPU Run: Cache
 * shows the size of your cache on each host and clears it; jobs get the variables of gpurun.env and gpurun.envFile;
 * a gpurun.json configuration runs from Run on GPU…; Filter Jobs… and Clear Finished Jobs choose the rows.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Browser, Page } from 'playwright-core';
import type { Job } from '../../server/protocol/jobs.ts';
import type { UserCacheInfo } from '../../server/protocol/cache.ts';
import { cleanup, createToken, fakeNvidiaSmi, requirePart, restartBroker, scratch, startBrokerProcess, type BrokerProc } from '../support/harness.ts';
import { answerInput, missingVsCode, openFile, openSidebar, openSignedInWindow, runCommand, screenshot, waitForTerminal, type CodeServer } from './support/codeServer.ts';

describe('VS Code extension, end to end: broker connection, cache, env settings, run configurations, job filter', function () {
  this.timeout(240_000);
  let dir: string;
  let broker: BrokerProc;
  let brokerEnv: NodeJS.ProcessEnv;
  let token: string;
  let cs: CodeServer;
  let browser: Browser;
  let page: Page;
  let ws: string;

  const api = async <T,>(path: string, init: RequestInit = {}): Promise<T> => {
    const r = await fetch(`${broker.url}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } });
    return (await r.json()) as T;
  };
  const jobs = async () => (await api<{ jobs: Job[] }>('/v1/jobs?all=1')).jobs;
  const jobRow = (text: string) => page.locator(`.monaco-list-row[aria-label*="${text}"]`).first();
  const shot = (name: string) => screenshot(page, name);
  /** The notifications on screen (toasts) and in the notification centre that speak of reaching the broker. */
  const brokerToasts = () => page.locator('.notifications-toasts .notification-toast', { hasText: 'cannot reach the broker' });

  before(async function () {
    const missing = missingVsCode();
    requirePart(this, 'VS Code (code-server) and Chromium', !missing, missing ?? '');
    dir = scratch('gpurun-e2e-broker-');
    ws = join(dir, 'project');
    mkdirSync(ws);
    writeFileSync(join(ws, 'hello.py'), ['print("hello from the job", flush=True)', ''].join('\n'));
    // Writes 3 MiB into the job's cache, as a model download would (XDG_CACHE_HOME and HF_HOME point into it).
    writeFileSync(
      join(ws, 'download.py'),
      ['import os', 'd = os.path.join(os.environ["HF_HOME"], "hub")', 'os.makedirs(d, exist_ok=True)', 'open(os.path.join(d, "model.bin"), "wb").write(b"x" * 3 * 1024 * 1024)', 'print("cached in " + os.environ["XDG_CACHE_HOME"], flush=True)', ''].join('\n'),
    );
    writeFileSync(join(ws, 'envcheck.py'), ['import os', 'print("greeting=" + os.environ.get("GREETING", "unset") + " file=" + os.environ.get("FROM_FILE", "unset"), flush=True)', ''].join('\n'));
    writeFileSync(join(ws, '.env'), '# variables for every job run from the editor\nGREETING=from-file\nFROM_FILE=yes\n');
    writeFileSync(join(ws, 'gpurun.json'), JSON.stringify({ configs: { smoke: { command: ['python3', '-c', 'print("config smoke ran", flush=True)'], gpus: 0, memory: '256M' } } }));
    const fakeBin = fakeNvidiaSmi(dir, [{ name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 }]);
    brokerEnv = { PATH: `${fakeBin}:${process.env.PATH}` };
    broker = await startBrokerProcess(join(dir, 'broker'), { hosts: [{ name: 'gpu-box', type: 'local', cpus: 4, memory: '8G' }] }, brokerEnv);
    token = await createToken(broker, 'alice');
    ({ cs, browser, page } = await openSignedInWindow(dir, { folder: ws, brokerUrl: broker.url, token, settings: { 'gpurun.env': { GREETING: 'from-settings' }, 'gpurun.envFile': '.env' } }));
  });

  afterEach(async function () {
    if (this.currentTest?.state !== 'failed') return;
    if (page) await shot(`vscode-failed-broker-${this.currentTest.title.replace(/\W+/g, '-').slice(0, 50)}.png`).catch(() => {});
    // A test that failed with the broker stopped leaves it stopped: the next one needs it.
    if (broker.proc.exitCode !== null || broker.proc.signalCode !== null) broker = await restartBroker(broker, brokerEnv);
  });

  after(async function () {
    await browser?.close().catch(() => {});
    await cs?.stop();
    await broker?.stop();
    if (dir) cleanup(dir);
  });

  it('a broker that cannot be reached: one notification naming gpurun.brokerUrl, which closes when the extension has reconnected', async () => {
    await openFile(page, 'hello.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    await waitForTerminal(page, /hello from the job[\s\S]*succeeded/);
    const first = (await jobs()).find((j) => j.command.includes('hello.py'))!;
    await jobRow(`${first.id} hello.py, succeeded`).waitFor({ timeout: 15_000 });
    await runCommand(page, 'Notifications: Clear All Notifications');

    await broker.stop();
    const toast = brokerToasts();
    await toast.first().waitFor({ timeout: 60_000 });
    const text = await toast.first().innerText();
    assert.match(text, /gpurun\.brokerUrl/, text);
    assert.doesNotMatch(text, /GPURUN_BROKER|--broker/, text);
    // The setting is named in the part of the line a collapsed notification shows (about 55 characters).
    assert.ok(text.indexOf('gpurun.brokerUrl') < 45, text);
    await shot('vscode-broker-unreachable.png');
    // The extension keeps retrying (its backoff grows to 10 s) and the views keep asking: still one notification.
    for (let t = 0; t < 25; t++) {
      assert.equal(await toast.count(), 1, `one notification about the broker at ${t} s`);
      await sleep(1000);
    }

    broker = await restartBroker(broker, brokerEnv);
    // Reconnected by itself (no command, no reload): the notification goes from the screen, and none is left in
    // the notification centre.
    await toast.first().waitFor({ state: 'detached', timeout: 30_000 });
    await page.locator('.monaco-list-row', { hasText: 'Cannot reach the broker' }).waitFor({ state: 'detached', timeout: 15_000 });
    await runCommand(page, 'Notifications: Show Notifications');
    await page.locator('.notifications-center').waitFor({ state: 'visible', timeout: 10_000 });
    const inCentre = page.locator('.notifications-center .notification-list-item', { hasText: 'cannot reach the broker' });
    assert.equal(await inCentre.count(), 0, 'no notification about the broker in the notification centre');
    await runCommand(page, 'Notifications: Hide Notifications');
    // The Jobs view works again: the old job is listed, and a new run shows up in it.
    await jobRow(`${first.id} hello.py, succeeded`).waitFor({ timeout: 15_000 });
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    const again = await waitForNewJobs([first.id]);
    await jobRow(`${again.id} hello.py, succeeded`).waitFor({ timeout: 60_000 });
    assert.equal(await brokerToasts().count(), 0, 'no notification about the broker came back');
  });

  it('GPU Run: Cache shows the size of your cache on each host and clears it', async () => {
    await openFile(page, 'download.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    await waitForTerminal(page, /cached in [\s\S]*succeeded/);
    const before = (await api<{ caches: UserCacheInfo[] }>('/v1/cache')).caches.find((c) => c.host === 'gpu-box')!;
    assert.equal(before.kind, 'folder');
    assert.ok(existsSync(join(before.name!, 'huggingface', 'hub', 'model.bin')), 'the file is in the cache folder on the host');

    await runCommand(page, 'GPU Run: Cache');
    const row = page.locator('.quick-input-list .monaco-list-row', { hasText: 'gpu-box' }).first();
    await row.waitFor({ timeout: 30_000 });
    const rowText = await row.innerText();
    assert.match(rowText, /3 MiB/, rowText);
    assert.match(rowText, /\/cache\//, rowText);
    await shot('vscode-cache.png');
    await page.keyboard.press('Enter');
    // Clearing asks first, naming the host and the size.
    const confirm = page.locator('.notification-toast, .monaco-dialog-box', { hasText: 'Clear your cache on gpu-box' }).first();
    await confirm.waitFor({ timeout: 15_000 });
    assert.match(await confirm.innerText(), /3 MiB/);
    await confirm.locator('.monaco-button', { hasText: 'Clear' }).first().click();
    await page.locator('.notifications-toasts', { hasText: 'cleared your cache on gpu-box' }).waitFor({ timeout: 30_000 });
    assert.ok(!existsSync(join(before.name!, 'huggingface', 'hub', 'model.bin')), 'the file is gone from the host');
    const after = (await api<{ caches: UserCacheInfo[] }>('/v1/cache')).caches.find((c) => c.host === 'gpu-box')!;
    assert.equal(after.bytes, 0);
    // Asked again, it says what is left.
    await runCommand(page, 'GPU Run: Cache');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'gpu-box' }).first().locator('.label-description', { hasText: /^0 B$/ }).waitFor({ timeout: 30_000 });
    await page.keyboard.press('Escape');
  });

  it('jobs run from the editor get the variables of gpurun.envFile and gpurun.env (the setting wins)', async () => {
    await openFile(page, 'envcheck.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    await waitForTerminal(page, /greeting=from-settings file=yes[\s\S]*succeeded/);
    const job = (await jobs()).find((j) => j.command.includes('envcheck.py'))!;
    assert.equal(job.state, 'succeeded');
  });

  it('Run on GPU… offers the configurations of gpurun.json and runs the one picked as it is saved', async () => {
    await runCommand(page, 'GPU Run: Run on GPU…');
    await page.locator('.quick-input-widget', { hasText: 'Run on GPU (1/5)' }).waitFor({ state: 'visible', timeout: 15_000 });
    await page.locator('.quick-input-widget input').fill('smoke');
    const row = page.locator('.quick-input-list .monaco-list-row', { hasText: 'gpurun.json' }).first();
    await row.waitFor({ timeout: 15_000 });
    assert.match(await row.innerText(), /smoke[\s\S]*gpurun\.json: python3 -c/);
    await row.click();
    await waitForTerminal(page, /config smoke ran[\s\S]*succeeded/);
    const job = (await jobs()).find((j) => j.command.join(' ').includes('config smoke ran'))!;
    assert.equal(job.resources.gpus, 0);
    assert.equal(job.resources.memoryMiB, 256);
  });

  it('Run on GPU… ends with memory, CPUs, image and env to change before Run; the job gets what was changed', async () => {
    await runCommand(page, 'GPU Run: Run on GPU…');
    await answerInput(page, 'Run on GPU (1/5)', 'envcheck.py');
    await answerInput(page, 'Run on GPU (2/5)', 'No GPU');
    await answerInput(page, 'Run on GPU (3/5)', 'online');
    await answerInput(page, 'Run on GPU (4/5)', '');
    const step = page.locator('.quick-input-widget', { hasText: 'Run on GPU (5/5)' });
    await step.waitFor({ state: 'visible', timeout: 15_000 });
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'CPUs:' }).first().waitFor({ timeout: 15_000 });
    const rows = (await page.locator('.quick-input-list .monaco-list-row').allInnerTexts()).map((t) => /^\s*(Run|[A-Za-z]+:)/.exec(t)?.[1] ?? t);
    assert.deepEqual(rows, ['Run', 'Memory:', 'CPUs:', 'Image:', 'Env:']);
    await answerInput(page, 'Run on GPU (5/5)', 'CPUs:');
    await answerInput(page, 'run, or change memory, CPUs, image or env first: cpus', '2');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'CPUs: 2' }).first().waitFor({ timeout: 15_000 });
    await answerInput(page, 'Run on GPU (5/5)', 'Env:');
    await answerInput(page, 'run, or change memory, CPUs, image or env first: env', 'FROM_FILE=changed');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Env: FROM_FILE=changed' }).first().waitFor({ timeout: 15_000 });
    await answerInput(page, 'Run on GPU (5/5)', 'Run');
    await waitForTerminal(page, /greeting=from-settings file=changed[\s\S]*succeeded/);
    const job = (await jobs()).filter((j) => j.command.includes('envcheck.py')).sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    assert.equal(job.resources.cpus, 2);
  });

  it('a job row\'s tooltip gives times as local time and how long ago, not UTC ISO strings', async () => {
    const job = (await jobs()).find((j) => j.command.includes('envcheck.py'))!;
    await openSidebar(page);
    await jobRow(`${job.id} envcheck.py`).hover();
    const hover = page.locator('.monaco-hover', { hasText: 'submitted:' }).first();
    await hover.waitFor({ timeout: 15_000 });
    const text = await hover.innerText();
    assert.match(text, /submitted: (just now|\d+ (s|min) ago) \(\w{3}, \w{3} \d{1,2}, \d\d:\d\d:\d\d\)/, text);
    assert.doesNotMatch(text, /\d{4}-\d\d-\d\dT\d\d:/, text);
    await page.mouse.move(700, 300);
  });

  it('Filter Jobs… shows only the jobs that match; Clear Finished Jobs hides those that have ended, and a new one shows', async () => {
    const all = await jobs();
    const env = all.find((j) => j.command.includes('envcheck.py'))!;
    const hello = all.find((j) => j.command.includes('hello.py'))!;
    await openSidebar(page);
    await jobRow(`${hello.id} hello.py`).waitFor({ timeout: 15_000 });
    await runCommand(page, 'GPU Run: Filter Jobs…');
    await page.locator('.quick-input-widget', { hasText: 'Filter Jobs' }).waitFor({ state: 'visible', timeout: 15_000 });
    await page.locator('.quick-input-widget input').fill('ENVCHECK');
    await page.keyboard.press('Enter');
    await jobRow(`${hello.id} hello.py`).waitFor({ state: 'detached', timeout: 15_000 });
    await jobRow(`${env.id} envcheck.py, succeeded`).waitFor({ timeout: 15_000 });
    await shot('vscode-filter.png');
    const shown = await page.locator('.pane', { hasText: 'Jobs' }).first().locator('.monaco-list-row[aria-label*=", succeeded"]').count();
    assert.equal(shown, all.filter((j) => j.command.includes('envcheck.py')).length, 'only the envcheck.py jobs are listed');
    // An empty filter shows them all again.
    await runCommand(page, 'GPU Run: Filter Jobs…');
    await page.locator('.quick-input-widget', { hasText: 'Filter Jobs' }).waitFor({ state: 'visible', timeout: 15_000 });
    await page.locator('.quick-input-widget input').fill('');
    await page.keyboard.press('Enter');
    await jobRow(`${hello.id} hello.py`).waitFor({ timeout: 15_000 });

    await runCommand(page, 'GPU Run: Clear Finished Jobs');
    await jobRow(`${hello.id} hello.py`).waitFor({ state: 'detached', timeout: 15_000 });
    await jobRow(`${env.id} envcheck.py`).waitFor({ state: 'detached', timeout: 15_000 });
    await page.locator('.monaco-list-row', { hasText: /^Recent\s*0$/ }).first().waitFor({ timeout: 15_000 });
    // The broker keeps them; a job run after the clear is listed.
    assert.equal((await jobs()).length, all.length);
    await openFile(page, 'hello.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    const next = await waitForNewJobs(all.map((j) => j.id));
    await jobRow(`${next.id} hello.py, succeeded`).waitFor({ timeout: 60_000 });
  });

  async function waitForNewJobs(old: string[]): Promise<Job> {
    for (let i = 0; i < 120; i++) {
      const j = (await jobs()).find((x) => !old.includes(x.id) && x.state === 'succeeded');
      if (j) return j;
      await sleep(500);
    }
    throw new Error('the new run did not succeed');
  }
});
