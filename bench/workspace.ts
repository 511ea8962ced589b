/**
 * The mounted workspace as jobs use it, on real parts over loopback (sshd hosts on 127.0.7.10–15, Docker, sshfs),
 * each figure against local disk measured in the same run (a container with a plain bind mount of the folder):
 *   1. importing 2,000 small modules: first run of a workspace on a host, and a later run;
 *   2. importing 2,000 modules spread over a 20,000-file virtualenv, run by the venv's own python; and the same with
 *      a 2 MB binary in each package (as a real venv has its .so files), which leaves the `opaque` layout no
 *      folder to mark opaque;
 *   3. start time with a 1 GB workspace / with a 1 MB one;
 *   4. bytes the broker sends for a job that reads 10 MB of a 5 GB file;
 *   5. edit-to-visible: an edit on the developer's disk seen by a running job, a job's write seen on the disk.
 * For the plain relay mount (sshfs) and the snapshot mount (`mount.snapshot`) in both layouts (`names`, the default
 * where the kernel has data-only overlay layers, and `opaque`); and for the direct transport (the host's own sshfs to
 * the developer's machine, here an sshd on 127.0.7.13 serving `gpurun sftp-serve`), plain and with the snapshot;
 * and for a workspace the client serves (`gpurun serve-workspace`, relayed by the broker), plain and with the snapshot. Each job's figure is taken against local disk
 * measured right after it (the machine is shared: pairs keep its load alike on both sides). `npm run bench -- workspace`.
 * Needs root, sshd, sshfs, Docker and local/python:3 (test/setup/30-ssh-docker.sh).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, NODE, createToken, scratch, startBrokerProcess, cleanup, type BrokerProc } from '../test/support/harness.ts';
import { bytesSentFrom, bytesSentTo, makeSshHosts, sshHostsMissing } from '../test/support/sshHosts.ts';
import { listEnv } from './_support.ts';

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x: number) => `${x.toFixed(0)} ms`;
const ratio = (x: number, base: number, goal: number) => `×${(x / base).toFixed(2)} (goal ≤ ${goal}: ${x / base <= goal ? 'met' : 'NOT met'})`;

/** `n` modules in pkg/, and imp.py that imports them and prints the time taken. */
function makePackage(dir: string, n: number): void {
  mkdirSync(join(dir, 'pkg'), { recursive: true });
  writeFileSync(join(dir, 'pkg', '__init__.py'), '');
  for (let i = 0; i < n; i++) writeFileSync(join(dir, 'pkg', `m${String(i).padStart(4, '0')}.py`), `X = ${i}\ndef f(a):\n    return a + X\n`);
  writeFileSync(join(dir, 'imp.py'), `import time, importlib\nt = time.perf_counter()\nfor i in range(${n}):\n    importlib.import_module(f"pkg.m{i:04d}")\nprint(f"IMPORT_MS {(time.perf_counter() - t) * 1000:.1f}")\n`);
}

/** A virtualenv of 100 packages × 200 modules (20,000 files); venvimp.py imports 20 modules of each. */
function makeVenv(dir: string): void {
  const sp = join(dir, '.venv', 'lib', 'python3.11', 'site-packages');
  mkdirSync(join(dir, '.venv', 'bin'), { recursive: true });
  symlinkSync('/usr/bin/python3', join(dir, '.venv', 'bin', 'python3'));
  writeFileSync(join(dir, '.venv', 'pyvenv.cfg'), 'home = /usr/bin\ninclude-system-site-packages = false\n');
  for (let p = 0; p < 100; p++) {
    const pd = join(sp, `vp${p}`);
    mkdirSync(pd, { recursive: true });
    writeFileSync(join(pd, '__init__.py'), '');
    for (let i = 0; i < 199; i++) writeFileSync(join(pd, `m${i}.py`), `X = ${i}\n`);
  }
  writeFileSync(join(dir, 'venvimp.py'), 'import time, importlib\nt = time.perf_counter()\nfor p in range(100):\n    for i in range(20):\n        importlib.import_module(f"vp{p}.m{i}")\nprint(f"IMPORT_MS {(time.perf_counter() - t) * 1000:.1f}")\n');
}

function importMs(out: string): number {
  const m = /IMPORT_MS ([\d.]+)/.exec(out);
  if (!m) throw new Error(`no timing in: ${out}`);
  return Number(m[1]);
}

/** The command timed in a container over a plain bind mount of `dir` (local disk). */
function inContainer(dir: string, cmd: string[]): string {
  const r = spawnSync('docker', ['run', '--rm', '-e', 'PYTHONDONTWRITEBYTECODE=1', '-v', `${dir}:/workspace`, '-w', '/workspace', 'local/python:3', ...cmd], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout;
}

export async function run(): Promise<void> {
  const missing = sshHostsMissing();
  if (missing) {
    console.log(`bench/workspace: skipped: ${missing}`);
    return;
  }
  const dir = scratch('gpurun-bench-ws-');
  const set = await makeSshHosts(join(dir, 'hosts'), [
    { name: 'plain', address: '127.0.7.10', gpus: [{ name: 'NVIDIA A100', memoryMiB: 81920 }] },
    { name: 'snap', address: '127.0.7.11', gpus: [{ name: 'NVIDIA L4', memoryMiB: 23034 }] },
    { name: 'opaque', address: '127.0.7.12', gpus: [{ name: 'NVIDIA T4', memoryMiB: 15360 }] },
    { name: 'dev', address: '127.0.7.13', gpus: [] },
    { name: 'dplain', address: '127.0.7.14', gpus: [{ name: 'NVIDIA H100', memoryMiB: 81559 }] },
    { name: 'dsnap', address: '127.0.7.15', gpus: [{ name: 'Tesla V100', memoryMiB: 16384 }] },
  ]);
  const common = { type: 'ssh', user: 'root', port: 2222, identityFile: set.clientKey, knownHosts: set.knownHosts, gpuMode: 'env', workDir: join(dir, 'hostwork') };
  // The developer's machine as the direct hosts reach it: its host key known to them.
  const devKnown = join(dir, 'hosts', 'known_hosts_on_gpu_hosts');
  writeFileSync(devKnown, `${set.hosts[3].knownHostsLine}\n`);
  const direct = { transport: 'direct', target: 'root@127.0.7.13:2222', identityFile: set.clientKey, knownHosts: devKnown, sftpServer: `${NODE} ${CLI} sftp-serve` };
  let broker: BrokerProc | undefined;
  try {
    broker = await startBrokerProcess(join(dir, 'home'), {
      hosts: [
        { ...common, name: 'plain', address: '127.0.7.10', mount: { transport: 'relay', snapshot: false } },
        { ...common, name: 'snap', address: '127.0.7.11', mount: { transport: 'relay', snapshot: true } },
        { ...common, name: 'opaque', address: '127.0.7.12', mount: { transport: 'relay', snapshot: 'opaque' } },
        { ...common, name: 'dplain', address: '127.0.7.14', mount: direct },
        { ...common, name: 'dsnap', address: '127.0.7.15', mount: { ...direct, snapshot: true } },
      ],
      defaults: { image: 'local/python:3', gpus: 1, memory: '1G' },
    });
    const token = await createToken(broker, 'bench');
    const url = broker.url;
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    // cplain, csnap: the workspace served by the client (`gpurun serve-workspace ID`, as the VS Code window does for a
    // team broker), relayed to the plain and the snapshot host.
    type Mode = 'plain' | 'snap' | 'opaque' | 'dplain' | 'dsnap' | 'cplain' | 'csnap';
    const gpu = (m: Mode) => ({ plain: 'A100', snap: 'L4', opaque: 'T4', dplain: 'H100', dsnap: 'V100', cplain: 'A100', csnap: 'L4' })[m];
    const label = (m: Mode) =>
      ({ plain: 'relay  sshfs           ', snap: 'relay  snapshot names  ', opaque: 'relay  snapshot opaque ', dplain: 'direct sshfs           ', dsnap: 'direct snapshot names  ', cplain: 'client sshfs           ', csnap: 'client snapshot names  ' })[m];
    /** Plain sshfs is slow and the same every run: one workspace and one later run of it are enough. */
    const plainMode = (m: Mode) => m === 'plain' || m === 'dplain' || m === 'cplain';
    const clientMode = (m: Mode) => m === 'cplain' || m === 'csnap';
    const cliEnv = { ...process.env, GPURUN_HOME: join(dir, 'cli-home'), GPURUN_BROKER: url, GPURUN_TOKEN: token };
    /** Submits, follows the output to the end; returns it and the time to its first line. */
    const job = async (m: Mode, ws: string, command: string[], onOutput?: (out: string) => void): Promise<{ out: string; firstMs: number }> => {
      const t0 = performance.now();
      const r = await fetch(`${url}/v1/jobs`, { method: 'POST', headers, body: JSON.stringify({ command, workspace: ws, gpuType: gpu(m), env: { PYTHONDONTWRITEBYTECODE: '1' }, ...(clientMode(m) ? { workspaceFrom: 'client' } : {}) }) });
      const { id } = (await r.json()) as { id: string };
      // The client that serves the files; it ends with the job.
      const server = clientMode(m) ? spawn(NODE, [CLI, 'serve-workspace', id], { env: cliEnv, stdio: 'ignore' }) : undefined;
      const logs = await fetch(`${url}/v1/jobs/${id}/logs?offset=0&follow=1`, { headers });
      const reader = logs.body!.getReader();
      let out = '';
      let firstMs = 0;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        out += Buffer.from(value).toString();
        onOutput?.(out);
        if (!firstMs && out.includes('\n')) firstMs = performance.now() - t0;
      }
      if (server && server.exitCode === null) await new Promise((r) => server.once('close', r));
      return { out, firstMs };
    };
    // WORKSPACE_MODES: which mounts run (plain, snap, opaque, dplain, dsnap, cplain, csnap; all by default).
    const allModes: Mode[] = ['plain', 'snap', 'opaque', 'dplain', 'dsnap', 'cplain', 'csnap'];
    const asked = (process.env.WORKSPACE_MODES ?? '').split(',').filter(Boolean);
    const unknown = asked.filter((m) => !allModes.includes(m as Mode));
    if (unknown.length) throw new Error(`WORKSPACE_MODES: no mode ${unknown.join(', ')}; the modes are ${allModes.join(', ')}`);
    const modes = asked.length ? (asked as Mode[]) : allModes;
    // WORKSPACE_PARTS: which parts run (1 imports, 2 virtualenv, 3 start, 4 partial read, 5 edit-to-visible).
    const parts = listEnv('WORKSPACE_PARTS', [1, 2, 3, 4, 5]);

    /**
     * `cmd` as a job on fresh copies of `src` (so each snapshot's first run has an empty cache), each run paired with
     * a local-disk run right after it: the first run of median ratio over `copies` copies, and the run of median
     * ratio among `later` more runs on the last copy.
     */
    const imports = async (m: Mode, src: string, name: string, cmd: string[], copies: number, later: number) => {
      type Pair = { j: number; l: number };
      const median = (xs: Pair[]) => [...xs].sort((a, b) => a.j / a.l - b.j / b.l)[Math.floor(xs.length / 2)];
      const pair = async (ws: string): Promise<Pair> => {
        const j = importMs((await job(m, ws, cmd)).out);
        const l = importMs(inContainer(src, cmd));
        return { j, l };
      };
      const firsts: Pair[] = [];
      let ws = '';
      for (let c = 0; c < copies; c++) {
        ws = join(dir, `${name}-${m}-${c}`);
        cpSync(src, ws, { recursive: true, verbatimSymlinks: true });
        firsts.push(await pair(ws));
      }
      const rest: Pair[] = [];
      for (let i = 0; i < later; i++) rest.push(await pair(ws));
      const first = median(firsts);
      const mid = median(rest);
      const fig = (x: { j: number; l: number }, goal: number) => `${ms(x.j)} = ${ratio(x.j, x.l, goal)} (local ${ms(x.l)})`;
      console.log(`  ${label(m)}: first run ${fig(first, 1.5)}; later runs ${fig(mid, 1.2)}`);
    };

    // 1. 2,000 modules.
    if (parts.includes(1)) {
      const pkg = join(dir, 'ws-pkg');
      makePackage(pkg, 2000);
      const local = p50([0, 1, 2].map(() => importMs(inContainer(pkg, ['python3', 'imp.py']))));
      console.log(`workspace: importing 2,000 small modules; baseline: local disk ${ms(local)}; snapshot: first runs the median of 3 workspaces, later runs the median of 5`);
      for (const m of modes) await imports(m, pkg, 'ws-pkg', ['python3', 'imp.py'], plainMode(m) ? 1 : 3, plainMode(m) ? 1 : 5);
    }

    // 2. a 20,000-file virtualenv, run by its own python; then the same with a large file in each package.
    if (parts.includes(2)) {
      const venv = join(dir, 'ws-venv');
      makeVenv(venv);
      const vlocal = p50([0, 1, 2].map(() => importMs(inContainer(venv, ['.venv/bin/python3', 'venvimp.py']))));
      console.log(`workspace: 2,000 imports from a 20,000-file virtualenv (.venv/bin/python3); baseline: local disk ${ms(vlocal)}; snapshot: first runs the median of 3 workspaces, later runs the median of 5`);
      for (const m of modes) await imports(m, venv, 'ws-venv', ['.venv/bin/python3', 'venvimp.py'], plainMode(m) ? 1 : 3, plainMode(m) ? 1 : 5);
      const venvSo = join(dir, 'ws-venv-so');
      makeVenv(venvSo);
      for (let p = 0; p < 100; p++) writeFileSync(join(venvSo, '.venv', 'lib', 'python3.11', 'site-packages', `vp${p}`, '_native.so'), Buffer.alloc(2 << 20, p));
      console.log('workspace: the same virtualenv with a 2 MB binary in each package (snapshot layouts only; medians as above):');
      for (const m of modes.filter((x) => !plainMode(x))) await imports(m, venvSo, 'ws-venv-so', ['.venv/bin/python3', 'venvimp.py'], 3, 5);
    }

    // 3. start: 1 GB workspace (one 900 MB file and small ones) against a 1 MB one.
    if (parts.includes(3)) {
      const small = join(dir, 'ws-1mb');
      const big = join(dir, 'ws-1gb');
      mkdirSync(small);
      mkdirSync(big);
      writeFileSync(join(small, 'data.bin'), Buffer.alloc(1 << 20, 7));
      execFileSync('fallocate', ['-l', '900M', join(big, 'dataset.bin')]);
      makePackage(big, 200);
      makePackage(small, 200);
      console.log('workspace: submit → first output line, 1 GB workspace / 1 MB one, p50 of 5 (goal ≤ 1.2):');
      for (const m of modes) {
        await job(m, small, ['echo', 'first line']);
        const firstLines = async (ws: string) => {
          const o: number[] = [];
          for (let i = 0; i < 5; i++) o.push((await job(m, ws, ['echo', 'first line'])).firstMs);
          return p50(o);
        };
        const s = await firstLines(small);
        const g = await firstLines(big);
        console.log(`  ${label(m)}: ${ms(g)} / ${ms(s)} = ${(g / s).toFixed(2)}`);
      }
    }

    // 4. a job that reads 10 MB of a 5 GB file (sparse on the developer's disk).
    if (parts.includes(4)) {
      const huge = join(dir, 'ws-5gb');
      mkdirSync(huge);
      execFileSync('truncate', ['-s', '5G', join(huge, 'huge.bin')]);
      console.log('workspace: a job reads 10 MB at offset 2 GB of a 5 GB file; bytes sent to the host meanwhile (on the wire; relay: by the broker, direct: by the developer\'s sshd):');
      for (const m of modes) {
        const sent = () => (m === 'dplain' || m === 'dsnap' ? bytesSentFrom('127.0.7.13') : bytesSentTo({ plain: '127.0.7.10', snap: '127.0.7.11', opaque: '127.0.7.12', cplain: '127.0.7.10', csnap: '127.0.7.11' }[m]));
        // Read while the job still runs: a direct mount's connection closes with the job's mount.
        const before = sent();
        let after = 0;
        await job(m, huge, ['sh', '-c', 'dd if=huge.bin of=/dev/null bs=1M skip=2048 count=10 2>&1 | tail -1; sleep 2'], (out) => {
          if (!after && /copied/.test(out)) after = sent();
        });
        const moved = after - before;
        console.log(`  ${label(m)}: ${(moved / 1e6).toFixed(1)} MB (goal about 10 MB)`);
      }
    }

    // 5. edit-to-visible, both ways (one clock: the hosts are this machine).
    if (parts.includes(5)) {
      console.log('workspace: edit-to-visible (goal: an edit on the dev disk ≤ 2 s in the job; a job\'s write ≤ 1 s on the dev disk):');
      for (const m of modes) {
        const ws = join(dir, `ws-edit-${m}`);
        mkdirSync(ws);
        writeFileSync(join(ws, 'edit.txt'), 'v0\n');
        const script = [
          'import time, os',
          'print("ready", flush=True)',
          'while open("edit.txt").read() != "v1\\n": time.sleep(0.01)',
          'print(f"SEEN {time.time()}", flush=True)',
          'open("fromjob.txt", "w").write("done\\n")',
          'print(f"WROTE {time.time()}", flush=True)',
          'time.sleep(3)',
        ].join('\n');
        let t0 = 0;
        const running = job(m, ws, ['python3', '-c', script], (out) => {
          if (t0 || !out.includes('ready')) return;
          t0 = Date.now() / 1000;
          writeFileSync(join(ws, 'edit.txt'), 'v1\n');
        });
        let back = 0;
        for (let i = 0; i < 3000 && !back; i++) {
          if (existsSync(join(ws, 'fromjob.txt')) && readFileSync(join(ws, 'fromjob.txt'), 'utf8') === 'done\n') back = Date.now() / 1000;
          else await new Promise((r) => setTimeout(r, 10));
        }
        const out = (await running).out;
        const seen = Number(/SEEN ([\d.]+)/.exec(out)?.[1] ?? NaN);
        const wrote = Number(/WROTE ([\d.]+)/.exec(out)?.[1] ?? NaN);
        const edit = Number.isFinite(seen) ? ms((seen - t0) * 1000) : `not seen (the job printed: ${JSON.stringify(out.slice(-300))})`;
        const write = Number.isFinite(wrote) && back ? ms((back - wrote) * 1000) : 'not on the dev disk within 30 s';
        console.log(`  ${label(m)}: dev edit → job ${edit}; job write → dev disk ${write}`);
      }
    }
  } catch (e) {
    // What the broker said last, for a run that failed.
    console.log(`  the broker's log ends:\n${broker?.log().split('\n').slice(-25).join('\n')}`);
    throw e;
  } finally {
    await broker?.stop();
    await set.stopAll();
    for (const f of ['ws-1gb', 'ws-5gb']) rmSync(join(dir, f), { recursive: true, force: true });
    cleanup(dir);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
