/**
 * The fast health check of an SSH host, every few seconds: one fixed script (no user data) prints the host's boot
 * id, the GPUs' health (nvidia-smi) and the `NVRM: Xid` lines of its kernel log. `HostHealth` keeps, per host, the
 * reachability (core/hostHealth.ts), the GPU fault events seen and the GPUs quarantined.
 *
 * Sources, each replaceable on a test host (README "Host faults"): the boot id is read from the file named by
 * GPURUN_BOOT_ID_FILE when the host's environment sets it (test stand-ins only), else /proc/sys/kernel/random/boot_id;
 * the kernel log from `dmesg --time-format iso`, else `journalctl -k`; GPU health from `nvidia-smi`, all by PATH.
 */
import { shellCommand } from '../core/shellQuote.ts';
import { initialReach, observeReach, type HostReach, type ReachObservation } from '../core/hostHealth.ts';
import { healthFaults, NVIDIA_SMI_HEALTH_QUERY, parseGpuHealth, parseXidLines, xidClass, type XidClass } from '../core/xid.ts';
import type { GpuFaultEvidence } from '../core/runtime.ts';
import { sections } from './probe.ts';
import type { StoredQuarantine } from '../core/store.ts';

export function healthScript(): string {
  return [
    'echo @@boot; cat "${GPURUN_BOOT_ID_FILE:-/proc/sys/kernel/random/boot_id}" 2>/dev/null',
    `echo @@gpu; if command -v nvidia-smi >/dev/null 2>&1; then ${shellCommand(NVIDIA_SMI_HEALTH_QUERY)} 2>&1; echo "@@gpu_rc $?"; else echo "@@gpu_rc absent"; fi`,
    'echo @@xid; { dmesg --time-format iso 2>/dev/null || journalctl -k -o short-iso --no-pager -q 2>/dev/null; } | grep -F "NVRM: Xid" | tail -n 200',
    'echo @@end',
  ].join('\n');
}

export interface HealthReading {
  bootId: string | null;
  gpu: ReturnType<typeof parseGpuHealth> | null;
  xids: ReturnType<typeof parseXidLines>;
}

/** Parses healthScript's output; throws when it did not run to its end. */
export function parseHealth(text: string): HealthReading {
  const s = sections(text);
  if (!s.has('end')) throw new Error(`the health check did not run to its end; output was: ${text.slice(0, 200)}`);
  const boot = s.get('boot')?.body.split('\n')[0].trim() ?? '';
  const g = s.get('gpu');
  return {
    bootId: /^[\w-]{8,}$/.test(boot) ? boot : null,
    gpu: g && g.rc !== 'absent' ? parseGpuHealth(g.body) : null,
    xids: parseXidLines(s.get('xid')?.body ?? ''),
  };
}

/** A GPU fault event kept for a host, with its class (`health`: from nvidia-smi). */
export type GpuEvent = GpuFaultEvidence & { cls: XidClass | 'health' };

/** Why a GPU is held back from jobs; `source` says what lifts it (health: a healthy reading; xid: an admin or a reboot). */
export interface Quarantine {
  xid?: number;
  detail: string;
  at: string;
  source: 'xid' | 'health';
  /** The host's boot id when it began (an Xid quarantine ends with a reboot: another boot id). */
  bootId?: string;
}

/** Where quarantines are kept across broker restarts (the broker's store: core/store.ts). */
export interface QuarantineKeeper {
  putQuarantine(q: StoredQuarantine): void;
  deleteQuarantine(host: string, gpu: number): void;
  quarantines(): StoredQuarantine[];
}

interface Entry {
  reach: HostReach;
  /** PCI address → GPU index, from the last health reading. */
  pci: Map<string, number>;
  /** Xid lines already taken in (the kernel log keeps them). */
  seen: Set<string>;
  primed: boolean;
  /** Events with the time this broker saw them (the kernel's clock may differ from the broker's). */
  events: Array<{ ev: GpuEvent; seenAt: string }>;
  quarantine: Map<number, Quarantine>;
}

const MAX_EVENTS = 200;

/** Per-host health state, fed with observations; pure apart from the clock it is given. */
export class HostHealth {
  private readonly entries = new Map<string, Entry>();
  private readonly graceMs: number;
  private readonly keeper: QuarantineKeeper | undefined;

  /** With a keeper, the quarantines it holds are taken in, and every change is written to it. */
  constructor(graceMs: number, keeper?: QuarantineKeeper) {
    this.graceMs = graceMs;
    this.keeper = keeper;
    for (const q of keeper?.quarantines() ?? []) {
      this.entry(q.host).quarantine.set(q.gpu, { ...(q.xid === null ? {} : { xid: q.xid }), detail: q.detail, at: q.at, source: q.source, ...(q.bootId ? { bootId: q.bootId } : {}) });
    }
  }

  private quarantine(host: string, gpu: number, q: Quarantine): void {
    this.entry(host).quarantine.set(gpu, q);
    this.keep(() => this.keeper?.putQuarantine({ host, gpu, xid: q.xid ?? null, detail: q.detail, at: q.at, source: q.source, bootId: q.bootId ?? null }));
  }

  private lift(host: string, gpu: number): boolean {
    const had = this.entry(host).quarantine.delete(gpu);
    if (had) this.keep(() => this.keeper?.deleteQuarantine(host, gpu));
    return had;
  }

  /** A write to the keeper that fails (a full disk) leaves the quarantine as it is in memory; health checks go on. */
  private keep(write: () => void): void {
    try {
      write();
    } catch {
      // Held in memory for this process; the store has the previous state.
    }
  }

  private entry(host: string): Entry {
    let e = this.entries.get(host);
    if (!e) this.entries.set(host, (e = { reach: initialReach(), pci: new Map(), seen: new Set(), primed: false, events: [], quarantine: new Map() }));
    return e;
  }

  reach(host: string): HostReach {
    return this.entry(host).reach;
  }

  /** Records that the host could not be reached (its connection and a fresh one failed). Returns true on a change of state. */
  failed(host: string, at: number, error: string): boolean {
    return this.observe(host, { at, ok: false, error });
  }

  private observe(host: string, obs: ReachObservation): boolean {
    const e = this.entry(host);
    const before = e.reach.reach;
    e.reach = observeReach(e.reach, obs, this.graceMs);
    return e.reach.reach !== before;
  }

  /**
   * Takes in a reading. Xid lines already in the kernel log at the first reading of this broker process are history
   * (they do not quarantine). A new boot id lifts Xid quarantines (a reboot resets the GPUs). Returns true when the
   * host's state or its quarantines changed.
   */
  reading(host: string, at: number, r: HealthReading): boolean {
    const e = this.entry(host);
    const iso = new Date(at).toISOString();
    const prevBoot = e.reach.bootId;
    let changed = this.observe(host, { at, ok: true, bootId: r.bootId });
    const rebooted = !!r.bootId && !!prevBoot && r.bootId !== prevBoot;
    if (rebooted) changed = true;
    if (rebooted) {
      e.seen.clear();
      e.primed = false;
    }
    // A reboot resets the GPUs: an Xid quarantine from another boot ends (also one kept by the store while this broker
    // was not running, whose boot id is compared at the first reading).
    for (const [g, q] of e.quarantine) {
      if (q.source === 'xid' && r.bootId && (rebooted || (q.bootId !== undefined && q.bootId !== r.bootId)) && this.lift(host, g)) changed = true;
    }
    if (r.gpu) {
      e.pci = new Map(r.gpu.gpus.map((g) => [g.pci, g.index]));
      const faults = healthFaults(r.gpu, (p) => e.pci.get(p), iso);
      const bad = new Set(faults.map((f) => f.gpu));
      for (const [g, q] of e.quarantine) {
        if (q.source === 'health' && !bad.has(g)) {
          this.lift(host, g);
          changed = true;
        }
      }
      for (const f of faults) {
        if (!e.quarantine.has(f.gpu)) {
          this.quarantine(host, f.gpu, { detail: f.detail, at: iso, source: 'health', ...(r.bootId ? { bootId: r.bootId } : {}) });
          this.push(e, { ...f, cls: 'health' }, iso);
          changed = true;
        }
      }
    }
    for (const x of r.xids) {
      if (e.seen.has(x.line)) continue;
      e.seen.add(x.line);
      if (!e.primed) continue;
      const gpu = e.pci.get(x.pci);
      if (gpu === undefined) continue;
      const cls = xidClass(x.xid);
      const ev: GpuEvent = { gpu, xid: x.xid, detail: x.detail, at: x.at ?? iso, cls };
      this.push(e, ev, iso);
      if (cls === 'gpu_fault' && !e.quarantine.has(gpu)) {
        this.quarantine(host, gpu, { xid: x.xid, detail: x.detail, at: ev.at, source: 'xid', ...(r.bootId ? { bootId: r.bootId } : {}) });
        changed = true;
      }
    }
    e.primed = true;
    return changed;
  }

  private push(e: Entry, ev: GpuEvent, seenAt: string): void {
    e.events.push({ ev, seenAt });
    if (e.events.length > MAX_EVENTS) e.events.splice(0, e.events.length - MAX_EVENTS);
  }

  quarantined(host: string): ReadonlyMap<number, Quarantine> {
    return this.entry(host).quarantine;
  }

  /** Lifts a GPU's quarantine (an admin's decision); false when it was not quarantined. */
  clear(host: string, gpu: number): boolean {
    return this.lift(host, gpu);
  }

  /** GPU fault events on `gpus` of `host` that this broker saw at or after `sinceIso` (the attempt's start). */
  eventsFor(host: string, gpus: readonly number[], sinceIso: string): GpuEvent[] {
    return this.entry(host).events.filter((x) => gpus.includes(x.ev.gpu) && x.seenAt >= sinceIso).map((x) => x.ev);
  }
}
