import assert from 'node:assert/strict';
import { containerName, dockerRunArgs, ensureNetworkArgs, envFileText, gpuSettings, isNoImage, noImageHint, parseContainerState, preparedName, userNetwork, userSubnet, type DockerRunInput } from '../../server/runtimes/docker.ts';

const base: DockerRunInput = {
  jobId: 'ab12cd34', owner: 'alice', brokerId: 'b0b0', image: 'local/python:3', command: ['python3', 'train.py', '--lr', '3e-4'],
  envFile: '/var/tmp/gpurun/run/ab12cd34/env', gpuMode: 'nvidia', gpuIndices: [2, 3], cpus: 4, memoryMiB: 16384,
  mountPoint: '/var/tmp/gpurun/mnt/ab12cd34', readOnly: false, pidsLimit: 4096,
};

function flag(args: string[], name: string): string[] {
  return args.flatMap((a, i) => (a === name ? [args[i + 1]] : []));
}

describe('dockerRunArgs', () => {
  it('builds the whole docker run', () => {
    const a = dockerRunArgs(base);
    assert.deepEqual(a.slice(0, 4), ['docker', 'run', '-d', '--init']);
    assert.deepEqual(flag(a, '--name'), ['gpurun-ab12cd34']);
    assert.deepEqual(flag(a, '--label'), ['gpurun.job=ab12cd34', 'gpurun.owner=alice', 'gpurun.broker=b0b0']);
    assert.deepEqual(flag(a, '--network'), ['gpurun-u-alice']);
    assert.deepEqual(flag(a, '--cpus'), ['4']);
    assert.deepEqual(flag(a, '--memory'), ['16384m']);
    assert.deepEqual(flag(a, '--gpus'), ['"device=2,3"']);
    assert.deepEqual(flag(a, '-v'), ['/var/tmp/gpurun/mnt/ab12cd34:/workspace']);
    assert.deepEqual(flag(a, '-w'), ['/workspace']);
    // Variables come from a file, never as -e NAME=value words (readable in /proc/*/cmdline on the host).
    assert.deepEqual(flag(a, '-e'), []);
    assert.deepEqual(flag(a, '--env-file'), ['/var/tmp/gpurun/run/ab12cd34/env']);
    assert.deepEqual(flag(a, '--security-opt'), ['no-new-privileges']);
    assert.deepEqual(flag(a, '--cap-drop'), ['ALL']);
    assert.deepEqual(flag(a, '--pids-limit'), ['4096']);
    // `--` ends the options, then the image, sh joining stderr to stdout, and the job's argv untouched.
    const img = a.indexOf('local/python:3');
    assert.deepEqual(a.slice(img - 1), ['--', 'local/python:3', '-c', 'exec "$@" 2>&1', 'gpurun-job', 'python3', 'train.py', '--lr', '3e-4']);
  });

  it('puts the image after every option, so an image like --privileged could only ever be an image name', () => {
    const a = dockerRunArgs({ ...base, image: '--privileged', command: ['--rm', '-v', '/:/host'] });
    const img = a.indexOf('--privileged');
    assert.equal(a[img - 1], '--');
    assert.equal(a.indexOf('--'), img - 1, 'no option after the end of options');
  });

  it('writes the env file: the job\'s variables without the names gpurun sets, then the GPU variables', () => {
    const text = envFileText({ WANDB_MODE: 'offline', SECRET: 'a b=c', NVIDIA_VISIBLE_DEVICES: 'all', GPURUN_GPUS: '0-7', GPURUN_ATTEMPT: '2' }, 'nvidia', [2, 3]);
    assert.equal(text, 'WANDB_MODE=offline\nSECRET=a b=c\nGPURUN_ATTEMPT=2\nCUDA_VISIBLE_DEVICES=0,1\nGPURUN_GPUS=2,3\n');
    assert.throws(() => envFileText({ TWO: 'line one\nline two' }, 'env', []), /env\.TWO: a value with a line break cannot be passed to a container/);
  });

  it('hands GPUs over by variables only in env mode, and none at all without GPUs', () => {
    assert.deepEqual(gpuSettings('env', [1, 3]), { args: [], env: { CUDA_VISIBLE_DEVICES: '1,3', NVIDIA_VISIBLE_DEVICES: '1,3', GPURUN_GPUS: '1,3' } });
    assert.deepEqual(gpuSettings('nvidia', []).args, []);
    assert.equal(gpuSettings('nvidia', []).env.NVIDIA_VISIBLE_DEVICES, 'void');
    assert.deepEqual(flag(dockerRunArgs({ ...base, gpuMode: 'env' }), '--gpus'), []);
  });

  it('a move\'s prepared container has its own name and the job\'s usual name as its alias, with the address it had', () => {
    const a = dockerRunArgs({ ...base, name: preparedName(base.jobId, 3), ip: '10.64.1.7' });
    assert.deepEqual(flag(a, '--name'), [`gpurun-${base.jobId}-3`]);
    assert.deepEqual(flag(a, '--network-alias'), [containerName(base.jobId)]);
    assert.deepEqual(flag(a, '--ip'), ['10.64.1.7']);
    assert.deepEqual(flag(dockerRunArgs(base), '--network-alias'), []);
  });

  it('mounts read-only when asked', () => {
    assert.deepEqual(flag(dockerRunArgs({ ...base, readOnly: true }), '-v'), ['/var/tmp/gpurun/mnt/ab12cd34:/workspace:ro']);
  });

  it('gives each user a network; odd user names get a safe, distinct name', () => {
    assert.equal(userNetwork('alice'), 'gpurun-u-alice');
    assert.match(userNetwork('Bob Smith'), /^gpurun-u-bob_smith-[0-9a-f]{8}$/);
    assert.notEqual(userNetwork('Bob Smith'), userNetwork('bob_smith'));
    assert.deepEqual(ensureNetworkArgs('alice').slice(-3), ['gpurun-u-alice', 'alice', userSubnet('alice')]);
    assert.equal(containerName('x'), 'gpurun-x');
  });

  it('parses docker inspect State', () => {
    // Captured: docker inspect --format '{{json .State}}' of a container killed by the OOM killer.
    const s = parseContainerState('{"Status":"exited","Running":false,"Paused":false,"Restarting":false,"OOMKilled":true,"Dead":false,"Pid":0,"ExitCode":137,"Error":"","StartedAt":"2026-11-22T10:40:01.1Z","FinishedAt":"2026-11-22T10:40:02.5Z"}');
    assert.deepEqual(s, { running: false, paused: false, exitCode: 137, oomKilled: true, finishedAt: '2026-11-22T10:40:02.5Z', error: '', removing: false });
    // A container that `docker rm -f` is taking away.
    assert.equal(parseContainerState('{"Status":"removing","Running":false,"ExitCode":137}').removing, true);
    assert.equal(parseContainerState('{"Status":"dead","Running":false,"Dead":true,"ExitCode":137}').removing, true);
    assert.equal(parseContainerState('{"Status":"paused","Running":true,"Paused":true,"ExitCode":0}').paused, true);
    assert.equal(parseContainerState('{"Running":true,"ExitCode":0}').running, true);
  });
});

describe('a missing image', () => {
  it('is told apart from other docker run failures', () => {
    assert.ok(isNoImage("Unable to find image 'nosuch/image:1' locally\ndocker: Error response from daemon: pull access denied for nosuch/image, repository does not exist or may require 'docker login'.\nRun 'docker run --help' for more information"));
    assert.ok(!isNoImage('docker: Error response from daemon: Conflict. The container name is already in use.'));
  });
  it('says what to do and lists the images the host has', () => {
    assert.equal(noImageHint('nosuch/image:1', 'uxhost', 'local/python:3\nlocal/busybox:1\n<none>:<none>\n'), "Pull or build it on uxhost (or ask the host's admin to), or pick another with --image. Images on uxhost: local/python:3, local/busybox:1.");
    assert.equal(noImageHint('x', 'h', ''), "Pull or build it on h (or ask the host's admin to), or pick another with --image. h has no images yet.");
    assert.equal(noImageHint('x', 'h'), "Pull or build it on h (or ask the host's admin to), or pick another with --image.");
  });
});

describe('the user network for moved jobs', () => {
  it('has the same subnet for a user on every host, a /24 in 10.64.0.0/10', () => {
    assert.equal(userSubnet('alice'), userSubnet('alice'));
    assert.match(userSubnet('alice'), /^10\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d{1,3}\.0\/24$/);
    assert.notEqual(userSubnet('alice'), userSubnet('bob'));
  });
  it('a moved job asks for its address again; others let Docker pick', () => {
    const base = { jobId: 'j1', owner: 'alice', brokerId: 'b', image: 'img', command: ['x'], envFile: '/e', gpuMode: 'env' as const, gpuIndices: [], cpus: 1, memoryMiB: 100, mountPoint: '/m', readOnly: false, pidsLimit: 64 };
    assert.ok(!dockerRunArgs(base).includes('--ip'));
    const a = dockerRunArgs({ ...base, ip: '10.70.3.5', checkpointDir: '/w/checkpoints/j1' });
    assert.equal(a[a.indexOf('--ip') + 1], '10.70.3.5');
    assert.ok(a.includes('/w/checkpoints/j1:/gpurun/checkpoint'));
    assert.ok(a.indexOf('--ip') < a.indexOf('--'), 'the address is an option of docker, before the image');
  });
});
