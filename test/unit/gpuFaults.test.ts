import assert from 'node:assert/strict';
import { healthFaults, parseGpuHealth, parseXidLines, pciKey, xidClass } from '../../server/core/xid.ts';
import { initialReach, observeReach, rebooted, unreachableSec } from '../../server/core/hostHealth.ts';
import { HostHealth, healthScript, parseHealth } from '../../server/hosts/health.ts';
import { MemoryStore } from '../../server/store/memory.ts';
import { hostsTable } from '../../server/cli/format.ts';
import type { GpuQuarantine } from '../../server/protocol/jobs.ts';

// Kernel log lines as the drivers print them (dmesg --time-format iso, journalctl -k -o short-iso, dmesg -T).
const DMESG_ISO = [
  '2026-12-01T14:02:03,123456+00:00 NVRM: Xid (PCI:0000:3b:00): 79, pid=\'<unknown>\', name=<unknown>, GPU has fallen off the bus.',
  '2026-12-01T14:02:03,200000+00:00 NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.',
  '2026-12-01T14:05:10,000001+00:00 NVRM: Xid (PCI:0000:86:00): 48, pid=2211, name=python3, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.',
].join('\n');
const JOURNAL = '2026-12-01T14:07:00+0100 gpu3 kernel: NVRM: Xid (PCI:0000:07:00): 13, pid=4321, name=python, Graphics SM Warp Exception on (GPC 0, TPC 0, SM 0): Out Of Range Address';
const DMESG_T = '[Tue Dec  1 14:02:03 2026] NVRM: Xid (PCI:0000:3b:00): 94, pid=1234, name=train, Contained: CE User Channel (0x9). RST: No, D-RST: No';

describe('GPU faults: Xid lines and nvidia-smi health', () => {
  it('classifies Xids by NVIDIA\'s catalogue: GPU faults, application errors, others', () => {
    for (const x of [48, 62, 64, 74, 79, 92, 93, 94, 95, 109, 119, 120]) assert.equal(xidClass(x), 'gpu_fault', `Xid ${x}`);
    for (const x of [13, 31, 43, 45, 68]) assert.equal(xidClass(x), 'application', `Xid ${x}`);
    assert.equal(xidClass(8), 'other');
  });

  it('normalises PCI addresses of the kernel and of nvidia-smi to one form', () => {
    assert.equal(pciKey('0000:3b:00'), '0000:3b:00');
    assert.equal(pciKey('00000000:3B:00.0'), '0000:3b:00');
    assert.equal(pciKey('3b:00.0'), '0000:3b:00');
    assert.equal(pciKey('not-a-bus'), null);
  });

  it('parses Xid lines with their GPU, code, text and time; other kernel lines are ignored', () => {
    const xs = parseXidLines(`${DMESG_ISO}\n${JOURNAL}\n${DMESG_T}\nsome other line`);
    assert.deepEqual(xs.map((x) => [x.pci, x.xid, x.at]), [
      ['0000:3b:00', 79, '2026-12-01T14:02:03.123Z'],
      ['0000:86:00', 48, '2026-12-01T14:05:10.000Z'],
      ['0000:07:00', 13, '2026-12-01T13:07:00.000Z'],
      ['0000:3b:00', 94, null],
    ]);
    assert.equal(xs[0].detail, 'GPU has fallen off the bus.');
    assert.equal(xs[2].detail, 'Graphics SM Warp Exception on (GPC 0, TPC 0, SM 0): Out Of Range Address');
  });

  it('reads nvidia-smi health: uncorrectable ECC, pending retired pages, a GPU that is lost; [N/A] is healthy', () => {
    const out = [
      '0, 00000000:07:00.0, 0, No',
      '1, 00000000:3B:00.0, 2, No',
      '2, 00000000:86:00.0, 0, Yes',
      '3, 00000000:AF:00.0, [N/A], [N/A]',
      'Unable to determine the device handle for GPU0000:D8:00.0: GPU is lost.  Reboot the system to recover this GPU',
    ].join('\n');
    const h = parseGpuHealth(out);
    assert.deepEqual(h.gpus.map((g) => [g.index, g.problem]), [
      [0, null],
      [1, '2 uncorrectable ECC errors'],
      [2, 'retired pages pending (needs a GPU reset)'],
      [3, null],
    ]);
    assert.deepEqual(h.lost, ['0000:d8:00']);
    const faults = healthFaults(h, (p) => (p === '0000:d8:00' ? 4 : undefined), '2026-12-01T14:00:00.000Z');
    assert.deepEqual(faults.map((f) => [f.gpu, f.detail]), [[1, '2 uncorrectable ECC errors'], [2, 'retired pages pending (needs a GPU reset)'], [4, 'GPU is lost (fell off the bus)']]);
  });
});

describe('host reachability with a grace', () => {
  it('is unreachable while probes fail, lost after the grace, up again at the first answer', () => {
    let r = initialReach();
    r = observeReach(r, { at: 0, ok: true, bootId: 'b1' }, 60_000);
    assert.equal(r.reach, 'up');
    r = observeReach(r, { at: 5_000, ok: false, error: 'ECONNREFUSED' }, 60_000);
    assert.deepEqual([r.reach, r.failingSince, r.lastError, r.bootId], ['unreachable', 5_000, 'ECONNREFUSED', 'b1']);
    r = observeReach(r, { at: 64_000, ok: false, error: 'timeout' }, 60_000);
    assert.equal(r.reach, 'unreachable');
    assert.equal(unreachableSec(r, 64_000), 59);
    r = observeReach(r, { at: 65_000, ok: false, error: 'timeout' }, 60_000);
    assert.equal(r.reach, 'lost');
    r = observeReach(r, { at: 70_000, ok: true, bootId: 'b2' }, 60_000);
    assert.deepEqual([r.reach, r.failingSince, r.bootId], ['up', null, 'b2']);
    assert.equal(rebooted('b1', r.bootId), true);
    assert.equal(rebooted('b2', r.bootId), false);
    assert.equal(rebooted(undefined, r.bootId), false, 'a job from before boot ids were recorded is not called rebooted');
  });
});

describe('host health readings', () => {
  const gpus = '0, 00000000:10:00.0, 0, No\n1, 00000000:11:00.0, 0, No';
  const out = (kmsg: string, boot = '3f1c2a8e-0000-4000-8000-000000000001', health = gpus) => `@@boot\n${boot}\n@@gpu\n${health}\n@@gpu_rc 0\n@@xid\n${kmsg}\n@@end\n`;
  const xid = (n: number, bus = '10') => `2026-12-01T14:02:0${n % 10},000000+00:00 NVRM: Xid (PCI:0000:${bus}:00): ${n}, pid=1, name=x, detail of ${n}`;

  it('the script is fixed and reads the boot id, nvidia-smi health and Xid lines', () => {
    assert.match(healthScript(), /boot_id/);
    assert.match(healthScript(), /NVRM: Xid/);
    const r = parseHealth(out(xid(79)));
    assert.equal(r.bootId, '3f1c2a8e-0000-4000-8000-000000000001');
    assert.equal(r.xids[0].xid, 79);
    assert.equal(r.gpu!.gpus.length, 2);
    assert.throws(() => parseHealth('@@boot\nx\n'), /did not run to its end/);
  });

  it('quarantines a GPU on a new fault-class Xid, not on old lines or application Xids; an admin or a reboot clears it', () => {
    const h = new HostHealth(60_000);
    h.reading('g', 1_000, parseHealth(out(xid(79, '11'))));
    assert.equal(h.quarantined('g').size, 0, 'lines already in the log at the first reading are history');
    h.reading('g', 2_000, parseHealth(out(`${xid(79, '11')}\n${xid(13)}`)));
    assert.equal(h.quarantined('g').size, 0, 'Xid 13 is the application\'s error');
    assert.deepEqual(h.eventsFor('g', [0], new Date(1_500).toISOString()).map((e) => [e.xid, e.cls]), [[13, 'application']]);
    h.reading('g', 3_000, parseHealth(out(`${xid(79, '11')}\n${xid(13)}\n${xid(94, '10')}`)));
    assert.deepEqual([...h.quarantined('g').entries()].map(([g, q]) => [g, q.xid]), [[0, 94]]);
    assert.ok(h.clear('g', 0));
    assert.equal(h.quarantined('g').size, 0);
    h.reading('g', 4_000, parseHealth(out(`${xid(79, '11')}\n${xid(13)}\n${xid(94, '10')}\n${xid(48, '11')}`)));
    assert.deepEqual([...h.quarantined('g').keys()], [1]);
    h.reading('g', 5_000, parseHealth(out('', '3f1c2a8e-0000-4000-8000-000000000002')));
    assert.equal(h.quarantined('g').size, 0, 'a reboot resets the GPUs');
  });

  it('keeps quarantines in its keeper: a new HostHealth over it (a broker restart) holds them until a reboot or an admin lifts them', () => {
    const keeper = new MemoryStore();
    const h = new HostHealth(60_000, keeper);
    h.reading('g', 1_000, parseHealth(out('')));
    h.reading('g', 2_000, parseHealth(out(xid(79, '11'))));
    assert.deepEqual(keeper.quarantines().map((q) => [q.host, q.gpu, q.xid, q.source, q.bootId]), [['g', 1, 79, 'xid', '3f1c2a8e-0000-4000-8000-000000000001']]);
    const after = new HostHealth(60_000, keeper);
    assert.equal(after.quarantined('g').get(1)?.xid, 79, 'held from the first moment, before any reading');
    after.reading('g', 3_000, parseHealth(out(xid(79, '11'))));
    assert.equal(after.quarantined('g').get(1)?.xid, 79, 'the same boot: still quarantined (the Xid line is history now)');
    assert.ok(after.clear('g', 1));
    assert.deepEqual(keeper.quarantines(), []);
    after.reading('g', 4_000, parseHealth(out(`${xid(79, '11')}\n${xid(48, '10')}`)));
    assert.equal(keeper.quarantines().length, 1);
    const rebooted = new HostHealth(60_000, keeper);
    rebooted.reading('g', 5_000, parseHealth(out('', '3f1c2a8e-0000-4000-8000-000000000002')));
    assert.equal(rebooted.quarantined('g').size, 0, 'the host came back with another boot id while no broker watched');
    assert.deepEqual(keeper.quarantines(), []);
  });

  it('the hosts table says under a quarantined GPU why, and how it is lifted', () => {
    const gpu = { index: 0, uuid: 'GPU-0', name: 'NVIDIA L4', memoryTotalMiB: 23034, memoryUsedMiB: 0, utilizationPct: 0 };
    const host = (quarantined: GpuQuarantine) => ({ name: 'f2', state: 'up' as const, lastError: null, runtime: 'docker', gpus: [{ ...gpu, jobId: null, quarantined }], cpus: 8, cpusUsed: 0, memoryMiB: 1024, memoryUsedMiB: 0, labels: {} });
    const xidOut = hostsTable([host({ xid: 79, detail: 'GPU has fallen off the bus.', at: '2026-12-01T14:02:03.000Z', source: 'xid' })]);
    assert.match(xidOut, /f2 GPU 0 .*quarantined \(Xid 79 at \d\d:\d\d\)\n    Xid 79: GPU has fallen off the bus\.; an admin lifts it with: gpurun hosts clear f2 0 \(a reboot of f2 lifts it too\)\n/);
    const healthOut = hostsTable([host({ detail: '3 uncorrectable ECC errors', at: '2026-12-01T14:02:03.000Z', source: 'health' })]);
    assert.match(healthOut, /quarantined \(3 uncorrectable ECC errors at \d\d:\d\d\)\n    3 uncorrectable ECC errors; lifts by itself once nvidia-smi reports it healthy\n/);
  });

  it('quarantines on nvidia-smi health and lifts it when the GPU reads healthy again', () => {
    const h = new HostHealth(60_000);
    h.reading('g', 1_000, parseHealth(out('', undefined, '0, 00000000:10:00.0, 0, No\n1, 00000000:11:00.0, 3, No')));
    assert.equal(h.quarantined('g').get(1)?.detail, '3 uncorrectable ECC errors');
    h.reading('g', 2_000, parseHealth(out('')));
    assert.equal(h.quarantined('g').size, 0);
  });
});

describe('workspace loss: control plane or not', () => {
  it('a relay stream or the serving client ending is gpurun\'s own path; a mount that stops answering on the host is not', async () => {
    const { relayDropIsControlPlane } = await import('../../server/runtimes/mounted.ts');
    const { relayEnd } = await import('../../server/hosts/mount.ts');
    assert.equal(relayDropIsControlPlane(relayEnd(null, 'read: Connection reset by peer')), true);
    assert.equal(relayDropIsControlPlane(relayEnd({ code: null, signal: 'KILL' }, '')), false, 'sshfs killed on the host');
    assert.equal(relayEnd({ code: null, signal: 'KILL' }, ''), 'sshfs on the host exited (signal KILL)');
    assert.equal(relayDropIsControlPlane('the client that served the workspace disconnected (gpurun run ended or lost its connection to the broker)'), true);
    assert.equal(relayDropIsControlPlane('the SFTP relay of this mount ended with the broker process that served it'), true);
    assert.equal(relayDropIsControlPlane('the mount /w/mnt/b/j1 on gpu1 is gone or does not answer'), false);
  });
});
