import assert from 'node:assert/strict';
import { fairOrder, fairPosition, fairPositions, type FairJob } from '../../server/core/fairness.ts';
import { schedule, type HostCapacity } from '../../server/core/scheduler.ts';

const j = (id: string, owner: string, seq: number, queue: 'online' | 'offline' = 'online'): FairJob => ({ id, owner, seq, queue });
const none = { running: new Map<string, number>() };

describe('fair order between users', () => {
  it("puts bob's single job right behind alice's first of 5,000, not behind all of them", () => {
    const queued = Array.from({ length: 5000 }, (_, i) => j(`a${i}`, 'alice', i + 1));
    queued.push(j('bob1', 'bob', 5001));
    const order = fairOrder(queued, none).map((x) => x.id);
    assert.deepEqual(order.slice(0, 3), ['a0', 'bob1', 'a1']);
    assert.equal(fairPositions(queued, none).get('bob1'), 2);
    assert.equal(fairPosition(queued[5000], queued, none), 2);
  });

  it('serves first the user who holds fewer running jobs', () => {
    const queued = [j('a1', 'alice', 1), j('a2', 'alice', 2), j('b1', 'bob', 3)];
    assert.deepEqual(fairOrder(queued, { running: new Map([['alice', 2]]) }).map((x) => x.id), ['b1', 'a1', 'a2']);
  });

  it('does not pass over a waiting user each time the previous job ends (least recently served goes first)', () => {
    // One slot: each pass starts the first job in the fair order, which then ends before the next pass.
    let queued = Array.from({ length: 50 }, (_, i) => j(`a${i}`, 'alice', i + 1));
    const served = new Map<string, number>();
    const started: string[] = [];
    for (let t = 1; t <= 3; t++) {
      if (t === 2) queued.push(j('bob1', 'bob', 100));
      const next = fairOrder(queued, { running: new Map(), served })[0];
      started.push(next.id);
      served.set(next.owner, t);
      queued = queued.filter((x) => x !== next);
    }
    assert.deepEqual(started, ['a0', 'bob1', 'a1']);
  });

  it('round-robins three users and keeps each user\'s own order; queues stay apart', () => {
    const queued = [j('a1', 'a', 1), j('a2', 'a', 2), j('a3', 'a', 3), j('b1', 'b', 4), j('b2', 'b', 5), j('c1', 'c', 6), j('o1', 'a', 7, 'offline')];
    const order = fairOrder(queued, none).map((x) => x.id);
    assert.deepEqual(order, ['a1', 'b1', 'c1', 'a2', 'b2', 'a3', 'o1']);
    const pos = fairPositions(queued, none);
    for (const q of queued) assert.equal(fairPosition(q, queued, none), pos.get(q.id), `position of ${q.id}`);
    assert.equal(pos.get('o1'), 1);
  });

  it('the scheduler starts jobs in the fair order and holds a user at the GPU cap', () => {
    const h: HostCapacity = { name: 'h', up: true, gpus: [0, 1, 2, 3].map((index) => ({ index, name: 'L4' })), cpus: 64, memoryMiB: 1e6 };
    const res = { gpus: 1, cpus: 1, memoryMiB: 1, timeLimitSec: 0 };
    const queued = ['a1', 'a2', 'a3', 'a4', 'b1'].map((id, i) => ({ ...j(id, id[0] === 'a' ? 'alice' : 'bob', i + 1), resources: res }));
    const fair = schedule([h], [], fairOrder(queued, none)).map((p) => p.jobId);
    assert.deepEqual(fair, ['a1', 'b1', 'a2', 'a3']);
    const capped = schedule([h], [], fairOrder(queued, none), { max: 2, held: new Map() }).map((p) => p.jobId);
    assert.deepEqual(capped, ['a1', 'b1', 'a2']);
  });
});
