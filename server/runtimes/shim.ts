/**
 * The job shim: `node shim.js JOB_DIR`. Started detached by the process runtime, it outlives the broker.
 * It runs the job's command in a new session (its own process group), with stdout and stderr going straight to the
 * log file (the broker is not in the data path), then writes the exit status to JOB_DIR/status.json.
 * A broker that restarts reads pid.json / status.json to find the job again.
 *
 * Kept free of imports from the rest of the code base so its bundle stays tiny and it starts fast.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

interface ShimSpec {
  command: string[];
  cwd: string;
  env: Record<string, string>;
  logPath: string;
}

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: shim.js JOB_DIR\n');
  process.exit(2);
}

function writeAtomic(name: string, value: unknown): void {
  const tmp = join(dir, `.${name}.tmp`);
  try {
    writeFileSync(tmp, JSON.stringify(value), { mode: 0o600 });
  } catch {
    // The disk is full (the job's own output may have filled it): write into the space reserved at start, so the
    // broker still learns how the job ended instead of finding it "lost".
    const text = JSON.stringify(value);
    const fd = openSync(reservePath(name), 'r+');
    writeSync(fd, text.padEnd(RESERVE_BYTES).slice(0, RESERVE_BYTES), 0);
    closeSync(fd);
    renameSync(reservePath(name), join(dir, name));
    return;
  }
  renameSync(tmp, join(dir, name));
}

/** Space taken at start for each file the shim must write later (JSON padded with spaces still parses). */
const RESERVE_BYTES = 4096;
const reservePath = (name: string) => join(dir, `.${name}.reserve`);
for (const name of ['pid.json', 'status.json']) writeFileSync(reservePath(name), ' '.repeat(RESERVE_BYTES), { mode: 0o600 });

// Signals meant for the job go to its process group; the shim stays to record how it ended.
for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(s, () => {});

const spec = JSON.parse(readFileSync(join(dir, 'spec.json'), 'utf8')) as ShimSpec;
const out = openSync(spec.logPath, 'a', 0o600);
if (!existsSync(spec.cwd)) {
  writeAtomic('status.json', { exitCode: 127, signal: null, startError: `workspace folder not found: ${spec.cwd}`, endedAt: new Date().toISOString() });
  process.exit(0);
}
let done = false;
const child = spawn(spec.command[0], spec.command.slice(1), {
  cwd: spec.cwd,
  env: spec.env,
  stdio: ['ignore', out, out],
  detached: true,
});
child.on('spawn', () => {
  writeAtomic('pid.json', { shimPid: process.pid, pid: child.pid, startedAt: new Date().toISOString() });
});
child.on('error', (err: NodeJS.ErrnoException) => {
  if (done) return;
  done = true;
  const why = err.code === 'ENOENT' ? `command not found: ${spec.command[0]}` : err.code === 'EACCES' ? `permission denied: ${spec.command[0]}` : err.message;
  writeAtomic('status.json', { exitCode: 127, signal: null, startError: why, endedAt: new Date().toISOString() });
  process.exit(0);
});
child.on('exit', (code, signal) => {
  if (done) return;
  done = true;
  writeAtomic('status.json', { exitCode: code, signal, endedAt: new Date().toISOString() });
  process.exit(0);
});
