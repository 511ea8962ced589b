/**
 * The attached side of `gpurun run -i|-it -- CMD` (core/interactiveJob.ts): waits until the job runs, then runs CMD
 * in it through exec with this terminal, and exits with the job's exit code (CMD's). Ctrl+C while the job waits
 * cancels it: an interactive job nobody is attached to would only hold its GPUs.
 */
import { GpurunError } from '../protocol/errors.ts';
import { isFinal, type Job } from '../protocol/jobs.ts';
import { holdRunCommand } from '../protocol/interactiveJob.ts';
import type { Connection } from './connect.ts';
import { execInJob, ttyRequest } from './exec.ts';
import { exitCodeOf } from './format.ts';
import { finalJob } from './run.ts';

const POLL_MS = 200;
const QUIET_MS = 1_000;

export async function runInteractive(conn: Connection, job0: Job, command: string[], opts: { tty: boolean }, say: (s: string) => void): Promise<number> {
  const id = job0.id;
  let cancelled = false;
  const onSigint = () => {
    cancelled = true;
  };
  process.on('SIGINT', onSigint);
  let job = job0;
  const since = Date.now();
  let said = '';
  try {
    while (job.state === 'queued' || job.state === 'starting') {
      if (cancelled) {
        await conn.client.cancel(id).catch(() => {});
        say(`job ${id} cancelled before it started`);
        return 130;
      }
      if (Date.now() - since > QUIET_MS && job.reason !== said) say(`${job.state}: ${(said = job.reason)}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
      job = await conn.client.get(id);
    }
  } finally {
    process.off('SIGINT', onSigint);
  }
  if (isFinal(job.state)) {
    say(`job ${id} ${job.state.replace('_', ' ')} before the terminal could attach: ${job.reason}`);
    return exitCodeOf(job);
  }
  say(`running on ${job.host} (${job.gpuIndices.length ? `GPU ${job.gpuIndices.join(',')}` : 'no GPU'}); ${opts.tty ? 'this terminal is the job\'s (Ctrl+D or exit ends it)' : 'stdin goes to the job'}`);
  let code: number;
  try {
    code = await execInJob(conn.client, id, { command: holdRunCommand(id, command), log: true, ...(opts.tty ? ttyRequest() : {}) }, { stdin: true });
  } catch (e) {
    // Nothing runs the command: the job would hold its GPUs for nothing.
    await conn.client.cancel(id).catch(() => {});
    throw e instanceof GpurunError ? e : new GpurunError('E_INTERNAL', (e as Error).message);
  }
  const done = await finalJob(conn, id);
  if (!isFinal(done.state)) return code;
  if (done.state !== 'succeeded') say(`job ${id} ${done.state.replace('_', ' ')}: ${done.reason}`);
  return exitCodeOf(done);
}
