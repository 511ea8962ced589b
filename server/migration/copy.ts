/**
 * Incremental copy of one folder from a host to another, through the broker (the hosts need not reach each other):
 * both sides list their files, then the files that differ travel as one tar stream from the source's SSH channel to
 * the destination's, and files gone at the source are removed at the destination (migration/copyPlan.ts decides).
 * Run while the job still runs (a pre-copy), then again after it stopped: the second round moves only what changed.
 */
import { GpurunError } from '../protocol/errors.ts';
import { onExit, type ChannelExit } from '../hosts/ssh.ts';
import type { ClientChannel } from 'ssh2';
import { copyPlan, parseManifest, type Manifest } from './copyPlan.ts';
import type { CopyResult, HostSide } from './checkpoint.ts';

/** How long a copy's stream may go without a byte before the copy is given up. */
export const COPY_STALL_MS = 30_000;

/** The files of `dir` on `side` (made empty when missing). */
export async function listFiles(side: HostSide, dir: string): Promise<Manifest> {
  const out = await side.exec.run(['sh', '-c', 'mkdir -p "$1" && cd "$1" && find . -type f -printf "%P\\t%s\\t%T@\\n"', 'gpurun-ls', dir], `listing ${dir} on ${side.host}`, { timeoutMs: 60_000 });
  return parseManifest(out);
}

function exitOf(ch: ClientChannel): Promise<ChannelExit> {
  return new Promise((resolve) => {
    let exit: ChannelExit = { code: null, signal: null };
    onExit(ch, (e) => (exit = e));
    ch.on('close', () => resolve(exit));
  });
}

/** Copies what differs of folder `fromDir` on `from` to `toDir` on `to`. Rejects with a GpurunError on failure. */
export async function copyDir(from: HostSide, fromDir: string, to: HostSide, toDir: string, signal?: AbortSignal, stallMs = COPY_STALL_MS): Promise<CopyResult & { totalBytes: number }> {
  const began = Date.now();
  const [src, dst] = await Promise.all([listFiles(from, fromDir), listFiles(to, toDir)]);
  const plan = copyPlan(src, dst);
  if (plan.remove.length) {
    const r = await to.exec.exec(['sh', '-c', 'cd "$1" && xargs -0 rm -f --', 'gpurun-rm', toDir], { stdin: plan.remove.map((p) => `${p}\0`).join(''), timeoutMs: 60_000 });
    if (r.code !== 0) throw new GpurunError('E_INTERNAL', `removing stale files of ${toDir} on ${to.host} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
  if (plan.copy.length) {
    const reader = await from.exec.spawn(['tar', '-C', fromDir, '--format=posix', '--null', '-T', '-', '-cf', '-']);
    const writer = await to.exec.spawn(['sh', '-c', 'mkdir -p "$1" && exec tar -C "$1" -xf -', 'gpurun-untar', toDir]);
    const readEnd = exitOf(reader);
    const writeEnd = exitOf(writer);
    let errs = '';
    reader.stderr.on('data', (d: Buffer) => (errs = (errs + d.toString()).slice(-500)));
    writer.stderr.on('data', (d: Buffer) => (errs = (errs + d.toString()).slice(-500)));
    const abort = () => (reader.close(), writer.close());
    signal?.addEventListener('abort', abort);
    // A copy whose stream stops moving (a host that stopped answering, a channel lost) is given up rather than
    // waited for without end: the move then goes on from the source.
    // Not waiting for the channels' close either: a host that stopped answering may never confirm it.
    let movedAt = Date.now();
    let watch: NodeJS.Timeout | undefined;
    const stalled = new Promise<never>((_, reject) => {
      watch = setInterval(() => {
        if (Date.now() - movedAt < stallMs) return;
        abort();
        reject(new GpurunError('E_UNREACHABLE', `copying ${fromDir} from ${from.host} to ${to.host} made no progress for ${Math.round(stallMs / 1000)} s; given up`, { hint: `Check that both hosts answer over SSH; drain one that does not (gpurun drain ${from.host}).` }));
      }, Math.min(1000, stallMs));
    });
    reader.on('data', () => (movedAt = Date.now()));
    try {
      // Both channels' output is read to its end: an ssh2 channel closes only once its output has been consumed.
      writer.resume();
      reader.pipe(writer);
      reader.end(plan.copy.map((p) => `${p}\0`).join(''));
      const [re, we] = await Promise.race([Promise.all([readEnd, writeEnd]), stalled]);
      if (signal?.aborted) throw signal.reason;
      if (re.code !== 0 || we.code !== 0) {
        throw new GpurunError('E_INTERNAL', `copying ${fromDir} from ${from.host} to ${to.host} failed (tar exit ${re.code ?? re.signal}/${we.code ?? we.signal}): ${errs.trim() || '(no output)'}`);
      }
    } finally {
      clearInterval(watch);
      signal?.removeEventListener('abort', abort);
    }
  }
  return { bytes: plan.bytes, files: plan.copy.length, ms: Date.now() - began, totalBytes: plan.totalBytes };
}
