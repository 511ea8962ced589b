/**
 * Following a job's output across broker restarts and dropped connections: every byte is counted, and a broken
 * stream is asked again from the next offset, so the output has no gap and no repeat.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { GpurunError, isGpurunError } from '../protocol/errors.ts';
import type { Connection } from './connect.ts';

/** How long to keep trying to get back to a broker that went away before giving up. */
const GIVE_UP_MS = 5 * 60_000;

export async function followLogs(
  conn: Connection,
  id: string,
  from: number,
  write: (b: Buffer) => Promise<void> | void,
  opts: { signal?: AbortSignal; onReconnect?: (msg: string) => void } = {},
): Promise<number> {
  let offset = from;
  let brokenSince = 0;
  for (;;) {
    try {
      for await (const { data, next } of conn.client.logs(id, offset, { follow: true, ...(opts.signal ? { signal: opts.signal } : {}) })) {
        await write(data);
        offset = next;
        brokenSince = 0;
      }
      return offset;
    } catch (err) {
      if (opts.signal?.aborted) return offset;
      if (!(isGpurunError(err) && err.code === 'E_UNREACHABLE')) throw err;
      if (!brokenSince) {
        brokenSince = Date.now();
        opts.onReconnect?.(`lost the broker at byte ${offset}; reconnecting…`);
      }
      if (Date.now() - brokenSince > GIVE_UP_MS) {
        throw new GpurunError('E_UNREACHABLE', `lost the broker while following job ${id} and could not get back for ${GIVE_UP_MS / 60_000} minutes`, {
          hint: `The job may still run. Resume with: gpurun logs -f --from ${offset} ${id}`,
        });
      }
      await sleep(500);
      await conn.revive().catch(() => {});
    }
  }
}
