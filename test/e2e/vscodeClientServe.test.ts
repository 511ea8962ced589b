/**
 * End to end, a team broker that cannot read the workspace: the broker runs in its own mount namespace with a tmpfs
 * over the laptop's folder (as in ssh-client-relay), one real sshd host with Docker on 127.0.0.18. VS Code has
 * `gpurun.brokerUrl` set and `gpurun.workspaceFrom` `client` (`auto` would pick `broker`: the test broker listens on
 * a loopback address), so the window serves the files itself (the bundled `gpurun serve-workspace`). The job reads input.txt and writes out.txt: it only works if the window served them.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import type { Job } from '../../server/protocol/jobs.ts';
import { cleanup, createToken, requirePart, scratch, startBrokerProcess, stopBroker, waitFor, type BrokerProc } from '../support/harness.ts';
import { hiddenFrom, makeSshHosts, mountedUnder, sshHostsMissing, unshareMissing, type TestHostSet } from '../support/sshHosts.ts';
import { answerInput, installExtension, launchBrowser, missingVsCode, openFile, openSidebar, openWorkbench, RESULTS, runCommand, startCodeServer, waitForTerminal, type CodeServer } from './support/codeServer.ts';

/** Command lines of the processes running now that contain `text`. */
function processesWith(text: string): string[] {
  const found: string[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0').join(' ');
      if (argv.includes(text)) found.push(argv);
    } catch {
      /* gone */
    }
  }
  return found;
}

describe('VS Code extension, end to end, workspace served by the window to a team broker that cannot read it', function () {
  this.timeout(180_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let token: string;
  let cs: CodeServer;
  let browser: Browser;
  let page: Page;
  let laptop: string;
  let ws: string;
  let workDir: string;

  before(async function () {
    const missing = missingVsCode() ?? sshHostsMissing() ?? unshareMissing();
    requirePart(this, 'VS Code (code-server), Chromium, sshd, sshfs, Docker and unshare', !missing, missing ?? '');
    dir = scratch('gpurun-e2e-client-serve-');
    set = await makeSshHosts(join(dir, 'hosts'), [{ name: 'gpu1', address: '127.0.0.18', gpus: [{ name: 'NVIDIA L4', memoryMiB: 23034 }] }]);
    laptop = join(dir, 'laptop');
    ws = join(laptop, 'project');
    mkdirSync(ws, { recursive: true });
    writeFileSync(join(ws, 'input.txt'), 'only on the laptop\n');
    // The busybox image has no Python: the "Python command" is sh, and the file run is a shell script.
    writeFileSync(join(ws, 'job.sh'), ['echo "job runs in $(pwd)"', 'cat input.txt', 'echo written-by-the-job > out.txt', 'sleep 3', 'echo job done', ''].join('\n'));
    workDir = join(dir, 'hostwork');
    broker = await startBrokerProcess(
      join(dir, 'broker'),
      {
        hosts: [{ type: 'ssh', name: 'gpu1', address: '127.0.0.18', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir }],
        defaults: { image: 'local/busybox:1', gpus: 1, memory: '256M' },
      },
      {},
      { wrap: hiddenFrom(laptop) },
    );
    token = await createToken(broker, 'dana');
    const extDir = join(dir, 'extensions');
    mkdirSync(extDir);
    installExtension(dir, extDir);
    cs = await startCodeServer(dir, { folder: ws, extDir, settings: { 'gpurun.brokerUrl': broker.url, 'gpurun.workspaceFrom': 'client', 'gpurun.pythonCommand': 'sh' }, env: { GPURUN_HOME: join(dir, 'gpurun-home') } });
    browser = await launchBrowser();
    page = await openWorkbench(browser, cs, ws);
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && page) {
      mkdirSync(RESULTS, { recursive: true });
      await page.screenshot({ path: join(RESULTS, `vscode-failed-client-serve-${this.currentTest.title.replace(/\W+/g, '-').slice(0, 50)}.png`) }).catch(() => {});
    }
  });

  after(async function () {
    await browser?.close().catch(() => {});
    await cs?.stop();
    await stopBroker(broker);
    await set?.stopAll();
    if (dir) {
      const left = execFileSync('docker', ['ps', '-aq', '--filter', 'label=gpurun.owner=dana'], { encoding: 'utf8' }).split('\n').filter(Boolean);
      if (left.length) spawnSync('docker', ['rm', '-f', ...left]);
      for (const m of mountedUnder(workDir)) spawnSync('fusermount3', ['-uz', m]);
      cleanup(dir);
    }
  });

  it('the broker cannot see the workspace', () => {
    const r = spawnSync('nsenter', ['-t', String(broker.proc.pid), '-m', 'ls', '-A', laptop], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '', 'the broker sees an empty folder where the workspace is');
  });

  it('runs a file from the palette: the window serves the workspace; the job reads input.txt, out.txt appears locally', async () => {
    await openSidebar(page);
    await runCommand(page, 'GPU Run: Sign In');
    await answerInput(page, 'Sign In (1/2)', broker.url);
    await answerInput(page, 'Sign In (2/2)', token);
    await page.locator('.notifications-toasts', { hasText: 'signed in' }).waitFor({ timeout: 30_000 });
    await runCommand(page, 'Notifications: Clear All Notifications');
    await page.locator('.monaco-list-row', { hasText: '1/1 GPUs free' }).waitFor({ timeout: 30_000 });

    await openFile(page, 'job.sh');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    const serving = await waitForTerminal(page, /serving the workspace to host gpu1/, 60_000);
    const id = /job (\w+): sh job\.sh/.exec(serving)?.[1];
    assert.ok(id, serving);
    // While the job runs, its serve-workspace child runs, with the token in its environment only (ps shows argv).
    const children = processesWith(`serve-workspace ${id}`);
    assert.equal(children.length, 1, children.join('\n'));
    assert.ok(!children[0].includes(token) && !children[0].includes(broker.url), children[0]);
    const text = await waitForTerminal(page, /succeeded \(exit code 0\)/, 90_000);
    assert.match(text, /serving the workspace to host gpu1/);
    assert.match(text, /running on gpu1/);
    assert.match(text, /job runs in \/workspace\n.*only on the laptop\n.*job done/s);
    assert.equal(readFileSync(join(ws, 'out.txt'), 'utf8'), 'written-by-the-job\n');

    const r = await fetch(`${broker.url}/v1/jobs?all=1`, { headers: { authorization: `Bearer ${token}` } });
    const [job] = ((await r.json()) as { jobs: Job[] }).jobs;
    assert.deepEqual(job.command, ['sh', 'job.sh']);
    assert.equal(job.workspaceFrom, 'client');
    assert.equal(job.state, 'succeeded');
    await page.locator('.monaco-list-row', { hasText: '1/1 GPUs free' }).waitFor({ timeout: 30_000 });
    await page.mouse.move(700, 300);
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: join(RESULTS, 'vscode-client-serve.png') });

    // The serving child ends with the job.
    await waitFor('serve-workspace to exit', () => processesWith(`serve-workspace ${job.id}`).length === 0, 30_000);
    assert.deepEqual(mountedUnder(workDir), [], 'the host unmounted the workspace');
    assert.ok(existsSync(join(ws, 'input.txt')));
  });
});
