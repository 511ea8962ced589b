import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkpointArgs, checkpointKillArgs, checkpointStartArgs, checkpointWaitArgs, createArgs, criuDir, restoreArgs, restoreError, transparentFromProbe } from '../../server/runtimes/criu.ts';
import { parseProbe, probeScript } from '../../server/hosts/probe.ts';
import { dockerRunArgs } from '../../server/runtimes/docker.ts';

// The @@criu section as this machine's hosts print it (captured): CRIU 4.1.1 through test/setup/35-criu.sh's
// wrapper, as root; without criu on the login's PATH; as a user who is not root (no Docker socket either).
const OK = 'criu Version: 4.1.1\ncheck 0 Looks good.\nexperimental true';
const ABSENT = 'criu absent\nexperimental true';
const NOT_ROOT = 'criu Version: 4.1.1\ncheck 1 setcap cap_checkpoint_restore+eip /opt/gpurun-criu/x/usr/sbin/criu\nexperimental permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: Get "http://%2Fvar%2Frun%2Fdocker.sock/v1.50/version": dial unix /var/run/docker.sock: connect: permission denied';

describe('transparent checkpoint: what the probe finds', () => {
  const cases: Array<[string, string | undefined, boolean, string | null | RegExp]> = [
    ['CRIU and an experimental engine', OK, true, null],
    ['no criu', ABSENT, true, 'criu is not installed on the host'],
    ['criu check fails (not root)', NOT_ROOT, true, /^criu check failed \(exit 1\): setcap cap_checkpoint_restore/],
    ['criu check fails (Debian 12 CRIU on this kernel)', 'criu Version: 3.17.1\ncheck 1 Error (criu/vdso.c:): vdso: Unexpected rt vDSO area bounds\nexperimental true', true, /^criu check failed \(exit 1\): Error .*vDSO/],
    ['engine not experimental', 'criu Version: 4.1.1\ncheck 0 Looks good.\nexperimental false', true, /^the Docker engine is not in experimental mode \(docker checkpoint needs it: "experimental": true in \/etc\/docker\/daemon.json\)$/],
    ['no docker on a process host', OK, false, 'jobs here are plain processes; CRIU is used through Docker only'],
    ['an old probe without the section', undefined, true, 'not probed'],
  ];
  for (const [name, body, docker, want] of cases) {
    it(name, () => {
      const got = transparentFromProbe(body, docker);
      if (want instanceof RegExp) assert.match(got ?? '', want);
      else assert.equal(got, want);
    });
  }

  it('the probe script carries the section and the parser keeps it', () => {
    assert.match(probeScript(), /@@criu/);
    const p = parseProbe(`@@gpus\n@@gpus_rc absent\n@@nproc\n2\n@@mem\nMemTotal: 1024 kB\n@@docker\n20.10.24\n@@docker_rc 0\n@@images\n@@sshfs\nSSHFS version 3.10.3\n@@sshfs_rc 0\n@@proc\n@@proc_rc 0\n@@criu\n${OK}\n@@end\n`);
    assert.equal(transparentFromProbe(p.criu, true), null);
  });
});

describe('transparent checkpoint: commands', () => {
  it('checkpoints into the job\'s CRIU folder and restores from the container\'s own checkpoints folder', () => {
    const dir = criuDir('/var/lib/gpurun', 'j1');
    assert.equal(dir, '/var/lib/gpurun/criu/j1');
    assert.deepEqual(checkpointArgs('gpurun-j1', dir, 'move-1'), ['docker', 'checkpoint', 'create', '--checkpoint-dir', '/var/lib/gpurun/criu/j1', 'gpurun-j1', 'move-1']);
    const r = restoreArgs('gpurun-j1', dir, 'move-1');
    assert.deepEqual(r.slice(3), ['gpurun-restore', 'gpurun-j1', '/var/lib/gpurun/criu/j1', 'move-1']);
    assert.match(r[2], /^if docker start --checkpoint "\$3" "\$1"; then/m);
    // Names and folders reach the shell as positional arguments, never inside the script.
    assert.doesNotMatch(r[2], /gpurun-j1|move-1/);
  });

  it('creates the same container a start runs', () => {
    const run = dockerRunArgs({ jobId: 'j1', owner: 'alice', brokerId: 'b', image: 'local/python:3', command: ['python3', 'x.py'], envFile: '/e', gpuMode: 'env', gpuIndices: [0], cpus: 1, memoryMiB: 512, mountPoint: '/m', readOnly: false, pidsLimit: 100 });
    const create = createArgs(run);
    assert.deepEqual(create.slice(0, 2), ['docker', 'create']);
    assert.deepEqual(create.slice(2), run.slice(3));
    assert.throws(() => createArgs(['docker', 'exec', 'x']));
  });

  it('a failed restore says what CRIU said (its restore.log is gone with the engine\'s work folder)', () => {
    // stderr of restoreArgs' script, captured when the job had a file open in the container's own file system.
    const stderr = [
      'Error response from daemon: OCI runtime restore failed: criu failed: type NOTIFY errno 0',
      'log file: /var/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/e3d7/work/restore.log: unknown',
      'criu: 7: Error (criu/files-reg.c:2267): Can\'t open file tmp/held: No such file or directory',
      'criu: 7: Error (criu/files.c:1221): Unable to open fd=3 id=0xf',
      'criu: Error (criu/cr-restore.c:2320): Restoring FAILED.',
      'criu: Error (criu/cgroup.c:1998): cg: cgroupd: recv req error: No such file or directory',
    ].join('\n');
    assert.equal(restoreError(stderr), 'Error response from daemon: OCI runtime restore failed: criu failed: type NOTIFY errno 0 / 7: Error (criu/files-reg.c:2267): Can\'t open file tmp/held: No such file or directory / 7: Error (criu/files.c:1221): Unable to open fd=3 id=0xf');
    assert.equal(restoreError('Error response from daemon: container is running'), 'Error response from daemon: container is running');
  });
});

describe('transparent checkpoint: the host-side dump scripts, under this machine\'s /bin/sh', () => {
  // The dump's command is a stand-in here (sh, sleep): what is tested is the scripts around it, not Docker.
  const run = (argv: string[]) => spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'gpurun-ckscript-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('runs the dump once, apart from the caller, and says how it ended with its last lines', () => {
    assert.equal(run(checkpointStartArgs(dir, 'move-1', ['sh', '-c', 'sleep 0.5; echo criu said this; exit 3'])).status, 0);
    // A second start while it runs (a restarted broker) does not start another.
    assert.equal(run(checkpointStartArgs(dir, 'move-1', ['sh', '-c', 'echo SECOND; exit 0'])).status, 0);
    const w = run(checkpointWaitArgs(dir, 'move-1', 10));
    assert.equal(w.stdout, 'exit 3\ncriu said this\n');
    assert.doesNotMatch(readFileSync(join(dir, 'move-1.log'), 'utf8'), /SECOND/);
  });

  it('stops a dump past its deadline: the wait says timeout, the kill ends its whole group, the next wait says gone', () => {
    run(checkpointStartArgs(dir, 'move-2', ['sleep', '30']));
    const pid = Number(readFileSync(join(dir, 'move-2.pid'), 'utf8'));
    assert.equal(run(checkpointWaitArgs(dir, 'move-2', 1)).stdout, 'timeout\n');
    assert.equal(run(checkpointKillArgs(dir, 'move-2')).status, 0);
    const alive = () => run(['sh', '-c', 'kill -0 "-$1" 2>/dev/null', 'probe', String(pid)]).status === 0;
    for (let i = 0; i < 50 && alive(); i++) spawnSync('sleep', ['0.1']);
    assert.equal(alive(), false, 'the dump\'s process group is gone');
    assert.equal(run(checkpointWaitArgs(dir, 'move-2', 5)).stdout, 'gone\n');
  });
});
