/**
 * GPU faults as the host reports them, parsed from text (pure): `NVRM: Xid` lines of the kernel log, and the health
 * fields of `nvidia-smi`. Xid codes are classified with NVIDIA's Xid catalogue: some are the application's own
 * errors (a bad pointer, an illegal instruction), others mean the GPU itself failed and no job should get it.
 */
import type { GpuFaultEvidence } from './runtime.ts';

/** Xids that mean the GPU failed (double-bit ECC, fallen off the bus, row-remap failure, …): the GPU is quarantined. */
export const GPU_FAULT_XIDS: ReadonlySet<number> = new Set([48, 62, 64, 74, 79, 92, 93, 94, 95, 109, 119, 120]);
/** Xids the application causes (graphics/memory page faults, exceptions): evidence of the job's own error. */
export const APPLICATION_XIDS: ReadonlySet<number> = new Set([13, 31, 43, 45, 68]);

export type XidClass = 'gpu_fault' | 'application' | 'other';

export function xidClass(xid: number): XidClass {
  return GPU_FAULT_XIDS.has(xid) ? 'gpu_fault' : APPLICATION_XIDS.has(xid) ? 'application' : 'other';
}

/** One `NVRM: Xid` line. `pci` is normalised (pciKey); `at` is the line's ISO time, or null when it has none. */
export interface XidEvent {
  pci: string;
  xid: number;
  detail: string;
  at: string | null;
  /** The line as read, so a line seen twice is recognised. */
  line: string;
}

/**
 * A PCI address as `dddd:bb:dd` (domain, bus, device; lower case, no function), so nvidia-smi's `00000000:3B:00.0`
 * and the kernel's `0000:3b:00` name the same GPU. Null when `s` is not a PCI address.
 */
export function pciKey(s: string): string | null {
  const m = /^(?:([0-9a-f]{1,8}):)?([0-9a-f]{2}):([0-9a-f]{2})(?:\.[0-7])?$/i.exec(s.trim());
  if (!m) return null;
  const domain = (m[1] ?? '0').slice(-4).padStart(4, '0');
  return `${domain}:${m[2]}:${m[3]}`.toLowerCase();
}

const XID_RE = /NVRM: Xid \((?:PCI:)?([0-9a-fA-F:.]+)\): (\d+),\s*(.*)$/;
/** dmesg --time-format iso (`2026-12-01T14:02:03,123456+00:00`) or journalctl -o short-iso (`2026-12-01T14:02:03+0000`). */
const ISO_RE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[,.](\d+))?([+-]\d\d:?\d\d|Z)?/;

/** The Xid lines of a kernel log excerpt (other lines are ignored). */
export function parseXidLines(text: string): XidEvent[] {
  const out: XidEvent[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    const m = XID_RE.exec(line);
    if (!m) continue;
    const pci = pciKey(m[1]);
    if (!pci) continue;
    // Newer drivers put the process first (`pid=1234, name=python3, …`): the text after it is what happened.
    const detail = m[3].replace(/^pid=[^,]*,\s*(?:name=[^,]*,\s*)?/, '').trim();
    out.push({ pci, xid: Number(m[2]), detail, at: isoOf(line), line });
  }
  return out;
}

function isoOf(line: string): string | null {
  const t = ISO_RE.exec(line);
  if (!t) return null;
  const frac = t[2] ? `.${t[2].slice(0, 3).padEnd(3, '0')}` : '';
  const zone = !t[3] || t[3] === 'Z' ? 'Z' : t[3].includes(':') ? t[3] : `${t[3].slice(0, 3)}:${t[3].slice(3)}`;
  const ms = Date.parse(`${t[1]}${frac}${zone}`);
  return Number.isFinite(ms) ? new Date(ms).toISOString() : null;
}

/** The fixed health query (argv, run without a shell). Fields nvidia-smi cannot read come as `[N/A]`. */
export const NVIDIA_SMI_HEALTH_QUERY = [
  'nvidia-smi',
  '--query-gpu=index,pci.bus_id,ecc.errors.uncorrected.volatile.total,retired_pages.pending',
  '--format=csv,noheader,nounits',
];

/** One GPU's health as nvidia-smi reports it. `problem` is null when nothing is wrong. */
export interface GpuHealth {
  index: number;
  pci: string;
  problem: string | null;
}

/**
 * Parses the health query's output. A GPU that fell off the bus makes nvidia-smi print `Unable to determine the device
 * handle for GPU0000:3B:00.0: GPU is lost. Reboot the system to recover this GPU` (and exit non-zero) instead of its
 * line: it is returned in `lost` by PCI address. Uncorrected volatile ECC errors > 0 and pending page retirements are
 * problems.
 */
export function parseGpuHealth(text: string): { gpus: GpuHealth[]; lost: string[] } {
  const gpus: GpuHealth[] = [];
  const lost: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line) continue;
    const gone = /GPU\s*([0-9A-Fa-f:.]+):\s*GPU is lost/i.exec(line);
    if (gone) {
      const k = pciKey(gone[1]);
      if (k) lost.push(k);
      continue;
    }
    const f = line.split(',').map((s) => s.trim());
    if (f.length !== 4 || !/^\d+$/.test(f[0])) continue;
    const pci = pciKey(f[1]);
    if (!pci) continue;
    const ecc = Number(f[2]);
    const problems: string[] = [];
    if (Number.isFinite(ecc) && ecc > 0) problems.push(`${ecc} uncorrectable ECC error${ecc === 1 ? '' : 's'}`);
    if (/^yes$/i.test(f[3])) problems.push('retired pages pending (needs a GPU reset)');
    gpus.push({ index: Number(f[0]), pci, problem: problems.length ? problems.join(', ') : null });
  }
  return { gpus, lost };
}

/** GPU fault evidence from a health reading: one entry per GPU with a problem (`indexOf` maps PCI → GPU index). */
export function healthFaults(h: { gpus: GpuHealth[]; lost: string[] }, indexOf: (pci: string) => number | undefined, at: string): GpuFaultEvidence[] {
  const out: GpuFaultEvidence[] = [];
  for (const g of h.gpus) if (g.problem) out.push({ gpu: g.index, detail: g.problem, at });
  for (const pci of h.lost) {
    const gpu = indexOf(pci);
    if (gpu !== undefined) out.push({ gpu, detail: 'GPU is lost (fell off the bus)', at });
  }
  return out;
}
