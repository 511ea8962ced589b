import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { parseProbe, probeScript } from '../../server/hosts/probe.ts';

// Captured from a test host (nvidia-smi stand-in with 2×A100, Docker 26.1.5, sshfs 3.7.3).
const CAPTURED = `@@gpus
0, GPU-00000000-stand-in-0000-000000000000, NVIDIA A100-SXM4-80GB, 81920, 0, 0
1, GPU-00000001-stand-in-0000-000000000000, NVIDIA A100-SXM4-80GB, 81920, 3, 7
@@gpus_rc 0
@@nproc
2
@@mem
MemTotal:       24628832 kB
@@docker
26.1.5+dfsg1
@@docker_rc 0
@@images
local/python:3
local/busybox:1
<none>:<none>
registry.example.com:5000/team/train:v2
local/python:3
@@sshfs
SSHFS version 3.7.3
@@sshfs_rc 0
@@proc
@@proc_rc 0
@@end
`;

describe('host probe', () => {
  it('parses a host with GPUs, Docker and sshfs', () => {
    const p = parseProbe(CAPTURED);
    assert.equal(p.gpus.length, 2);
    assert.equal(p.gpus[1].name, 'NVIDIA A100-SXM4-80GB');
    assert.equal(p.gpus[1].utilizationPct, 7);
    assert.equal(p.cpus, 2);
    assert.equal(p.memoryMiB, 24051);
    assert.equal(p.docker, '26.1.5+dfsg1');
    assert.equal(p.sshfs, 'SSHFS version 3.7.3');
    assert.equal(p.gpuError, null);
    assert.equal(p.processTools, true);
    // The images Docker has: each once, dangling ones (<none>) left out.
    assert.deepEqual(p.images, ['local/python:3', 'local/busybox:1', 'registry.example.com:5000/team/train:v2']);
  });

  it('says what is missing or failing', () => {
    const p = parseProbe('@@gpus\n@@gpus_rc absent\n@@nproc\n8\n@@mem\nMemTotal: 1048576 kB\n@@docker\nCannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n@@docker_rc 1\n@@sshfs\n@@sshfs_rc absent\n@@end\n');
    assert.deepEqual(p.gpus, []);
    assert.equal(p.gpuError, null);
    assert.equal(p.docker, null);
    assert.match(p.dockerError!, /Cannot connect to the Docker daemon/);
    assert.equal(p.sshfs, null);
    assert.equal(p.processTools, false, 'no @@proc section: an older host or a busybox one');
    assert.deepEqual(p.images, []);
    const broken = parseProbe('@@gpus\nNVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver.\n@@gpus_rc 9\n@@nproc\n8\n@@mem\n@@docker\n@@docker_rc absent\n@@sshfs\n@@sshfs_rc absent\n@@end\n');
    assert.match(broken.gpuError!, /exit 9.*NVIDIA-SMI has failed/);
  });

  it('refuses output that is not the script\'s', () => {
    assert.throws(() => parseProbe('Welcome to the cluster!\n'), /did not run to its end/);
  });

  it('runs in a real sh here and parses', () => {
    const p = parseProbe(execFileSync('sh', ['-c', probeScript()], { encoding: 'utf8' }));
    assert.ok(p.cpus >= 1);
    assert.ok(p.memoryMiB > 0);
    assert.equal(p.processTools, true, 'Debian has setsid and GNU tail');
  });
});
