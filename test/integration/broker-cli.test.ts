/**
 * The broker core through the real CLI and a real broker process: streaming, exit codes, GPUs, time limits,
 * cancel, refusals, users, log offsets. The local host gets two GPUs from an nvidia-smi stand-in.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Job } from '../../server/protocol/jobs.ts';
import { cleanup, createToken, fakeNvidiaSmi, gpurun, gpurunSpawn, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';

describe('broker and CLI (real broker process, local host)', function () {
  this.timeout(60_000);
  let dir: string;
  let broker: BrokerProc;
  let alice: NodeJS.ProcessEnv;
  let bob: NodeJS.ProcessEnv;
  let admin: NodeJS.ProcessEnv;

  before(async () => {
    dir = scratch();
    const bin = fakeNvidiaSmi(dir, [
      { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 },
      { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 },
    ]);
    broker = await startBrokerProcess(join(dir, 'broker'), { hosts: [{ name: 'local', type: 'local', cpus: 8, memory: '16G' }] }, { PATH: `${bin}:${process.env.PATH}` });
    const env = (token: string) => testEnv(join(dir, 'client'), { GPURUN_BROKER: broker.url, GPURUN_TOKEN: token });
    alice = env(await createToken(broker, 'alice'));
    bob = env(await createToken(broker, 'bob'));
    admin = env(await createToken(broker, 'root', true));
  });
  after(async () => {
    await broker?.stop();
    cleanup(dir);
  });

  const jobs = async (env: NodeJS.ProcessEnv): Promise<Job[]> => JSON.parse((await gpurun(['ls', '--all', '--json'], env)).stdout);
  const job = async (env: NodeJS.ProcessEnv, id: string): Promise<Job> => (await jobs(env)).find((j) => j.id === id)!;
  const detach = async (env: NodeJS.ProcessEnv, args: string[]): Promise<string> => {
    const r = await gpurun(['run', '--detach', ...args], env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  const finalState = (env: NodeJS.ProcessEnv, id: string) =>
    waitFor(`job ${id} to end`, async () => {
      const j = await job(env, id);
      return ['succeeded', 'failed', 'cancelled', 'timed_out', 'lost'].includes(j.state) && j;
    });

  it('streams stdout and stderr and exits 0 for a job that succeeds', async () => {
    const r = await gpurun(['run', '--gpus', '0', '--', 'sh', '-c', 'echo hello from the job; echo to stderr >&2; echo bye'], alice);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello from the job\nto stderr\nbye\n');
    assert.match(r.stderr, /gpurun: job [a-z0-9]{8} submitted \(sh, queue online\)/);
    assert.match(r.stderr, /running on local \(no GPU\)/);
  });

  it("exits with the job's own exit code and says why", async () => {
    const r = await gpurun(['run', '--gpus', '0', '--', 'sh', '-c', 'echo partial; exit 3'], alice);
    assert.equal(r.code, 3);
    assert.equal(r.stdout, 'partial\n');
    assert.match(r.stderr, /job [a-z0-9]+ failed: exited with code 3/);
  });

  it('reports a command that cannot start (exit 125)', async () => {
    const r = await gpurun(['run', '--gpus', '0', '--', 'no-such-program-xyz', '--flag'], alice);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /failed: could not start: command not found: no-such-program-xyz/);
  });

  it('passes hostile arguments through as argv, never through a shell', async () => {
    const hostile = ['$(touch /tmp/gpurun-pwned)', "'; echo injected; '", 'a b\nc', '`id`'];
    const r = await gpurun(['run', '--gpus', '0', '--', 'python3', '-c', 'import sys, json; print(json.dumps(sys.argv[1:]))', ...hostile], alice);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), hostile);
  });

  it('gives each job exactly its GPUs; two 1-GPU jobs run side by side on disjoint GPUs', async () => {
    const a = await detach(alice, ['--gpus', '1', '--', 'sh', '-c', 'echo "CVD=$CUDA_VISIBLE_DEVICES"; sleep 1']);
    const b = await detach(alice, ['--gpus', '1', '--', 'sh', '-c', 'echo "CVD=$CUDA_VISIBLE_DEVICES"; sleep 1']);
    const [ja, jb] = [await finalState(alice, a), await finalState(alice, b)];
    const seen = [(await gpurun(['logs', a], alice)).stdout, (await gpurun(['logs', b], alice)).stdout].sort();
    assert.deepEqual(seen, ['CVD=0\n', 'CVD=1\n']);
    assert.deepEqual([ja.gpuIndices, jb.gpuIndices].map((g) => g.join()).sort(), ['0', '1']);
    assert.ok(Date.parse(jb.startedAt!) < Date.parse(ja.endedAt!), 'they ran at the same time');
  });

  it('runs two jobs that together ask for more GPUs than exist one after the other', async () => {
    const a = await detach(alice, ['--gpus', '2', '--', 'sh', '-c', 'echo "CVD=$CUDA_VISIBLE_DEVICES"; sleep 1']);
    const b = await detach(alice, ['--gpus', '2', '--', 'sh', '-c', 'echo "CVD=$CUDA_VISIBLE_DEVICES"; sleep 1']);
    const [ja, jb] = [await finalState(alice, a), await finalState(alice, b)];
    assert.equal(ja.state, 'succeeded');
    assert.equal(jb.state, 'succeeded');
    assert.ok(Date.parse(jb.startedAt!) >= Date.parse(ja.endedAt!), `b started ${jb.startedAt}, a ended ${ja.endedAt}`);
    assert.equal((await gpurun(['logs', b], alice)).stdout, 'CVD=0,1\n');
  });

  it('shows the queue position and reason while a job waits', async () => {
    const holder = await detach(alice, ['--gpus', '2', '--', 'sleep', '3']);
    await waitFor('holder to run', async () => (await job(alice, holder)).state === 'running');
    const r = await gpurun(['run', '--gpus', '2', '--', 'sh', '-c', 'echo got them'], alice);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /queued \(position 1 in online\): waiting for 2 free GPUs on one host \(most free now: 0\)/);
    assert.match(r.stderr, /running on local \(GPU 0,1\)/);
    assert.equal(r.stdout, 'got them\n');
  });

  it('stops a job at its time limit: timed_out, exit 124', async () => {
    const t0 = Date.now();
    const r = await gpurun(['run', '--gpus', '0', '--time', '2s', '--', 'sh', '-c', 'echo working; sleep 10; echo never'], alice);
    assert.equal(r.code, 124);
    assert.equal(r.stdout, 'working\n');
    assert.match(r.stderr, /timed out: stopped after reaching its time limit of 2s/);
    assert.ok(Date.now() - t0 < 9000, 'stopped well before the sleep ended');
  });

  it('cancels a running job (its whole process group) and a queued one', async () => {
    const running = await detach(alice, ['--gpus', '2', '--', 'sh', '-c', 'sleep 60 & echo $!; wait']);
    const queued = await detach(alice, ['--gpus', '2', '--', 'echo', 'never runs']);
    const pidText = await waitFor('the job to print its child pid', async () => (await gpurun(['logs', running], alice)).stdout.trim());
    const grandchild = Number(pidText);
    assert.ok(grandchild > 0 && isAlive(grandchild));
    assert.equal((await job(alice, queued)).state, 'queued');

    const c1 = await gpurun(['cancel', queued], alice);
    assert.equal(c1.code, 0, c1.stderr);
    assert.equal(c1.stdout, `job ${queued} cancelled: cancelled by alice while queued\n`);
    const c2 = await gpurun(['cancel', running], alice);
    assert.equal(c2.stdout, `job ${running} cancelled: cancelled by alice\n`);
    assert.equal(isAlive(grandchild), false, 'the sleep started by the job is gone too');
    const again = await gpurun(['cancel', running], alice);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /has already ended \(cancelled\)/);
    assert.equal((await gpurun(['logs', queued], alice)).stdout, '');
  });

  it('refuses a request no host could ever run, saying what the largest host has, and stores nothing', async () => {
    const before = (await jobs(alice)).length;
    const r = await gpurun(['run', '--gpus', '8', '--', 'true'], alice);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no host can ever run this job: it asks for 8 GPUs.*the largest host, local, has 2 GPUs \(NVIDIA A100-SXM4-80GB\), 8 CPUs and 16G memory/);
    assert.match(r.stderr, /gpurun: Ask for fewer GPUs/);
    const typed = await gpurun(['run', '--gpu-type', 'H100', '--', 'true'], alice);
    assert.match(typed.stderr, /1 GPU of type H100/);
    assert.equal((await jobs(alice)).length, before);
  });

  it('answers bad requests with 4xx {code, message, hint} and changes nothing', async () => {
    const before = (await jobs(admin)).length;
    const post = (body: string, headers: Record<string, string>) => fetch(`${broker.url}/v1/jobs`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
    const auth = { authorization: `Bearer ${alice.GPURUN_TOKEN}` };
    let r = await post('{not json', auth);
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as { code: string }).code, 'E_BAD_REQUEST');
    r = await post(JSON.stringify({ command: 'rm -rf /', workspace: '/tmp' }), auth);
    assert.equal(r.status, 400);
    assert.match(((await r.json()) as { message: string }).message, /command: must be a non-empty array/);
    r = await post(JSON.stringify({ command: ['true'], workspace: '/tmp' }), {});
    assert.equal(r.status, 401);
    const body = (await r.json()) as { code: string; message: string; hint: string };
    assert.deepEqual([body.code, body.message], ['E_UNAUTHORIZED', 'this broker needs a token']);
    assert.match(body.hint, /GPURUN_TOKEN/);
    r = await post(JSON.stringify({ command: ['true'], workspace: '/tmp' }), { authorization: 'Bearer gpr_forged' });
    assert.equal(r.status, 401);
    r = await fetch(`${broker.url}/v1/nope`, { headers: auth });
    assert.equal(r.status, 404);
    // Only the local host: nothing here could mount a workspace that the client serves.
    r = await post(JSON.stringify({ command: ['true'], workspace: '/tmp', workspaceFrom: 'client', gpus: 0 }), auth);
    assert.equal(r.status, 400);
    const noMount = (await r.json()) as { message: string; hint: string };
    assert.match(noMount.message, /workspaceFrom: "client" needs a host that mounts the workspace \(an SSH host\), and this broker has none/);
    assert.match(noMount.hint, /Leave out --serve-workspace/);
    assert.equal((await jobs(admin)).length, before);
  });

  it("keeps users apart: one cannot list, read or cancel another's job; an admin sees all", async () => {
    const bobs = await detach(bob, ['--gpus', '0', '--', 'sh', '-c', 'echo secret of bob; sleep 2']);
    assert.ok(!(await jobs(alice)).some((j) => j.id === bobs), "alice's list has no job of bob's");
    assert.ok((await jobs(bob)).some((j) => j.id === bobs));
    const logs = await gpurun(['logs', bobs], alice);
    assert.equal(logs.code, 1);
    assert.equal(logs.stdout, '');
    assert.match(logs.stderr, new RegExp(`error: no job ${bobs}`));
    const cancel = await gpurun(['cancel', bobs], alice);
    assert.equal(cancel.code, 1);
    assert.match(cancel.stderr, new RegExp(`no job ${bobs}`));
    const all = await gpurun(['ls', '--all'], admin);
    assert.match(all.stdout, /^ID\s+OWNER\s+NAME\s+STATE/);
    assert.match(all.stdout, new RegExp(`${bobs}\\s+bob\\s+sh`));
    assert.equal((await finalState(bob, bobs)).state, 'succeeded', "bob's job was not cancelled by alice");
  });

  it('reads a log from any byte offset, and follows a running job', async () => {
    const text = 'α line one\nβ line two\n';
    const id = await detach(alice, ['--gpus', '0', '--', 'python3', '-c', `import time,sys; sys.stdout.write(${JSON.stringify(text.split('\n')[0] + '\n')}); sys.stdout.flush(); time.sleep(1); sys.stdout.write(${JSON.stringify(text.split('\n')[1] + '\n')})`]);
    const followed = await gpurun(['logs', '-f', id], alice);
    assert.equal(followed.stdout, text);
    const bytes = Buffer.from(text);
    for (const from of [0, 3, 12, bytes.length]) {
      const r = await gpurun(['logs', '--from', String(from), id], alice);
      assert.equal(r.stdout, bytes.subarray(from).toString(), `from ${from}`);
    }
    const past = await gpurun(['logs', '--from', '9999', id], alice);
    assert.equal(past.code, 2);
    assert.match(past.stderr, /offset 9999 is past the end of the log/);
  });

  it('shows hosts with their GPUs and which job holds each', async () => {
    const id = await detach(alice, ['--gpus', '1', '--', 'sleep', '2']);
    await waitFor('it to run', async () => (await job(alice, id)).state === 'running');
    const r = await gpurun(['hosts'], alice);
    assert.match(r.stdout, /^NAME\s+STATE\s+GPUS FREE\s+CPUS FREE\s+MEMORY FREE\s+RUNTIME\nlocal\s+up\s+1\/2\s+7\/8\s+15G\/16G\s+process\n/);
    assert.match(r.stdout, new RegExp(`local GPU 0  NVIDIA A100-SXM4-80GB  \\d+%  \\S+/80G  used by ${id}`));
    assert.match(r.stdout, /local GPU 1  NVIDIA A100-SXM4-80GB  \d+%  \S+\/80G  free/);
    await finalState(alice, id);
  });

  it('detaches on Ctrl+C without a terminal; the job goes on', async () => {
    const child = gpurunSpawn(['run', '--gpus', '0', '--', 'sh', '-c', 'echo started; sleep 2; echo finished'], alice);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    await waitFor('output', () => out.includes('started'));
    child.kill('SIGINT');
    const code = await new Promise((r) => child.on('close', r));
    assert.equal(code, 0);
    const id = /job ([a-z0-9]{8}) submitted/.exec(err)![1];
    assert.match(err, new RegExp(`detached; job ${id} goes on. Follow it again with: gpurun logs -f ${id}`));
    assert.equal((await finalState(alice, id)).state, 'succeeded');
    assert.equal((await gpurun(['logs', id], alice)).stdout, 'started\nfinished\n');
  });

  it('uses a script\'s "# gpurun:" directive, and reports a bad one with its position', async () => {
    const ws = scratch();
    writeFileSync(join(ws, 'job.py'), '# gpurun: gpus=2 time=1m queue=offline\nimport os\nprint(os.environ["CUDA_VISIBLE_DEVICES"])\n');
    writeFileSync(join(ws, 'bad.py'), 'import os\n# gpurun: gpus=lots\n');
    const r = await gpurun(['run', '--', 'python3', 'job.py'], alice, { cwd: ws });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '0,1\n');
    assert.match(r.stderr, /queue offline/);
    const b = await gpurun(['run', '--', 'python3', 'bad.py'], alice, { cwd: ws });
    assert.equal(b.code, 2);
    assert.match(b.stderr, /bad\.py:2:11: gpus: must be a whole number, got "lots"/);
    cleanup(ws);
  });
});

/** Running (a zombie — dead, not yet reaped by this container's init — counts as gone). */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}
