/**
 * End to end in a real VS Code (code-server + Chromium) against a team broker process with two SSH Docker hosts on
 * loopback (127.0.34.1, 127.0.34.2: real sshd, Docker, sshfs): a job run from the editor is moved to the other host
 * while its terminal is open. The terminal goes on across the move: the marker line once, every step once, in order,
 * and the job's end. An admin drains the job's host from its row in the Hosts view: the job moves off, the row says
 * draining, and Undrain Host puts the host back.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Browser, Page } from 'playwright-core';
import type { Job } from '../../server/protocol/jobs.ts';
import { cleanup, createToken, requirePart, ROOT, scratch, startBrokerProcess, stopBroker, type BrokerProc } from '../support/harness.ts';
import { makeSshHosts, mountedUnder, sshHostsMissing, type TestHostSet } from '../support/sshHosts.ts';
import { maximizePanel, missingVsCode, openFile, openSidebar, openSignedInWindow, runCommand, screenshot, terminalText, waitForTerminal, type CodeServer } from './support/codeServer.ts';

const STEPS = 16;
/** The drained job's steps: long enough for the clicks and the dialog before it ends. */
const LONG_STEPS = 60;

/** Counts `steps` steps, saving the next one when asked to checkpoint (examples/gpurun_checkpoint.py). */
const counter = (steps: number) => `# gpurun: checkpoint-signal=SIGUSR1 queue=offline gpus=1 memory=256M
import time
from gpurun_checkpoint import Checkpoint
ck = Checkpoint()
state = ck.load({"step": 1})
for step in range(state["step"], ${steps} + 1):
    print(f"step {step}", flush=True)
    time.sleep(0.5)
    ck.checkpoint_if_asked({"step": step + 1})
print("counted to the end", flush=True)
`;

describe('VS Code extension, end to end: the terminal of a job follows it across a move', function () {
  this.timeout(240_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let token: string;
  let cs: CodeServer;
  let browser: Browser;
  let page: Page;
  const workDirs: string[] = [];

  const api = async <T,>(path: string, init: RequestInit = {}): Promise<T> => {
    const r = await fetch(`${broker.url}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } });
    const body = (await r.json()) as T;
    assert.ok(r.ok, `${path}: ${r.status} ${JSON.stringify(body)}`);
    return body;
  };

  before(async function () {
    const missing = missingVsCode();
    requirePart(this, 'VS Code (code-server) and Chromium', !missing, missing ?? '');
    requirePart(this, 'sshd, sshfs and Docker', sshHostsMissing() === null, sshHostsMissing() ?? '');
    const img = spawnSync('docker', ['image', 'inspect', 'local/python:3'], { encoding: 'utf8' });
    requirePart(this, 'the image local/python:3', img.status === 0, 'the image local/python:3 is missing; run test/setup/30-ssh-docker.sh');
    dir = scratch('gpurun-e2e-migrate-');
    const gpu = [{ name: 'NVIDIA L4', memoryMiB: 23034 }];
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'm1', address: '127.0.34.1', gpus: gpu },
      { name: 'm2', address: '127.0.34.2', gpus: gpu },
    ]);
    const ws = join(dir, 'project');
    mkdirSync(ws);
    copyFileSync(join(ROOT, 'examples', 'gpurun_checkpoint.py'), join(ws, 'gpurun_checkpoint.py'));
    writeFileSync(join(ws, 'count.py'), counter(STEPS));
    writeFileSync(join(ws, 'count_long.py'), counter(LONG_STEPS));
    const hosts = set.hosts.map((h, i) => {
      workDirs[i] = join(dir, `work-${h.name}`);
      return { type: 'ssh', name: h.name, address: h.address, user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir: workDirs[i], runtime: 'docker', mount: { transport: 'relay' } };
    });
    broker = await startBrokerProcess(join(dir, 'broker'), { hosts, defaults: { image: 'local/python:3' }, migration: { checkpointTimeout: '20s' } });
    // An admin: the Hosts view offers Drain Host to admins only.
    token = await createToken(broker, 'terminal-mover', true);
    ({ cs, browser, page } = await openSignedInWindow(dir, { folder: ws, brokerUrl: broker.url, token }));
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && page) await screenshot(page, 'vscode-failed-migrate.png').catch(() => {});
  });

  after(async function () {
    await browser?.close().catch(() => {});
    await cs?.stop();
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      const left = execFileSync('docker', ['ps', '-a', '--filter', 'label=gpurun.owner=terminal-mover', '--format', '{{.Names}}'], { encoding: 'utf8' }).split('\n').filter(Boolean);
      for (const c of left) spawnSync('docker', ['rm', '-f', c]);
      for (const w of workDirs) for (const m of mountedUnder(w)) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
      cleanup(dir);
    }
  });

  it('a job moved while its terminal is open: the marker once, every step once and in order, the end', async () => {
    await openFile(page, 'count.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    // The job's terminal first: a panel maximized before it exists opens a plain shell, which would be the one in view.
    await waitForTerminal(page, /\[gpurun\] job \w+: python3 count\.py/, 60_000);
    await maximizePanel(page, true);
    await waitForTerminal(page, /step 3\b/, 90_000);
    const job = (await api<{ jobs: Job[] }>('/v1/jobs')).jobs.find((j) => j.command.includes('count.py'))!;
    assert.equal(job.state, 'running');
    const from = job.host!;
    await api(`/v1/jobs/${job.id}/migrate`, { method: 'POST', body: '{}' });

    const text = await waitForTerminal(page, /counted to the end[\s\S]*succeeded/, 120_000);
    await screenshot(page, 'vscode-migrated-terminal.png');
    const lines = text.split('\n');
    const markers = lines.filter((l) => l.includes(`moved from ${from} to `));
    assert.equal(markers.length, 1, text);
    const steps = lines.filter((l) => /^step \d+$/.test(l.trim())).map((l) => Number(l.trim().slice(5)));
    assert.deepEqual(steps, Array.from({ length: STEPS }, (_, i) => i + 1), text);
    const moved = await api<Job>(`/v1/jobs/${job.id}`);
    assert.equal(moved.state, 'succeeded');
    assert.notEqual(moved.host, from, 'the job ended on the other host');
    // Still the one terminal: the window has not opened a second one for the job's new attempt.
    await sleep(1000);
    assert.match(await terminalText(page), /counted to the end/);
    await maximizePanel(page, false);
  });

  it("Drain Host on the job's host in the Hosts view: asked first, the job moves off and goes on; Undrain Host puts it back", async () => {
    await openFile(page, 'count_long.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    await waitForTerminal(page, /step 3\b/, 90_000);
    const job = (await api<{ jobs: Job[] }>('/v1/jobs')).jobs.filter((j) => j.command.includes('count_long.py')).sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    assert.equal(job.state, 'running');
    const from = job.host!;
    const to = from === 'm1' ? 'm2' : 'm1';
    await openSidebar(page);
    // The host's row: its name as the label, "N/M GPUs free · STATE" as the description.
    const hostRow = (words: string) =>
      page.locator('.monaco-list-row').filter({ has: page.locator('.label-name', { hasText: new RegExp(`^${from}$`) }) }).filter({ has: page.locator('.label-description', { hasText: new RegExp(`· ${words}`) }) }).first();
    const row = hostRow('up\\s*$');
    await row.waitFor({ timeout: 30_000 });
    await row.hover();
    await row.locator('.action-label[aria-label="Drain Host"]').click();
    // Drain asks first and says what it does.
    const dialog = page.locator('.monaco-dialog-box', { hasText: `Drain ${from}?` });
    await dialog.waitFor({ timeout: 15_000 });
    assert.match(await dialog.innerText(), /Its offline jobs that checkpoint move to other hosts/);
    await dialog.locator('.monaco-button', { hasText: 'Drain' }).first().click();
    await hostRow('draining').waitFor({ timeout: 30_000 });
    await screenshot(page, 'vscode-hosts-draining.png');

    // The job's terminal follows it to the other host, and on to its end.
    await waitForTerminal(page, new RegExp(`moved from ${from} to ${to}: ${from} drained by terminal-mover`), 90_000);
    await waitForTerminal(page, /counted to the end[\s\S]*succeeded/, 150_000);
    const r = await fetch(`${broker.url}/v1/jobs/${job.id}/logs?offset=0`, { headers: { authorization: `Bearer ${token}` } });
    const lines = (await r.text()).split('\n');
    assert.equal(lines.filter((l) => l.includes(`moved from ${from} to ${to}`)).length, 1, lines.join('\n'));
    const steps = lines.filter((l) => /^step \d+$/.test(l)).map((l) => Number(l.slice(5)));
    assert.deepEqual(steps, Array.from({ length: LONG_STEPS }, (_, i) => i + 1), lines.join('\n'));
    const moved = await api<Job>(`/v1/jobs/${job.id}`);
    assert.equal(moved.state, 'succeeded');
    assert.deepEqual(moved.attempts!.map((a) => [a.host, a.fault]), [[from, 'migrated'], [to, null]]);
    assert.match(moved.attempts![0].reason!, new RegExp(`^moved to ${to} \\(${from} drained by terminal-mover\\)`));

    const draining = hostRow('draining');
    await draining.hover();
    await draining.locator('.action-label[aria-label="Undrain Host"]').click();
    await hostRow('up\\s*$').waitFor({ timeout: 30_000 });
    const host = (await api<{ hosts: Array<{ name: string; state: string }> }>('/v1/hosts')).hosts.find((h) => h.name === from)!;
    assert.equal(host.state, 'up');
  });
});
