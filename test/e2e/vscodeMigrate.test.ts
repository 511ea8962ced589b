/**
 * End to end in a real VS Code (code-server + Chromium) against a team broker process with two SSH Docker hosts on
 * loopback (127.0.34.1, 127.0.34.2: real sshd, Docker, sshfs): a job run from the editor is moved to the other host
 * while its terminal is open. The terminal goes on across the move: the marker line once, every step once, in order,
 * and the job's end.
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
import { maximizePanel, missingVsCode, openFile, openSignedInWindow, runCommand, screenshot, terminalText, waitForTerminal, type CodeServer } from './support/codeServer.ts';

const STEPS = 16;

/** Counts steps, saving the next one when asked to checkpoint (examples/gpurun_checkpoint.py). */
const COUNTER = `# gpurun: checkpoint-signal=SIGUSR1 queue=offline gpus=1 memory=256M
import time
from gpurun_checkpoint import Checkpoint
ck = Checkpoint()
state = ck.load({"step": 1})
for step in range(state["step"], ${STEPS} + 1):
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
    writeFileSync(join(ws, 'count.py'), COUNTER);
    const hosts = set.hosts.map((h, i) => {
      workDirs[i] = join(dir, `work-${h.name}`);
      return { type: 'ssh', name: h.name, address: h.address, user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir: workDirs[i], runtime: 'docker', mount: { transport: 'relay' } };
    });
    broker = await startBrokerProcess(join(dir, 'broker'), { hosts, defaults: { image: 'local/python:3' }, migration: { checkpointTimeout: '20s' } });
    token = await createToken(broker, 'terminal-mover');
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
});
