import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS } from '../../server/core/limits.ts';
import { DiskGuard } from '../../server/team/disk.ts';

describe('disk guard (free-space floor)', () => {
  it('refuses below the floor with a message, and looks again before refusing: room made a moment ago lets the next submit in', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpurun-disk-'));
    // The floor is read at each look, so raising and lowering it stands for the disk filling and being freed.
    const limits = { ...DEFAULT_LIMITS, minFreeDisk: { bytes: Number.MAX_SAFE_INTEGER, percent: 100 } };
    const guard = new DiskGuard(dir, limits);
    assert.throws(() => guard.assertRoom(), (e: { code?: string; message?: string; hint?: string }) => e.code === 'E_DISK_FULL' && /less than its floor/.test(e.message ?? '') && !!e.hint);
    assert.equal(guard.status().low, true);
    limits.minFreeDisk = { bytes: 0, percent: 0 };
    // The last look (under a second old) said low; the submit looks again and gets in.
    guard.assertRoom();
    assert.equal(guard.status().low, false);
    rmSync(dir, { recursive: true, force: true });
  });
});
