import assert from 'node:assert/strict';
import { formatDuration, formatMemory, parseDuration, parseMemory } from '../../server/core/units.ts';

describe('units', () => {
  it('parses memory sizes to MiB', () => {
    assert.equal(parseMemory('16G'), 16384);
    assert.equal(parseMemory('512M'), 512);
    assert.equal(parseMemory('1.5g'), 1536);
    assert.equal(parseMemory('16GiB'), 16384);
    assert.equal(parseMemory('2048'), 2048);
    assert.equal(parseMemory('1T'), 1048576);
    assert.equal(parseMemory(300), 300);
  });
  it('explains what is wrong with a memory size', () => {
    assert.match(parseMemory('lots') as string, /not a memory size.*16G/);
    assert.match(parseMemory('0G') as string, /more than 0/);
    assert.match(parseMemory(-1) as string, /positive/);
  });
  it('parses durations to seconds', () => {
    assert.equal(parseDuration('90s'), 90);
    assert.equal(parseDuration('30m'), 1800);
    assert.equal(parseDuration('2h'), 7200);
    assert.equal(parseDuration('1h30m'), 5400);
    assert.equal(parseDuration('1d'), 86400);
    assert.equal(parseDuration('1:30:00'), 5400);
    assert.equal(parseDuration('45:00'), 2700);
    assert.equal(parseDuration(120), 120, 'a JSON number is seconds (the API)');
    assert.equal(parseDuration('0'), 0);
  });
  it('reads a bare number as minutes and the days forms, as Slurm does', () => {
    assert.equal(parseDuration('5'), 300);
    assert.equal(parseDuration('120'), 7200);
    assert.equal(parseDuration('2-12'), 2 * 86400 + 12 * 3600);
    assert.equal(parseDuration('1-00:30'), 86400 + 1800);
    assert.equal(parseDuration('1-02:03:04'), 86400 + 7384);
    assert.match(parseDuration('1-25') as string, /not a duration/);
    assert.match(parseDuration('5 minutes') as string, /bare number of minutes/);
  });
  it('explains what is wrong with a duration', () => {
    assert.match(parseDuration('soon') as string, /not a duration.*2h/);
    assert.match(parseDuration('1:75:00') as string, /not a duration/);
    assert.match(parseDuration(1.5) as string, /whole number/);
  });
  it('formats memory and durations for people', () => {
    assert.equal(formatMemory(16384), '16G');
    assert.equal(formatMemory(1536), '1.5G');
    assert.equal(formatMemory(512), '512M');
    assert.equal(formatDuration(5400), '1h30m');
    assert.equal(formatDuration(59), '59s');
    assert.equal(formatDuration(90061), '1d1h');
  });
});

describe('terminal-safe CLI text', () => {
  it('shows control characters of job names and argv as escapes, never raw', async () => {
    const { printable, jobsTable } = await import('../../server/cli/format.ts');
    assert.equal(printable('a\x1b]0;pwned\x07b\rc\u009bd\u2028'), 'a\\x1b]0;pwned\\x07b\\x0dc\\x9bd\\u2028');
    assert.equal(printable('tab\there'), 'tab here');
    const job = { id: 'j1', owner: 'bob', name: '\x1b[2J\x1b[Hfake', state: 'running', queue: 'online', host: 'h', gpuIndices: [], resources: { gpus: 0 }, createdAt: new Date().toISOString(), startedAt: null, endedAt: null, exitCode: null, reason: 'ok\x1b[31m' };
    const out = jobsTable([job as never], false);
    assert.ok(!out.includes('\x1b'), out);
    assert.match(out, /\\x1b\[2J\\x1b\[Hfake/);
    const { showJob } = await import('../../server/cli/format.ts');
    const shown = showJob({ ...job, command: ['python3', '\x1b]0;pwned\x07x.py'], state: 'succeeded', queue: 'online', attempts: [] } as never);
    assert.ok(!shown.includes('\x1b') && !shown.includes('\x07'), shown);
    assert.match(shown, /command: {3}python3 \\x1b\]0;pwned\\x07x\.py/);
  });
});
