/**
 * The embedded default: no broker configured, no token, nothing set up. The CLI starts a local broker on demand
 * (one per GPURUN_HOME, shared by concurrent calls), on a Unix socket only the user can open.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, gpurun, ROOT, scratch, stopEmbedded, testEnv, waitFor } from '../support/harness.ts';

describe('embedded default', function () {
  this.timeout(60_000);
  let home: string;
  let env: NodeJS.ProcessEnv;
  beforeEach(() => {
    home = scratch();
    env = testEnv(home);
  });
  afterEach(async () => {
    await stopEmbedded(home);
    cleanup(home);
  });

  it('runs examples/train.py with no set-up and streams its epochs', async () => {
    const r = await gpurun(['run', '--', 'python3', 'examples/train.py'], { ...env, EPOCHS: '3', EPOCH_SECONDS: '0.1' }, { cwd: ROOT });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^training on CPU \(no GPU assigned\) for 3 epochs\nepoch 1\/3  loss [\d.]+  ppl [\d.]+\nepoch 2\/3 .*\nepoch 3\/3 .*\ndone\n$/);
    // The state lives in GPURUN_HOME, private to the user.
    assert.equal(statSync(home).mode & 0o777, 0o700);
    assert.equal(statSync(join(home, 'broker.sock')).mode & 0o777, 0o600);
    assert.ok(statSync(join(home, 'gpurun.db')).size > 0);
    const ls = await gpurun(['ls'], env);
    assert.match(ls.stdout, /train\.py\s+succeeded\s+online\s+local/);
  });

  it('shares one broker between concurrent CLI calls', async () => {
    const runs = await Promise.all([1, 2, 3].map((i) => gpurun(['run', '--gpus', '0', '--', 'sh', '-c', `echo run ${i}`], env)));
    runs.forEach((r, i) => {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `run ${i + 1}\n`);
    });
    const listening = readFileSync(join(home, 'broker.log'), 'utf8').match(/"msg":"broker listening"/g) ?? [];
    assert.equal(listening.length, 1, 'one broker started');
  });

  it('starts the broker again when it was killed, and the job it ran is still there', async () => {
    const r = await gpurun(['run', '--detach', '--gpus', '0', '--', 'sh', '-c', 'sleep 1; echo survived'], env);
    const id = r.stdout.trim();
    const pid = Number(readFileSync(join(home, 'broker.lock'), 'utf8'));
    process.kill(pid, 'SIGKILL');
    const logs = await gpurun(['logs', '-f', id], env);
    assert.equal(logs.stdout, 'survived\n');
    const job = await waitFor('it to be succeeded', async () => {
      const j = JSON.parse((await gpurun(['ls', '--json'], env)).stdout).find((x: { id: string }) => x.id === id);
      return j.state === 'succeeded' && j;
    });
    assert.equal(job.exitCode, 0);
  });

  it('gives usage errors exit code 2 with a hint', async () => {
    const r = await gpurun(['run', '--gpus', 'two', '--', 'true'], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /gpurun: error: --gpus must be a whole number, got "two"\ngpurun: See: gpurun run --help/);
    const n = await gpurun(['frobnicate'], env);
    assert.equal(n.code, 2);
    assert.match(n.stderr, /unknown command "frobnicate"/);
    const w = await gpurun(['run', '--workspace', '/no/such/dir', '--', 'true'], env);
    assert.match(w.stderr, /the workspace \/no\/such\/dir is not a folder/);
  });
});
