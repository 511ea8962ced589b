import assert from 'node:assert/strict';
import { checkSubmit, DEFAULT_LIMITS, diskFloor, envBytes, GiB, parseBytes, SlidingWindow } from '../../server/core/limits.ts';
import { validateConfig } from '../../server/config.ts';

describe('limits', () => {
  it('parses sizes and names bad ones', () => {
    assert.equal(parseBytes('64K'), 65536);
    assert.equal(parseBytes('1G'), GiB);
    assert.equal(parseBytes(10), 10);
    assert.match(String(parseBytes('lots')), /is not a size/);
    assert.match(String(parseBytes('9'.repeat(400))), /too large/);
  });

  it('the disk floor is the smaller of bytes and percent', () => {
    assert.equal(diskFloor(DEFAULT_LIMITS, 100 * GiB), GiB);
    assert.equal(diskFloor(DEFAULT_LIMITS, 8 * 1024 * 1024), Math.floor(8 * 1024 * 1024 * 0.05));
  });

  it('refuses with 429 and 413 and says which limit and what to do', () => {
    const l = { ...DEFAULT_LIMITS, maxQueuedJobs: 2, submitsPerMinute: 3, maxRunningGpus: 4 };
    const ok = { gpus: 1, envBytes: 10 };
    checkSubmit('alice', { queued: 1 }, 2, l, ok);
    assert.throws(() => checkSubmit('alice', { queued: 2 }, 0, l, ok), (e: Error & { status: number; hint: string }) => e.status === 429 && /already has 2 queued jobs/.test(e.message) && /maxQueuedJobs/.test(e.hint));
    assert.throws(() => checkSubmit('alice', { queued: 0 }, 3, l, ok), (e: Error & { status: number }) => e.status === 429 && /3 jobs in the last minute/.test(e.message));
    assert.throws(() => checkSubmit('alice', { queued: 0 }, 0, l, { gpus: 5, envBytes: 0 }), /at most 4 at once/);
    assert.throws(() => checkSubmit('alice', { queued: 0 }, 0, l, { gpus: 0, envBytes: 70_000 }), (e: Error & { status: number }) => e.status === 413 && /64 KiB/.test(e.message));
    assert.equal(envBytes({ A: 'xy' }), 5);
  });

  it('counts events in a sliding minute', () => {
    const w = new SlidingWindow(60_000);
    for (let i = 0; i < 5; i++) w.hit('k', 1000 + i);
    assert.equal(w.count('k', 2000), 5);
    assert.equal(w.count('k', 61_002), 2);
    assert.equal(w.retryAfterMs('k', 61_002), 1);
    assert.equal(w.count('k', 70_000), 0);
  });

  it('config: limits, retention and tls, with errors naming the field', () => {
    const c = validateConfig({ limits: { maxQueuedJobs: 5, maxLogBytes: '10M', minFreeDisk: '10%' }, retention: { logs: '7d' }, tls: false }, 'b.json', '/', '/d');
    assert.equal(c.limits.maxQueuedJobs, 5);
    assert.equal(c.limits.maxLogBytes, 10 * 1024 * 1024);
    assert.deepEqual(c.limits.minFreeDisk.percent, 10);
    assert.equal(c.retentionSec, 7 * 86400);
    assert.deepEqual(c.tls, { mode: 'off' });
    assert.deepEqual(validateConfig({}, 'b.json', '/', '/d').tls, { mode: 'auto' });
    assert.throws(() => validateConfig({ limits: { maxQueued: 1 } }, 'b.json', '/', '/d'), /limits\.maxQueued: unknown setting/);
    assert.throws(() => validateConfig({ limits: { maxLogBytes: 'big' } }, 'b.json', '/', '/d'), /limits\.maxLogBytes: "big" is not a size/);
    assert.throws(() => validateConfig({ tls: { cert: 'c.pem' } }, 'b.json', '/', '/d'), /tls\.key: must be the path/);
  });
});
