/**
 * End to end in a real VS Code (code-server + Chromium), signed in as a broker admin, against a team broker process
 * with two SSH Docker hosts on loopback (127.0.35.1, 127.0.35.2: real sshd, Docker, sshfs): the admin drains the host
 * of a checkpointing offline job from the Hosts view's menu (answering its question), the row says draining and the
 * job moves to the other host; Undrain puts the host back up; Move Job… on the job's row moves it back.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import type { Job } from '../../server/protocol/jobs.ts';
import { createToken, requirePart, scratch, startBrokerProcess, waitFor, type BrokerProc } from '../support/harness.ts';
import { counterWorkspace, dockerHostConfigs, requireMigrationParts } from '../support/migrationHosts.ts';
import { endHostSuite, makeSshHosts, type TestHostSet } from '../support/sshHosts.ts';
import { missingVsCode, openFile, openSignedInWindow, pickFromRowMenu, runCommand, screenshot, viewRows, waitForTerminal, type CodeServer } from './support/codeServer.ts';

const OWNER = 'hosts-admin';

/** Counts steps, saving the next one when asked to checkpoint (examples/gpurun_checkpoint.py); runs past the test. */
const COUNTER = `# gpurun: checkpoint-signal=SIGUSR1 queue=offline gpus=1 memory=256M
import time
from gpurun_checkpoint import Checkpoint
ck = Checkpoint()
state = ck.load({"step": 1})
for step in range(state["step"], 1000):
    print(f"step {step}", flush=True)
    time.sleep(0.5)
    ck.checkpoint_if_asked({"step": step + 1})
`;

describe('VS Code extension, end to end: an admin drains and undrains a host and moves a job from the sidebar', function () {
  this.timeout(240_000);
  let dir: string;
  let set: TestHostSet;
  let broker: BrokerProc;
  let token: string;
  let cs: CodeServer;
  let browser: Browser;
  let page: Page;
  let workDirs: string[] = [];

  const api = async <T,>(path: string, init: RequestInit = {}, as = token): Promise<{ status: number; body: T }> => {
    const r = await fetch(`${broker.url}${path}`, { ...init, headers: { authorization: `Bearer ${as}`, 'content-type': 'application/json' } });
    return { status: r.status, body: (await r.json()) as T };
  };
  const job = async (id: string): Promise<Job> => (await api<Job>(`/v1/jobs/${id}`)).body;
  /** The job runs on `host` again, its move over. */
  const runsOn = (id: string, host: string) => waitFor(`job ${id} running on ${host}`, async () => {
    const j = await job(id);
    return j.host === host && j.state === 'running' && !j.move && j;
  }, 90_000, 250).catch((e: Error) => {
    // What the broker did with the move, for the failure message.
    const seen = broker.log().split('\n').filter((l) => /mov|checkpoint|start/i.test(l)).slice(-20).join('\n');
    throw new Error(`${e.message}\n${seen}`);
  });

  before(async function () {
    const missing = missingVsCode();
    requirePart(this, 'VS Code (code-server) and Chromium', !missing, missing ?? '');
    requireMigrationParts(this);
    dir = scratch('gpurun-e2e-admin-hosts-');
    const gpu = [{ name: 'NVIDIA L4', memoryMiB: 23034 }];
    set = await makeSshHosts(join(dir, 'hosts'), [
      { name: 'd1', address: '127.0.35.1', gpus: gpu },
      { name: 'd2', address: '127.0.35.2', gpus: gpu },
    ]);
    const ws = counterWorkspace(dir, COUNTER);
    const cfg = dockerHostConfigs(set, dir);
    workDirs = cfg.workDirs;
    broker = await startBrokerProcess(join(dir, 'broker'), { hosts: cfg.hosts, defaults: { image: 'local/python:3' }, migration: { checkpointTimeout: '20s' } });
    token = await createToken(broker, OWNER, true);
    ({ cs, browser, page } = await openSignedInWindow(dir, { folder: ws, brokerUrl: broker.url, token }));
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && page) await screenshot(page, 'vscode-failed-admin-hosts.png').catch(() => {});
  });

  after(async function () {
    await browser?.close().catch(() => {});
    await cs?.stop();
    await endHostSuite(broker, set, OWNER, workDirs, dir);
  });

  it('Drain Host (asked first) moves the job off and the row says draining; Undrain puts it up; Move Job… moves it back', async () => {
    await openFile(page, 'count.py');
    await runCommand(page, 'GPU Run: Run Current File on GPU');
    const started = await waitFor('the job running', async () => {
      const j = (await api<{ jobs: Job[] }>('/v1/jobs')).body.jobs.find((x) => x.command.includes('count.py'));
      return j?.state === 'running' && j.host ? j : undefined;
    }, 60_000, 250);
    const id = started.id;
    const from = started.host!;
    // A few steps first, as a person would see before draining: the job has its checkpoint handler in place.
    await waitForTerminal(page, /step 5\b/, 60_000);
    const to = from === 'd1' ? 'd2' : 'd1';
    // A host row's text is its name, then its description ("d11/1 GPUs free · up"); a GPU row has neither.
    const hostRow = (name: string) => viewRows(page, 'Hosts', new RegExp(`${name}\\s*\\d+/\\d+ GPUs free`)).first();
    const jobRow = viewRows(page, 'Jobs', id).first();

    // Drain through the row's context menu; the modal says what happens before anything does.
    await hostRow(from).waitFor({ timeout: 30_000 });
    await pickFromRowMenu(page, hostRow(from), 'Drain Host');
    const dialog = page.locator('.monaco-dialog-box', { hasText: `Drain ${from}?` });
    await dialog.waitFor({ timeout: 10_000 });
    assert.match(await dialog.innerText(), /No new jobs start on \w+\. Its offline jobs that checkpoint move to other hosts; the rest run on to their end/);
    // A move can be over in a few seconds: the rows are watched from the click on.
    const moving = jobRow.filter({ hasText: `moving to ${to}` }).waitFor({ timeout: 30_000 });
    const draining = hostRow(from).filter({ hasText: /draining: \d+ jobs? moving, \d+ running/ }).waitFor({ timeout: 15_000 });
    await dialog.locator('.monaco-button', { hasText: /^Drain$/ }).click();
    await Promise.all([moving, draining]);
    await runsOn(id, to);
    await hostRow(from).filter({ hasText: 'draining: 0 jobs moving, 0 running' }).waitFor({ timeout: 15_000 });
    await screenshot(page, 'vscode-host-draining.png');

    // Only an admin may drain: the broker refuses another user's token.
    const other = await createToken(broker, 'not-an-admin');
    assert.equal((await api(`/v1/hosts/${to}/drain`, { method: 'POST', body: '{"on":true}' }, other)).status, 403);

    await pickFromRowMenu(page, hostRow(from), 'Undrain Host');
    await hostRow(from).filter({ hasText: 'GPUs free · up' }).waitFor({ timeout: 15_000 });

    // Move Job… on the job's row: the pick offers any host and the one it left, which is up again.
    await jobRow.filter({ hasText: to }).waitFor({ timeout: 15_000 });
    await pickFromRowMenu(page, jobRow, 'Move Job…');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'the broker picks' }).waitFor({ timeout: 15_000 });
    const movingBack = jobRow.filter({ hasText: `moving to ${from}` }).waitFor({ timeout: 30_000 });
    await page.locator('.quick-input-list .monaco-list-row', { hasText: new RegExp(`${from}\\s*\\d+/\\d+ GPUs free`) }).first().click();
    await movingBack;
    const back = await runsOn(id, from);
    assert.equal(back.attempt?.moves, 2, JSON.stringify(back.attempt));
    await api(`/v1/jobs/${id}/cancel`, { method: 'POST', body: '{}' });
  });
});
