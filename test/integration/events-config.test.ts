/** The event stream a UI follows, and a broker that refuses a bad config file with the field named. */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { JobEvent, JobState } from '../../server/protocol/jobs.ts';
import { BrokerClient } from '../../server/protocol/client.ts';
import { cleanup, createToken, gpurun, scratch, startBrokerProcess, testEnv, waitFor, type BrokerProc } from '../support/harness.ts';

describe('event stream', function () {
  this.timeout(30_000);
  let dir: string;
  let broker: BrokerProc;
  before(async () => {
    dir = scratch();
    broker = await startBrokerProcess(join(dir, 'b'), { hosts: [{ name: 'local', type: 'local', cpus: 4, memory: '4G' }] });
  });
  after(async () => {
    await broker.stop();
    cleanup(dir);
  });

  it("delivers each of the user's job changes as it happens, and nothing of other users'", async () => {
    const alice = new BrokerClient({ address: broker.url, token: await createToken(broker, 'alice') });
    const bob = new BrokerClient({ address: broker.url, token: await createToken(broker, 'bob') });
    const ac = new AbortController();
    const seen: Array<{ id: string; owner: string; state: JobState }> = [];
    const reading = (async () => {
      try {
        for await (const ev of alice.events(ac.signal) as AsyncGenerator<JobEvent>) seen.push({ id: ev.job.id, owner: ev.job.owner, state: ev.job.state });
      } catch {
        /* aborted */
      }
    })();
    await new Promise((r) => setTimeout(r, 200));
    // A folder beside the broker's (the folder above it holds the broker's data: never a workspace).
    const ws = join(dir, 'ws');
    mkdirSync(ws);
    const bobs = await bob.submit({ command: ['true'], workspace: ws, gpus: 0 });
    const mine = await alice.submit({ command: ['sh', '-c', 'exit 5'], workspace: ws, gpus: 0 });
    await waitFor('the final event', () => seen.some((e) => e.id === mine.id && e.state === 'failed'));
    ac.abort();
    await reading;
    assert.deepEqual(seen.filter((e) => e.id === mine.id).map((e) => e.state).filter((s, i, a) => a.indexOf(s) === i), ['queued', 'starting', 'running', 'failed']);
    assert.ok(!seen.some((e) => e.id === bobs.id || e.owner === 'bob'), 'no event of bob reached alice');
    await alice.close();
    await bob.close();
  });
});

describe('broker config errors', () => {
  it('refuses to start on a bad config, naming the field and what to do', async () => {
    const dir = scratch();
    const cfg = join(dir, 'broker.json');
    writeFileSync(cfg, JSON.stringify({ listen: '127.0.0.1:0', hosts: [{ name: 'gpu-1', type: 'local', memory: 'a lot' }] }));
    const r = await gpurun(['broker', '--config', cfg], testEnv(dir));
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`error: ${cfg.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: hosts\\[0\\].memory: "a lot" is not a memory size`));
    assert.match(r.stderr, /the README lists every setting/);
    writeFileSync(cfg, '{"listen": ');
    const j = await gpurun(['broker', '--config', cfg], testEnv(dir));
    assert.match(j.stderr, /is not valid JSON/);
    const m = await gpurun(['broker', '--config', join(dir, 'missing.json')], testEnv(dir));
    assert.match(m.stderr, /cannot read the config file .*missing\.json/);
    cleanup(dir);
  });
});
