import assert from 'node:assert/strict';
import { COMPUTE_APPS_QUERY, dockerTopPidsArgs, onlineGpuLoad, parseComputeApps, parseDockerTopPids } from '../../server/migration/gpuLoad.ts';
import { overloaded, overloadWords, peakLoad } from '../../server/migration/load.ts';
import { parseNvidiaSmi } from '../../server/hosts/nvidiaSmi.ts';
import { onlineLoadWords } from '../../server/cli/format.ts';

// What nvidia-smi prints for NVIDIA_SMI_QUERY and COMPUTE_APPS_QUERY on a host with two GPUs: GPU 1 is an online
// job's (two processes of it, and one of another user outside gpurun), GPU 0 an offline job's.
const GPUS = parseNvidiaSmi(`0, GPU-0d9a8f54-5c7e-1b2a-9b3c-6f0e8a1d2c3b, NVIDIA H100 80GB HBM3, 81559, 40000, 99
1, GPU-1e0b9a65-6d8f-2c3b-ac4d-7a1f9b2e3d4c, NVIDIA H100 80GB HBM3, 81559, 70000, 93
`);
const APPS = `41021, GPU-0d9a8f54-5c7e-1b2a-9b3c-6f0e8a1d2c3b, 39500
52210, GPU-1e0b9a65-6d8f-2c3b-ac4d-7a1f9b2e3d4c, 40000
52344, GPU-1e0b9a65-6d8f-2c3b-ac4d-7a1f9b2e3d4c, 25248
9917, GPU-1e0b9a65-6d8f-2c3b-ac4d-7a1f9b2e3d4c, 4000
`;
const ONLINE_PIDS = new Set([52200, 52210, 52344]);

describe('migration: the GPU part of the online load', () => {
  it('asks nvidia-smi for pid, GPU uuid and memory per process, without a shell', () => {
    assert.deepEqual(COMPUTE_APPS_QUERY, ['nvidia-smi', '--query-compute-apps=pid,gpu_uuid,used_memory', '--format=csv,noheader,nounits']);
    assert.deepEqual(dockerTopPidsArgs('gpurun-abc'), ['docker', 'top', 'gpurun-abc', '-eo', 'pid']);
  });
  it('parses compute-apps lines; memory the driver does not report is null; other lines are skipped', () => {
    const apps = parseComputeApps(`${APPS}No running processes found\n77, GPU-abc, [N/A]\r\n`);
    assert.equal(apps.length, 5);
    assert.deepEqual(apps[1], { pid: 52210, gpuUuid: 'GPU-1e0b9a65-6d8f-2c3b-ac4d-7a1f9b2e3d4c', usedMiB: 40000 });
    assert.deepEqual(apps[4], { pid: 77, gpuUuid: 'GPU-abc', usedMiB: null });
    assert.deepEqual(parseComputeApps(''), []);
  });
  it('parses docker top pids under their header', () => {
    assert.deepEqual(parseDockerTopPids('PID\n52200\n52210\n52344\n'), [52200, 52210, 52344]);
  });
  it('counts only the GPUs the online jobs hold, and on them only their own processes\' memory', () => {
    const l = onlineGpuLoad(GPUS, [1], parseComputeApps(APPS), ONLINE_PIDS)!;
    assert.equal(l.gpu, 0.93);
    assert.equal(l.gpuMemory, (40000 + 25248) / 81559, 'the other user\'s process (pid 9917) and GPU 0 are not counted');
  });
  it('takes the GPU\'s memory in use where the per-process reading is missing', () => {
    const na = parseComputeApps('52210, GPU-1e0b9a65-6d8f-2c3b-ac4d-7a1f9b2e3d4c, [N/A]\n');
    assert.equal(onlineGpuLoad(GPUS, [1], na, ONLINE_PIDS)!.gpuMemory, 70000 / 81559);
    assert.equal(onlineGpuLoad(GPUS, [1], null, ONLINE_PIDS)!.gpuMemory, 70000 / 81559, 'compute-apps failed');
  });
  it('averages utilisation over the online jobs\' GPUs; none held, or none read: no GPU load', () => {
    const l = onlineGpuLoad(GPUS, [0, 1], [], new Set())!;
    assert.equal(l.gpu, 0.96);
    assert.equal(l.gpuMemory, 0, 'the driver lists no process of the online jobs');
    assert.equal(onlineGpuLoad(GPUS, [], null, new Set()), null);
    assert.equal(onlineGpuLoad(GPUS, [7], null, new Set()), null);
  });
  it('is over a GPU threshold for the whole window, in words; samples without a GPU reading are not over it', () => {
    const t = { cpu: 1, memory: 1, gpu: 0.9, gpuMemory: 0.8 };
    const at = (ms: number, gpu?: number, gpuMemory?: number) => ({ at: ms, cpu: 0.1, memory: 0.1, ...(gpu === undefined ? {} : { gpu, gpuMemory }) });
    const o = overloaded([at(0, 0.5, 0.1), at(5_000, 0.95, 0.1), at(10_000, 0.97, 0.1), at(15_000, 0.93, 0.1)], t, 10_000);
    assert.deepEqual(o, { what: 'gpu', value: 0.93, limit: 0.9, forMs: 10_000 });
    assert.equal(overloadWords(o!), 'online GPU use 93% > 90% for 10 s');
    const m = overloaded([at(0, 0.1, 0.85), at(12_000, 0.1, 0.86)], t, 10_000);
    assert.equal(overloadWords(m!), 'online GPU memory 86% > 80% for 12 s');
    assert.equal(overloaded([at(0, 0.95, 0.9), at(5_000), at(10_000, 0.95, 0.9), at(15_000, 0.95, 0.9)], t, 10_000), null, 'a sample with no reading restarts the window');
  });
  it('a destination\'s load is its most used resource', () => {
    assert.equal(peakLoad({ at: 0, cpu: 0.2, memory: 0.1, gpu: 0.7, gpuMemory: 0.3 }), 0.7);
    assert.equal(peakLoad(undefined), 0);
  });
  it('gpurun hosts shows the GPU load next to the CPU and memory', () => {
    const at = new Date().toISOString();
    assert.equal(onlineLoadWords({ cpu: 0.031, memory: 0.12, gpu: 0.93, gpuMemory: 0.8, at }), 'online jobs use 3% of its CPUs, 12% of its memory, 93% of their GPUs\' time, 80% of their GPUs\' memory');
    assert.equal(onlineLoadWords({ cpu: 0.94, memory: 0.12, at }), 'online jobs use 94% of its CPUs, 12% of its memory');
  });
});
