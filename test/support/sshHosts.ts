/**
 * Test GPU hosts: one real OpenSSH sshd per host, each on its own loopback address (127.0.0.2, 127.0.0.3, …), with
 * its own host key, pid file and an `nvidia-smi` stand-in first on its PATH (sshd's SetEnv). Root logs in with a
 * key made for the test run; the known_hosts file lists the hosts the test chooses to trust.
 * Needs root (sshd, FUSE mounts, Docker), /usr/sbin/sshd, sshfs and a running Docker engine (or, for hosts that run
 * jobs as plain processes, setsid and GNU tail).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanup, fakeGpuProcesses, fakeGpuReadings, fakeNvidiaSmi, stopBroker, type BrokerProc } from './harness.ts';
import { snapshotJobDir } from '../../server/hosts/snapshot.ts';

export interface TestHost {
  name: string;
  address: string;
  port: number;
  /** `ADDRESS ssh-ed25519 AAAA…` (port 22) or `[ADDRESS]:PORT …`. */
  knownHostsLine: string;
  start(): Promise<void>;
  /** Kills the sshd and every session under it: the host is unreachable. */
  stop(): Promise<void>;
  /** The host's own folder (config, stand-ins' files). */
  dir: string;
  /** Makes the host's boot id (its stand-in file, GPURUN_BOOT_ID_FILE) a new one, as a reboot does. */
  newBootId(): string;
  /** Appends a line to the host's kernel log (the `dmesg` stand-in prints it). */
  kernelLog(line: string): void;
  /** What the nvidia-smi stand-in answers to the health query (null: all healthy). */
  gpuHealth(csv: string | null): void;
  /** What the nvidia-smi stand-in reports as GPU utilisation and memory in use, by GPU index (harness fakeGpuReadings). */
  gpuReadings(readings: Record<number, { pct: number; usedMiB: number }> | null): void;
  /** The processes the stand-in lists per GPU, by host pid (harness fakeGpuProcesses). */
  gpuProcesses(procs: Array<{ pid: number; gpu: number; usedMiB: number | null }> | null): void;
}

export interface TestHostSet {
  dir: string;
  clientKey: string;
  knownHosts: string;
  hosts: TestHost[];
  stopAll(): Promise<void>;
}

/**
 * Why these test hosts cannot be made here, or null when they can. `docker: false` for hosts that run jobs as plain
 * processes (runtime "process"): they need setsid and GNU tail instead of Docker and the test images.
 */
export function sshHostsMissing(opts: { docker?: boolean } = {}): string | null {
  if (process.getuid?.() !== 0) return 'the SSH host tests run as root (sshd, FUSE mounts, Docker)';
  for (const f of ['/usr/sbin/sshd', '/usr/bin/ssh-keygen', '/usr/bin/sshfs']) if (!existsSync(f)) return `${f} is missing (apt-get install openssh-server sshfs fuse3)`;
  if (!existsSync('/dev/fuse')) return '/dev/fuse is missing';
  if (opts.docker === false) {
    const t = spawnSync('sh', ['-c', 'command -v setsid && command -v pgrep && tail --pid=1 -c 1 /dev/null'], { encoding: 'utf8' });
    return t.status === 0 ? null : `setsid, pgrep or GNU tail (with --pid) is missing: ${(t.stderr || String(t.error)).trim().split('\n')[0]} (apt-get install util-linux procps coreutils)`;
  }
  const d = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { encoding: 'utf8' });
  if (d.status !== 0) return `Docker does not answer (${(d.stderr || String(d.error)).trim().split('\n')[0]}); run test/setup/30-ssh-docker.sh`;
  const img = spawnSync('docker', ['image', 'inspect', 'local/busybox:1'], { encoding: 'utf8' });
  if (img.status !== 0) return 'the image local/busybox:1 is missing; run test/setup/30-ssh-docker.sh';
  return null;
}

/** Why a broker cannot be started in its own mount namespace here (`unshare --mount` + tmpfs), or null when it can. */
export function unshareMissing(): string | null {
  const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs gpurun-probe /mnt'], { encoding: 'utf8' });
  return r.status === 0 ? null : `unshare --mount with a tmpfs does not work here: ${(r.stderr || String(r.error)).trim()}`;
}

/**
 * The `wrap` argv (startBrokerProcess) that runs the broker in its own mount namespace with an empty tmpfs over
 * `folder`: the broker cannot read what is in it, as a team broker on another machine could not.
 */
export function hiddenFrom(folder: string): string[] {
  return ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount -t tmpfs gpurun-hidden "$1" && shift && exec "$@"', 'gpurun-hide', folder];
}

/** The mount points under `dir` on this machine (from /proc/mounts). */
/** The host's sshfs processes of a job's workspace mount: at its mount point, or under its snapshot overlay. */
export function sshfsPidsOf(mnt: string): number[] {
  const re = (p: string) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const r = spawnSync('pgrep', ['-f', `sshfs .*(${re(mnt)}|${re(snapshotJobDir(mnt))}/lazy)( |$)`], { encoding: 'utf8' });
  return r.stdout.split('\n').filter(Boolean).map(Number);
}

export function mountedUnder(dir: string): string[] {
  return readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1]).filter((m) => m && m.startsWith(dir));
}

/**
 * Bytes sent so far to `address:port` over the TCP connections open now (`ss`'s bytes_sent, on the wire: SSH framing
 * and encryption included). The broker keeps one SSH connection per host, so a delta over a job is what that job's
 * mount made the broker send (counting a process's written bytes would count them twice: the SFTP server the broker
 * runs writes them to the broker first).
 */
export function bytesSentTo(address: string, port = 2222): number {
  return bytesSent('dst', address, port);
}

/** Bytes sent so far from `address:port` (an sshd serving direct mounts) over the TCP connections open now. */
export function bytesSentFrom(address: string, port = 2222): number {
  return bytesSent('src', address, port);
}

function bytesSent(side: 'src' | 'dst', address: string, port: number): number {
  const out = execFileSync('ss', ['-tinH', side, `${address}:${port}`], { encoding: 'utf8' });
  return [...out.matchAll(/bytes_sent:(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
}

/**
 * The end of a suite on SSH hosts: its broker stopped, its hosts stopped, then what its jobs may have left on this
 * machine (containers of `owner`, mounts under `workDir`, or under each of several) removed, and its scratch folder `dir`.
 */
export async function endHostSuite(broker: BrokerProc | undefined, set: TestHostSet | undefined, owner: string, workDir: string | string[], dir: string | undefined): Promise<void> {
  await stopBroker(broker);
  await set?.stopAll();
  if (!dir) return;
  const ps = spawnSync('docker', ['ps', '-aq', '--filter', `label=gpurun.owner=${owner}`], { encoding: 'utf8' });
  for (const c of (ps.stdout ?? '').split('\n').filter(Boolean)) spawnSync('docker', ['rm', '-f', c]);
  for (const w of typeof workDir === 'string' ? [workDir] : workDir) for (const m of mountedUnder(w).reverse()) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
  cleanup(dir);
}

function portOpen(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: address, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Every process whose ancestor is `pid` (from /proc). */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parent) if (pp === p) (out.push(c), walk(c));
  };
  walk(pid);
  return out;
}

/**
 * `trusted: false` leaves a host out of known_hosts; `sshdConfig` adds lines to its sshd_config (e.g. an sftp subsystem);
 * `env` adds variables to the host's sessions (sshd SetEnv, e.g. HOME for a noisy login shell); `sshdDefaults` keeps
 * sshd's own limits (MaxSessions 10, MaxStartups 10:30:100) instead of the raised ones.
 * Each host has STAND-INS on its PATH: nvidia-smi (harness.ts), and `dmesg`, which prints the host's `kmsg` file
 * (TestHost.kernelLog); its boot id is the file named by GPURUN_BOOT_ID_FILE (TestHost.newBootId).
 */
export async function makeSshHosts(dir: string, specs: Array<{ name: string; address: string; port?: number; gpus: Array<{ name: string; memoryMiB: number }>; trusted?: boolean; sshdConfig?: string[]; env?: Record<string, string>; sshdDefaults?: boolean }>): Promise<TestHostSet> {
  mkdirSync(dir, { recursive: true });
  const clientKey = join(dir, 'client_key');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'gpurun-test', '-f', clientKey]);
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${clientKey}.pub`));
  mkdirSync('/run/sshd', { recursive: true });
  const knownLines: string[] = [];
  const hosts: TestHost[] = specs.map((spec) => {
    const port = spec.port ?? 2222;
    const hdir = join(dir, spec.name);
    mkdirSync(hdir, { recursive: true });
    const hostKey = join(hdir, 'ssh_host_ed25519_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', spec.name, '-f', hostKey]);
    const bin = fakeNvidiaSmi(hdir, spec.gpus);
    const kmsg = join(hdir, 'kmsg');
    writeFileSync(kmsg, '');
    writeFileSync(join(bin, 'dmesg'), `#!/bin/sh\n# dmesg STAND-IN: the test host's kernel log.\ncat '${kmsg}'\n`);
    chmodSync(join(bin, 'dmesg'), 0o755);
    const bootIdFile = join(hdir, 'boot_id');
    writeFileSync(bootIdFile, `${randomUUID()}\n`);
    // A home of the host's own: root's dotfiles on this machine (a pyenv init in ~/.bashrc, say, which bash runs for
    // every SSH command) would otherwise slow or break every session of every host.
    const home = join(hdir, 'home');
    mkdirSync(home, { recursive: true });
    const env = { PATH: `${bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, HOME: home, GPURUN_BOOT_ID_FILE: bootIdFile, ...spec.env };
    const cfg = join(hdir, 'sshd_config');
    const pidFile = join(hdir, 'sshd.pid');
    writeFileSync(
      cfg,
      [
        `ListenAddress ${spec.address}:${port}`,
        `HostKey ${hostKey}`,
        `PidFile ${pidFile}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'StrictModes no',
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        ...(spec.sshdDefaults ? [] : ['MaxStartups 100:30:200', 'MaxSessions 20']),
        'LogLevel ERROR',
        `SetEnv ${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')}`,
        ...(spec.sshdConfig ?? []),
        '',
      ].join('\n'),
    );
    const pub = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
    const knownHostsLine = `${port === 22 ? spec.address : `[${spec.address}]:${port}`} ${pub}`;
    if (spec.trusted !== false) knownLines.push(knownHostsLine);
    const host: TestHost = {
      name: spec.name,
      address: spec.address,
      port,
      knownHostsLine,
      dir: hdir,
      newBootId() {
        const id = randomUUID();
        writeFileSync(bootIdFile, `${id}\n`);
        return id;
      },
      kernelLog(line) {
        writeFileSync(kmsg, `${line}\n`, { flag: 'a' });
      },
      gpuHealth(csv) {
        if (csv === null) rmSync(join(hdir, 'gpu-health.csv'), { force: true });
        else writeFileSync(join(hdir, 'gpu-health.csv'), csv);
      },
      gpuReadings(readings) {
        fakeGpuReadings(hdir, spec.gpus, readings);
      },
      gpuProcesses(procs) {
        fakeGpuProcesses(hdir, procs);
      },
      async start() {
        if (await portOpen(spec.address, port)) throw new Error(`${spec.address}:${port} is already taken (an sshd left by an earlier test run?); stop it first`);
        execFileSync('/usr/sbin/sshd', ['-f', cfg, '-E', join(hdir, 'sshd.log')]);
        for (let i = 0; i < 100 && !(await portOpen(spec.address, port)); i++) await sleep(50);
      },
      async stop() {
        let pid = 0;
        try {
          pid = Number(readFileSync(pidFile, 'utf8').trim());
        } catch {
          return;
        }
        const all = [pid, ...descendants(pid)];
        for (const p of all) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        for (let i = 0; i < 100 && (await portOpen(spec.address, port)); i++) await sleep(50);
      },
    };
    return host;
  });
  const knownHosts = join(dir, 'known_hosts');
  writeFileSync(knownHosts, `${knownLines.join('\n')}\n`);
  for (const h of hosts) await h.start();
  return { dir, clientKey, knownHosts, hosts, stopAll: async () => void (await Promise.all(hosts.map((h) => h.stop()))) };
}

/** Removes what a suite's jobs may have left: `owner`'s containers, and the mounts under each of `workDirs`. */
export function removeLeftovers(owner: string, workDirs: string[]): void {
  const left = execFileSync('docker', ['ps', '-a', '--filter', `label=gpurun.owner=${owner}`, '--format', '{{.Names}}'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const c of left) spawnSync('docker', ['rm', '-f', c]);
  for (const w of workDirs) for (const m of mountedUnder(w)) spawnSync('sh', ['-c', 'fusermount3 -uz "$1" || umount -l "$1"', 'unmount', m]);
}
