/**
 * `--notify`: when a job ends, a terminal bell and, where `notify-send` is on PATH, a desktop notification.
 * With `--detach`, a background `gpurun wait --notify ID` (started here, not waited for) does it when the job ends.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Job } from '../protocol/jobs.ts';

/** The first executable `name` on PATH, if any. */
export function onPath(name: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** The notification's title and body for a job that ended. Pure. */
export function notifyText(job: Job): { title: string; body: string } {
  const state = job.state.replace('_', ' ');
  return { title: `gpurun: ${job.name} ${state}`, body: `job ${job.id} ${state}${job.state === 'succeeded' ? '' : `: ${job.reason}`}` };
}

export function notifyEnd(job: Job): void {
  process.stderr.write('\x07');
  const ns = onPath('notify-send');
  if (!ns) return;
  const { title, body } = notifyText(job);
  const child = spawn(ns, ['--app-name=gpurun', title, body], { stdio: 'ignore', detached: true });
  child.on('error', () => {});
  child.unref();
}

export function spawnNotifyWaiter(id: string, broker: string | undefined): void {
  const cli = fileURLToPath(new URL('./cli.js', import.meta.url));
  // The bell goes to the terminal; stderr that is a pipe or file is not handed on, so whatever reads it (a pipe, a
  // script capturing it) sees its end when `gpurun run -d` returns, not when the job ends.
  const child = spawn(process.execPath, [cli, 'wait', '--notify', '--quiet', ...(broker ? ['--broker', broker] : []), id], { stdio: ['ignore', 'ignore', process.stderr.isTTY ? 'inherit' : 'ignore'], detached: true });
  child.unref();
}
