/**
 * Slurm backend figures, on the real Slurm of test/setup/50-slurm.sh:
 * - submit → first output line through Slurm with `gpurun run` (p50 of 10), against a baseline measured in the same
 *   run: plain `sbatch` and polling its output file for the line (what Slurm itself costs);
 * - staging a 10,000-file workspace: first time and after one edit (goal ≤ 1 s), against `cp -a` of the same tree
 *   and a bare walk (readdir + stat of every file, the floor for any size+mtime comparison).
 * `run()` is called by bench/run.ts; `node bench/slurm.ts` runs it alone (after `npm run build`).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { LocalClusterFiles } from '../server/slurm/files.ts';
import { stageWorkspace, walkWorkspace } from '../server/slurm/staging.ts';
import { compileIgnore } from '../server/slurm/ignore.ts';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist', 'cli.js');
const RUNS = 10;

function p50(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
}
const ms = (x: number) => `${x.toFixed(0)} ms`;

/** Time from spawning `argv` until `line` appears on its stdout. */
function timeToLine(argv: string[], env: NodeJS.ProcessEnv, line: string): Promise<number> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const child = spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let done = false;
    child.stdout.on('data', (d) => {
      out += d;
      if (!done && out.includes(line)) {
        done = true;
        res(performance.now() - t0);
      }
    });
    child.on('close', (code) => !done && rej(new Error(`${argv.join(' ')} exited ${code} before printing "${line}"`)));
  });
}

async function sbatchBaseline(dir: string): Promise<number> {
  const out = join(dir, `raw-${Math.random().toString(36).slice(2)}.out`);
  const t0 = performance.now();
  const r = spawnSync('sbatch', ['--parsable', '--mem=100M', `--output=${out}`, '--wrap', 'echo bench-line'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sbatch failed: ${r.stderr}`);
  for (;;) {
    if (existsSync(out) && readFileSync(out, 'utf8').includes('bench-line')) return performance.now() - t0;
    await sleep(5);
  }
}

async function submitLatency(home: string): Promise<{ gpurun: number[]; sbatch: number[] }> {
  const port = 20000 + Math.floor(Math.random() * 10000);
  mkdirSync(home, { recursive: true });
  const cfg = join(home, 'broker.json');
  writeFileSync(cfg, JSON.stringify({ listen: `127.0.0.1:${port}`, dataDir: join(home, 'data'), clusters: [{ name: 'bench', login: 'local', stagingDir: join(home, 'storage'), pollInterval: '1s' }] }));
  const env: NodeJS.ProcessEnv = { ...process.env, GPURUN_HOME: home };
  delete env.GPURUN_TOKEN;
  const broker = spawn(process.execPath, [CLI, 'broker', '--config', cfg], { env, stdio: 'ignore' });
  try {
    for (let i = 0; i < 100; i++) {
      if (await fetch(`http://127.0.0.1:${port}/v1/health`).then((r) => r.ok, () => false)) break;
      await sleep(50);
    }
    const token = spawnSync(process.execPath, [CLI, 'token', 'create', 'bench', '--config', cfg], { env, encoding: 'utf8' }).stdout.trim();
    const cenv = { ...env, GPURUN_BROKER: `http://127.0.0.1:${port}`, GPURUN_TOKEN: token };
    const ws = join(home, 'ws');
    mkdirSync(ws, { recursive: true });
    writeFileSync(join(ws, 'hello.py'), 'print("bench-line", flush=True)\n');
    const g: number[] = [];
    const b: number[] = [];
    // One warm-up of each, then alternate so that both see the same machine load.
    await timeToLine([process.execPath, CLI, 'run', '--workspace', ws, '--gpus', '0', '--memory', '100M', '--', 'python3', 'hello.py'], cenv, 'bench-line');
    await sbatchBaseline(home);
    for (let i = 0; i < RUNS; i++) {
      g.push(await timeToLine([process.execPath, CLI, 'run', '--workspace', ws, '--gpus', '0', '--memory', '100M', '--', 'python3', 'hello.py'], cenv, 'bench-line'));
      b.push(await sbatchBaseline(home));
    }
    return { gpurun: g, sbatch: b };
  } finally {
    broker.kill('SIGTERM');
  }
}

async function staging(dir: string): Promise<Record<string, number>> {
  const ws = join(dir, 'ws10k');
  for (let d = 0; d < 100; d++) {
    mkdirSync(join(ws, `pkg${d}`), { recursive: true });
    for (let f = 0; f < 100; f++) writeFileSync(join(ws, `pkg${d}`, `mod${f}.py`), `# module ${d}.${f}\nVALUE = ${d * 100 + f}\n`.repeat(4));
  }
  const files = new LocalClusterFiles();
  const staged = join(dir, 'storage', 'ws10k');
  const manifest = join(dir, 'manifest.json');
  const t0 = performance.now();
  const first = await stageWorkspace(files, ws, staged, manifest);
  const firstMs = performance.now() - t0;
  const none = performance.now();
  const unchanged = await stageWorkspace(files, ws, staged, manifest);
  const noneMs = performance.now() - none;
  writeFileSync(join(ws, 'pkg42', 'mod7.py'), 'VALUE = "edited"\n');
  const t1 = performance.now();
  const edit = await stageWorkspace(files, ws, staged, manifest);
  const editMs = performance.now() - t1;
  if (first.copied !== 10_000 || edit.copied !== 1 || unchanged.copied !== 0) throw new Error(`unexpected copy counts: ${first.copied}, ${unchanged.copied}, ${edit.copied}`);
  const c0 = performance.now();
  const cp = spawnSync('cp', ['-a', ws, join(dir, 'cp-copy')]);
  const cpMs = performance.now() - c0;
  if (cp.status !== 0) throw new Error('cp -a failed');
  const w0 = performance.now();
  await walkWorkspace(ws, compileIgnore(''));
  const walkMs = performance.now() - w0;
  return { firstMs, noneMs, editMs, cpMs, walkMs };
}

export async function run(): Promise<void> {
  console.log('## Slurm backend (bench/slurm.ts)');
  const dir = mkdtempSync(join(tmpdir(), 'gpurun-bench-slurm-'));
  try {
    const st = await staging(dir);
    console.log(`staging 10,000 files, first time:        ${ms(st.firstMs)}   (baseline cp -a of the same tree: ${ms(st.cpMs)})`);
    console.log(`staging 10,000 files, after one edit:    ${ms(st.editMs)}   (1 file copied; goal ≤ 1000 ms; bare walk of the tree: ${ms(st.walkMs)})`);
    console.log(`staging 10,000 files, nothing changed:   ${ms(st.noneMs)}`);
    const sinfo = spawnSync('sinfo', ['-h', '-o', '%t'], { encoding: 'utf8' });
    if (sinfo.status !== 0 || !/idle|mix|alloc/.test(sinfo.stdout)) {
      console.log(`submit → first output line: skipped, no Slurm here (${(sinfo.stderr || sinfo.stdout).trim().split('\n')[0]}); run test/setup/50-slurm.sh`);
      return;
    }
    const lat = await submitLatency(join(dir, 'home'));
    console.log(`submit → first output line, gpurun run via Slurm: p50 ${ms(p50(lat.gpurun))} of ${RUNS} (min ${ms(Math.min(...lat.gpurun))}, max ${ms(Math.max(...lat.gpurun))})`);
    console.log(`baseline, plain sbatch + polling its output file: p50 ${ms(p50(lat.sbatch))} of ${RUNS} (min ${ms(Math.min(...lat.sbatch))}, max ${ms(Math.max(...lat.sbatch))})`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await run();
