/**
 * Text for a job's terminal: the job's raw output bytes made terminal-ready (UTF-8 decoded across chunk boundaries,
 * `\n` → `\r\n` without doubling an existing `\r\n`), and the status lines gpurun adds (queue position, where it
 * started, how it ended), each said once. Pure.
 */
import { isFinal, type Job } from '../../server/protocol/jobs.ts';
import { resourcesText } from './format.ts';

/** Turns output bytes into terminal text. One per stream; keeps state between chunks. */
export class TerminalEncoder {
  private readonly decoder = new TextDecoder('utf-8');
  private lastWasCR = false;

  write(bytes: Uint8Array): string {
    return this.crlf(this.decoder.decode(bytes, { stream: true }));
  }

  /** What is left in the decoder (an incomplete UTF-8 sequence at the very end). */
  end(): string {
    return this.crlf(this.decoder.decode());
  }

  private crlf(text: string): string {
    let out = '';
    for (const ch of text) {
      if (ch === '\n' && !this.lastWasCR) out += '\r\n';
      else out += ch;
      this.lastWasCR = ch === '\r';
    }
    return out;
  }
}

const DIM = '\x1b[2m';
const BOLD_RED = '\x1b[1;31m';
const BOLD_GREEN = '\x1b[1;32m';
const RESET = '\x1b[0m';

export function statusLine(text: string, style = DIM): string {
  return `${style}[gpurun] ${text}${RESET}\r\n`;
}

/**
 * Says what happens to a job, once per change: its queue position while queued, the host and GPUs when it starts,
 * the exit code or reason when it ends. Feed it every snapshot of the job; it returns the lines to print.
 */
/** How long a job may be queued before its terminal says it waits. */
export const QUIET_QUEUE_MS = 1000;

export class JobNarrator {
  private lastQueued = '';
  private started = false;
  private ended = false;

  /** Whether the end line was printed. */
  get done(): boolean {
    return this.ended;
  }

  /**
   * `now` (ms): a job still queued less than QUIET_QUEUE_MS after it was submitted is not said to wait (most start at
   * once); the caller feeds the job again after that long.
   */
  update(job: Job, now = Date.now()): string {
    let out = '';
    if (job.state === 'queued' && now - Date.parse(job.createdAt) >= QUIET_QUEUE_MS) {
      const q = `queued${job.queuePosition ? ` (position ${job.queuePosition} in ${job.queue})` : ` in ${job.queue}`}${job.reason ? `: ${job.reason}` : ''}`;
      if (q !== this.lastQueued) out += statusLine(q);
      this.lastQueued = q;
    }
    if (!this.started && job.host && (job.state === 'running' || job.startedAt)) {
      this.started = true;
      const gpus = job.gpuIndices.length ? `GPU ${job.gpuIndices.join(',')}` : 'no GPU';
      out += statusLine(`running on ${job.host}, ${gpus} (${resourcesText(job.resources)})`);
    }
    if (!this.ended && isFinal(job.state)) {
      this.ended = true;
      out += endLine(job);
    }
    return out;
  }
}

/** The last line of a job's terminal. */
export function endLine(job: Job): string {
  if (job.state === 'succeeded') return statusLine(`job ${job.id} succeeded (exit code ${job.exitCode ?? 0})`, BOLD_GREEN);
  const code = job.exitCode !== null ? `exit code ${job.exitCode}` : 'no exit code';
  return statusLine(`job ${job.id} ${job.state.replace('_', ' ')} (${code}): ${job.reason}`, BOLD_RED);
}
