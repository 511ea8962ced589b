/** Ctrl+C in a terminal during `gpurun run` asks whether to cancel the job or detach (driven through tmux). */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { CLI, NODE, cleanup, newTmuxTerminal, requirePart, createToken, scratch, startBrokerProcess, waitFor, type BrokerProc } from '../support/harness.ts';

const hasTmux = spawnSync('tmux', ['-V']).status === 0;

describe('gpurun run in a terminal', function () {
  this.timeout(40_000);
  let dir: string;
  let broker: BrokerProc;
  const sock = `gpurun-interactive-${process.pid}`;
  const session = 't';
  const tmux = (...args: string[]) => execFileSync('tmux', ['-L', sock, ...args], { encoding: 'utf8' });
  const screen = () => tmux('capture-pane', '-p', '-t', session);

  before(async function () {
    requirePart(this, 'tmux', hasTmux, 'tmux is not installed (apt-get install tmux)');
    dir = scratch();
    broker = await startBrokerProcess(join(dir, 'b'), { hosts: [{ name: 'local', type: 'local', cpus: 2, memory: '2G' }] });
  });
  after(async () => {
    spawnSync('tmux', ['-L', sock, 'kill-server']);
    await broker?.stop();
    if (dir) cleanup(dir);
  });

  async function start(cmd: string): Promise<void> {
    const token = await createToken(broker, 'alice');
    const line = `GPURUN_BROKER=${broker.url} GPURUN_TOKEN=${token} ${NODE} ${CLI} run --gpus 0 -- ${cmd}; echo "EXIT=$?"`;
    newTmuxTerminal(sock, { cols: 160, rows: 40 });
    tmux('send-keys', '-t', session, line, 'Enter');
    await waitFor('the job to print', () => /tick 1/.test(screen()));
  }

  it('cancels the job when the answer is y', async () => {
    await start(`sh -c 'for i in 1 2 3 4 5 6 7 8 9; do echo tick $i; sleep 1; done'`);
    tmux('send-keys', '-t', session, 'C-c');
    await waitFor('the question', () => /cancel job [a-z0-9]{8}\? \[y\] cancel, \[N\] detach and leave it running:/.test(screen()));
    tmux('send-keys', '-t', session, 'y', 'Enter');
    await waitFor('the end', () => /EXIT=\d+/.test(screen()));
    const s = screen();
    assert.match(s, /job [a-z0-9]{8} cancelled: cancelled by alice/);
    assert.match(s, /EXIT=130/);
    assert.doesNotMatch(s, /tick 9/);
  });

  it('detaches when the answer is no, and the job goes on', async () => {
    await start(`sh -c 'for i in 1 2 3; do echo tick $i; sleep 1; done'`);
    tmux('send-keys', '-t', session, 'C-c');
    await waitFor('the question', () => /\[N\] detach/.test(screen()));
    tmux('send-keys', '-t', session, 'Enter');
    await waitFor('the end', () => /EXIT=\d+/.test(screen()));
    const s = screen();
    assert.match(s, /detached; job ([a-z0-9]{8}) goes on/);
    assert.match(s, /EXIT=0/);
    const id = /detached; job ([a-z0-9]{8})/.exec(s)![1];
    const token = await createToken(broker, 'alice');
    const job = await waitFor('it to finish on its own', async () => {
      const r = await fetch(`${broker.url}/v1/jobs/${id}`, { headers: { authorization: `Bearer ${token}` } });
      const j = (await r.json()) as { state: string };
      return j.state === 'succeeded' && j;
    });
    assert.equal(job.state, 'succeeded');
  });
});
