/**
 * The data disk's free space, against the floor of `limits.minFreeDisk`. Below the floor submits are refused
 * (E_DISK_FULL, 507) while running jobs go on; /v1/health says so. statfs is cheap but is asked at most once a second,
 * except before a refusal, which always looks again.
 */
import { statfsSync } from 'node:fs';
import { GpurunError } from '../protocol/errors.ts';
import { diskFloor, formatBytes, type Limits } from '../core/limits.ts';

export interface DiskStatus {
  freeBytes: number;
  sizeBytes: number;
  floorBytes: number;
  /** Free space is below the floor. */
  low: boolean;
}

export class DiskGuard {
  private readonly dir: string;
  private readonly limits: Limits;
  private last?: { at: number; s: DiskStatus };

  constructor(dir: string, limits: Limits) {
    this.dir = dir;
    this.limits = limits;
  }

  /** `fresh`: look now, whatever the last look was. */
  status(now = Date.now(), fresh = false): DiskStatus {
    if (!fresh && this.last && now - this.last.at < 1000) return this.last.s;
    let s: DiskStatus;
    try {
      const st = statfsSync(this.dir);
      const sizeBytes = st.blocks * st.bsize;
      const freeBytes = st.bavail * st.bsize;
      const floorBytes = diskFloor(this.limits, sizeBytes);
      s = { freeBytes, sizeBytes, floorBytes, low: freeBytes < floorBytes };
    } catch {
      s = { freeBytes: 0, sizeBytes: 0, floorBytes: 0, low: false };
    }
    this.last = { at: now, s };
    return s;
  }

  /** Throws E_DISK_FULL when the disk is below its floor. */
  assertRoom(): void {
    // A refusal is never based on an old look: space freed a moment ago lets the next submit in.
    let s = this.status();
    if (s.low) s = this.status(Date.now(), true);
    if (!s.low) return;
    throw new GpurunError('E_DISK_FULL', `the broker's data disk has ${formatBytes(s.freeBytes)} free, less than its floor of ${formatBytes(s.floorBytes)}: it takes no new jobs until there is room`, {
      hint: 'Running jobs go on. Ask the broker admin to free space in its dataDir (old job logs are removed by retention.logs) or to lower limits.minFreeDisk.',
    });
  }
}
