/**
 * Workspace staging onto the cluster's storage, through the CLI: the job sees the staged workspace (without `.git`
 * and `.gpurun-ignore`d files), a second submit after one edit copies one file, files the job writes come back, and
 * a file the developer edited while the job ran is not overwritten.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { gpurun, gpurunSpawn, waitFor } from '../support/harness.ts';
import { setUpSlurmSuite, tearDownSlurmSuite, type SlurmBroker } from '../support/slurm.ts';
import type { Job } from '../../server/protocol/jobs.ts';

const MAIN = `import os
print(open("input.txt").read().strip())
print("git:", os.path.exists(".git"), "data:", os.path.exists("data"), "log:", os.path.exists("debug.log"), "lib:", os.path.exists("lib/util.py"))
print("cwd:", os.getcwd())
`;

describe('slurm: workspace staging', function () {
  this.timeout(90_000);
  let home: string;
  let ws: string;
  let s: SlurmBroker;

  before(async function () {
    ({ home, ws, s } = await setUpSlurmSuite(this, 'gpurun-slurm-stage-', {
      wsName: 'my project',
      prepare: (dir) => {
        for (const d of ['lib', '.git', 'data']) mkdirSync(join(dir, d));
        writeFileSync(join(dir, 'main.py'), MAIN);
        writeFileSync(join(dir, 'input.txt'), 'version one\n');
        writeFileSync(join(dir, 'lib', 'util.py'), 'X = 1\n');
        writeFileSync(join(dir, '.git', 'config'), '[core]\n');
        writeFileSync(join(dir, 'data', 'big.bin'), Buffer.alloc(4096));
        writeFileSync(join(dir, 'debug.log'), 'noise\n');
        writeFileSync(join(dir, '.gpurun-ignore'), '# not for the cluster\ndata/\n*.log\n');
      },
    }));
  });
  after(() => tearDownSlurmSuite(home, s));

  const run = (cmd: string[]) => gpurun(['run', '--workspace', ws, '--gpus', '0', '--memory', '100M', '--', ...cmd], s.env);
  async function job(id: string): Promise<Job> {
    const r = await gpurun(['ls', '--json'], s.env);
    return (JSON.parse(r.stdout) as Job[]).find((j) => j.id === id)!;
  }

  it('runs in the staged workspace; a second submit after one edit copies one file', async () => {
    const r1 = await run(['python3', 'main.py']);
    assert.equal(r1.code, 0, r1.stderr);
    assert.match(r1.stderr, /workspace staged on cluster test: 4 files copied, 0 unchanged/);
    const lines = r1.stdout.split('\n');
    assert.equal(lines[0], 'version one');
    assert.equal(lines[1], 'git: False data: False log: False lib: True');
    // It ran on the cluster's storage, not in the developer's folder.
    assert.ok(lines[2].startsWith(`cwd: ${join(home, 'cluster-storage', 'alice')}/my_project-`), lines[2]);

    writeFileSync(join(ws, 'input.txt'), 'version two\n');
    const r2 = await run(['python3', 'main.py']);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stderr, /workspace staged on cluster test: 1 file copied, 3 unchanged/);
    assert.equal(r2.stdout.split('\n')[0], 'version two');
    const id = /job (\w+) submitted/.exec(r2.stderr)![1];
    assert.deepEqual((await job(id)).cluster!.staged!.copied, 1);
  });

  it('brings back the files the job wrote, and then does not stage them again', async () => {
    const r = await run(['python3', '-c', 'import os; os.makedirs("out", exist_ok=True); open("out/result.txt", "w").write("42\\n")']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(join(ws, 'out', 'result.txt'), 'utf8'), '42\n');
    const id = /job (\w+) submitted/.exec(r.stderr)![1];
    assert.deepEqual((await job(id)).cluster!.returned, { copied: 1, keptNewer: [] });
    const again = await run(['true']);
    assert.match(again.stderr, /0 files copied, 5 unchanged/);
  });

  it('does not overwrite a file the developer edited while the job ran', async () => {
    writeFileSync(join(ws, 'notes.txt'), 'original\n');
    const child = gpurunSpawn(['run', '--workspace', ws, '--gpus', '0', '--memory', '100M', '--', 'python3', '-c', 'import time; print("started", flush=True); time.sleep(3); open("notes.txt", "w").write("from the job\\n"); open("other.txt", "w").write("new\\n")'], s.env);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    await waitFor('the job to start', () => out.includes('started'), 30_000);
    writeFileSync(join(ws, 'notes.txt'), 'my edit\n');
    const future = new Date(Date.now() + 1000);
    utimesSync(join(ws, 'notes.txt'), future, future);
    const code = await new Promise<number | null>((r) => child.on('close', r));
    assert.equal(code, 0, err);
    assert.equal(readFileSync(join(ws, 'notes.txt'), 'utf8'), 'my edit\n');
    assert.equal(readFileSync(join(ws, 'other.txt'), 'utf8'), 'new\n');
    const id = /job (\w+) submitted/.exec(err)![1];
    assert.deepEqual((await job(id)).cluster!.returned, { copied: 1, keptNewer: ['notes.txt'] });
    assert.match(err, /brought back 1 file the job wrote; kept your newer edit of notes.txt/);
    assert.ok(!existsSync(join(ws, 'notes.txt.from-job')));
  });
});
