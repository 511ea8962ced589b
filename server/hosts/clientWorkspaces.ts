/**
 * Client-served workspaces: the byte streams that clients attach (`GET /v1/jobs/ID/workspace`, Upgrade: gpurun-sftp)
 * for jobs submitted with `workspaceFrom: "client"`, held until the job's mount takes one. The mount then relays the
 * GPU host's `sshfs -o passive` channel to it; the client is the SFTP server, confined to its workspace. No inbound
 * port is opened on the client's machine, and the broker never reads the files.
 */
import type { Duplex } from 'node:stream';
import { GpurunError } from '../protocol/errors.ts';

export class ClientWorkspaces {
  private readonly streams = new Map<string, Duplex>();
  private readonly waiting = new Map<string, (s: Duplex) => void>();

  /** Holds `stream` for `jobId` (or hands it to a mount already waiting). A second stream for one job is refused. */
  attach(jobId: string, stream: Duplex): void {
    if (this.streams.has(jobId)) throw new GpurunError('E_CONFLICT', `job ${jobId} already has a client serving its workspace`, { hint: 'Only the gpurun run that submitted it serves it.' });
    this.streams.set(jobId, stream);
    // A stream that closes before a mount takes it is forgotten: the mount then waits for another one.
    stream.once('close', () => this.streams.get(jobId) === stream && this.streams.delete(jobId));
    const w = this.waiting.get(jobId);
    if (w) w(stream);
  }

  /**
   * The client's stream for `jobId`, once attached; waits up to `timeoutMs`. The stream stays registered while it
   * is open (so a second client is refused), and is dropped when it closes.
   */
  take(jobId: string, timeoutMs: number): Promise<Duplex> {
    const s = this.streams.get(jobId);
    if (s && !s.destroyed) return Promise.resolve(s);
    return new Promise<Duplex>((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting.delete(jobId);
        reject(new GpurunError('E_CONFLICT', `the client did not serve the workspace within ${Math.round(timeoutMs / 1000)} s; keep gpurun run attached (without --detach) while the job runs`, {
          hint: 'The job was submitted with workspaceFrom "client": the gpurun run that submitted it serves the files and must stay connected.',
        }));
      }, timeoutMs);
      this.waiting.set(jobId, (stream) => {
        clearTimeout(t);
        this.waiting.delete(jobId);
        resolve(stream);
      });
    });
  }

  /** Whether a client stream is attached for the job now. */
  has(jobId: string): boolean {
    return this.streams.has(jobId);
  }

  /** Closes a job's stream, if any (the job has ended). */
  drop(jobId: string): void {
    this.streams.get(jobId)?.destroy();
    this.streams.delete(jobId);
  }
}
