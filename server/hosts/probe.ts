/**
 * Probing an SSH host in one round trip: a fixed script (no user data in it) prints marked sections, and a pure
 * parser turns them into what the scheduler and `gpurun hosts` need.
 */
import type { Gpu } from '../protocol/jobs.ts';
import { NVIDIA_SMI_QUERY, parseNvidiaSmi } from './nvidiaSmi.ts';
import { shellCommand } from '../core/shellQuote.ts';
import { CRIU_PROBE } from '../runtimes/criu.ts';

export interface HostProbe {
  gpus: Gpu[];
  cpus: number;
  memoryMiB: number;
  /** Docker server version; null when docker is absent or its daemon does not answer. */
  docker: string | null;
  dockerError: string | null;
  /** First line of `sshfs --version`; null when absent. */
  sshfs: string | null;
  /** Why GPUs could not be read (nvidia-smi present but failing); null when fine or absent. */
  gpuError: string | null;
  /** What runtime "process" needs is there: setsid and a tail that follows a pid (GNU coreutils). */
  processTools: boolean;
  /** The images Docker has on the host (`REPOSITORY:TAG`, at most MAX_IMAGES); empty without Docker. */
  images: string[];
  /** The `@@criu` section (runtimes/criu.ts reads it: CRIU installed, `criu check`, Docker's experimental mode). */
  criu?: string;
}

/** At most this many image names are kept of a host (completion offers them; a build host may have thousands). */
export const MAX_IMAGES = 200;
/** What an image reference looks like (registry/name:tag); other lines of `docker image ls` are dropped. */
const IMAGE_REF = /^[a-z0-9][a-z0-9._\/-]*(:[0-9]+\/[a-z0-9._\/-]+)?:[\w][\w.-]{0,127}$/;

/** The probe script run by the host's login shell. */
export function probeScript(): string {
  return [
    `echo @@gpus; if command -v nvidia-smi >/dev/null 2>&1; then ${shellCommand(NVIDIA_SMI_QUERY)} 2>&1; echo "@@gpus_rc $?"; else echo "@@gpus_rc absent"; fi`,
    'echo @@nproc; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN',
    'echo @@mem; grep MemTotal /proc/meminfo',
    `echo @@docker; if command -v docker >/dev/null 2>&1; then docker version --format '{{.Server.Version}}' 2>&1; echo "@@docker_rc $?"; else echo "@@docker_rc absent"; fi`,
    `echo @@images; if command -v docker >/dev/null 2>&1; then docker image ls --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | head -n ${MAX_IMAGES * 2}; fi`,
    'echo @@sshfs; if command -v sshfs >/dev/null 2>&1; then sshfs --version 2>&1 | head -n 1; echo "@@sshfs_rc 0"; else echo "@@sshfs_rc absent"; fi',
    // busybox tail has no --pid: it refuses the option.
    'echo @@proc; if command -v setsid >/dev/null 2>&1 && tail --pid=$$ -c 0 /dev/null >/dev/null 2>&1; then echo "@@proc_rc 0"; else echo "@@proc_rc absent"; fi',
    CRIU_PROBE,
    'echo @@end',
  ].join('\n');
}

/** Splits a probe script's output into its `@@name` sections, each with the `@@name_rc CODE` it ended with. */
export function sections(text: string): Map<string, { body: string; rc: string | null }> {
  const out = new Map<string, { body: string; rc: string | null }>();
  let cur: string | null = null;
  let lines: string[] = [];
  let rc: string | null = null;
  const flush = () => {
    if (cur) out.set(cur, { body: lines.join('\n').trim(), rc });
  };
  for (const line of text.split(/\r?\n/)) {
    const head = /^@@(\w+)$/.exec(line);
    const code = /^@@(\w+)_rc (\S+)$/.exec(line);
    if (code && code[1] === cur) rc = code[2];
    else if (head) {
      flush();
      cur = head[1];
      lines = [];
      rc = null;
    } else lines.push(line);
  }
  flush();
  return out;
}

/** Parses the probe script's output. Throws when the output is not the script's (e.g. a login banner ate it). */
export function parseProbe(text: string): HostProbe {
  const s = sections(text);
  if (!s.has('end')) throw new Error(`the probe did not run to its end; output was: ${text.slice(0, 300)}`);
  const g = s.get('gpus')!;
  let gpus: Gpu[] = [];
  let gpuError: string | null = null;
  if (g.rc === '0') {
    try {
      gpus = parseNvidiaSmi(g.body);
    } catch (e) {
      gpuError = (e as Error).message;
    }
  } else if (g.rc !== 'absent') gpuError = `nvidia-smi failed (exit ${g.rc}): ${g.body.split('\n')[0]}`;
  const cpus = Number(s.get('nproc')?.body.split('\n')[0]);
  const memKb = Number(/MemTotal:\s+(\d+)\s*kB/.exec(s.get('mem')?.body ?? '')?.[1]);
  const d = s.get('docker');
  const dockerOk = d?.rc === '0' && /^\d+\.\d+/.test(d.body);
  const f = s.get('sshfs');
  return {
    gpus,
    gpuError,
    cpus: Number.isFinite(cpus) && cpus > 0 ? cpus : 1,
    memoryMiB: Number.isFinite(memKb) ? Math.floor(memKb / 1024) : 0,
    docker: dockerOk ? d!.body.split('\n')[0] : null,
    dockerError: dockerOk ? null : d?.rc === 'absent' ? 'docker is not installed' : `docker does not answer: ${(d?.body ?? '').split('\n').slice(-1)[0]}`,
    sshfs: f?.rc === '0' ? f.body.split('\n')[0] : null,
    processTools: s.get('proc')?.rc === '0',
    criu: s.get('criu')?.body,
    images: [...new Set((s.get('images')?.body ?? '').split('\n').map((l) => l.trim()).filter((l) => IMAGE_REF.test(l)))].slice(0, MAX_IMAGES),
  };
}
