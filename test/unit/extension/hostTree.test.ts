import assert from 'node:assert/strict';
import { hostsTable } from '../../../server/cli/format.ts';
import { drainWords } from '../../../server/protocol/jobs.ts';
import { hostItem, moveTargets } from '../../../extension/core/hostTree.ts';
import { jobItem } from '../../../extension/core/jobTree.ts';
import { host, job } from './fixtures.ts';

const NOW = Date.parse('2026-11-22T10:05:30.000Z');

describe('extension core: the hosts tree model, drain and move', () => {
  it('a host row says its free GPUs and state; its context value lets the menus offer Drain on an up host only', () => {
    const up = hostItem(host('h1', [{ name: 'L4', jobId: 'j1' }, { name: 'L4' }]));
    assert.equal(up.description, '1/2 GPUs free · up');
    assert.equal(up.contextValue, 'host-up');
    assert.equal(up.icon, 'server');
    assert.equal(hostItem(host('h2', [], 'down')).contextValue, 'host-down');
    assert.equal(hostItem(host('h2', [], 'unreachable')).icon, 'debug-disconnect');
  });

  it('a draining host says what its jobs do, in the words of the CLI hosts table, and can be undrained', () => {
    const h = { ...host('h1', [{ name: 'L4', jobId: 'j1' }, { name: 'L4', jobId: 'j2' }, { name: 'L4', jobId: 'j3' }], 'draining'), drain: { moving: 2, running: 1 } };
    const v = hostItem(h);
    assert.equal(v.description, '0/3 GPUs free · draining: 2 jobs moving, 1 running');
    assert.equal(v.contextValue, 'host-draining');
    assert.match(v.tooltip, /^h1 \(process, draining: 2 jobs moving, 1 running\)/);
    assert.match(hostsTable([h]), /^h1: draining: 2 jobs moving, 1 running$/m);
    assert.equal(drainWords({ moving: 1, running: 0 }), 'draining: 1 job moving, 0 running');
    // Draining before its jobs are counted: the state alone.
    assert.equal(hostItem(host('h1', [], 'draining')).description, '0/0 GPUs free · draining');
  });

  it('Move Job… offers any host first, then the hosts that are up other than the job’s own', () => {
    const hosts = [host('h1', [{ name: 'L4', jobId: 'j1' }]), host('h2', [{ name: 'L4' }]), host('h3', [], 'draining'), host('h4', [], 'down')];
    assert.deepEqual(moveTargets('h1', hosts), [
      { label: 'any host', description: 'the broker picks' },
      { label: 'h2', description: '1/1 GPUs free · up', to: 'h2' },
    ]);
  });

  it('a job row shows a move in progress, and its tooltip says a move given up', () => {
    const move = { state: 'moving' as const, from: 'h1', to: 'h2', cause: 'drain of h1', detail: 'checkpointing' };
    const moving = jobItem(job({ state: 'running', host: 'h1', startedAt: '2026-11-22T10:01:00.000Z', move }), NOW);
    assert.match(moving.description, /^h1 · moving to h2 · /);
    assert.equal(moving.contextValue, 'job-running');
    assert.match(moving.tooltip, /- move: moving from h1 to h2 \(drain of h1\): checkpointing/);
    const gaveUp = jobItem(job({ state: 'running', host: 'h1', startedAt: '2026-11-22T10:01:00.000Z', move: { ...move, state: 'given_up', detail: 'no checkpoint in 20 s' } }), NOW);
    assert.doesNotMatch(gaveUp.description, /moving/);
    assert.match(gaveUp.tooltip, /- move: given up from h1 to h2 \(drain of h1\): no checkpoint in 20 s/);
  });
});
