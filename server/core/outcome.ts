/**
 * The outcome classifier: how an attempt ended, decided in one place from what its backend observed. Pure.
 * Backends and runtimes report facts (an exit status, a vanished container, hours without an answer, an Xid line,
 * Slurm's final state); this turns them into a job state, a typed fault, words for a person, and whether starting
 * the job again may help. Whether it IS started again (attempts left, backoff) is the restart policy's call
 * (core/restartPolicy.ts).
 */
import type { AttemptEvidence, Fault, JobState } from '../protocol/jobs.ts';
import type { Evidence, ExitInfo, Lost } from './runtime.ts';
import type { StopIntent } from './store.ts';

// NVIDIA's Xid catalogue, one copy for the classifier and the host health checks.
import { APPLICATION_XIDS, GPU_FAULT_XIDS } from './xid.ts';
export { APPLICATION_XIDS, GPU_FAULT_XIDS };

/** Faults after which a restart can help, provided the evidence allows it (workspace_lost: only the control plane). */
const RECOVERABLE: ReadonlySet<Fault> = new Set(['host_lost', 'gpu_fault', 'runtime_lost', 'preempted', 'node_fail', 'workspace_lost']);

/** Slurm's final view of a job (state name, reason, and exit pair from "CODE:SIGNAL"). */
export interface SlurmEnd {
  state: string;
  reason?: string;
  exitCode: number;
  signal: number;
}

export interface ClassifyInput {
  /**
   * What the runtime reported: an exit status, or that the job is gone without one. `startError` alone: the attempt
   * could not be started at all (the backend's start failed).
   */
  end: ExitInfo | Lost | { startError: string };
  /** Why the broker itself asked the attempt to stop, if it did. */
  stopIntent: StopIntent | null;
  /** The words the broker recorded when it asked (e.g. "cancelled by alice"). */
  stopReason?: string;
  /** Slurm's final record, for cluster jobs. */
  slurm?: SlurmEnd;
  /** Exit codes of the job's own that ask for a restart. */
  restartOnExit?: readonly number[];
  /** Where the attempt ran, for the words. */
  host?: string | null;
}

export type FinalState = Extract<JobState, 'succeeded' | 'failed' | 'cancelled' | 'timed_out' | 'lost'>;

export interface Outcome {
  state: FinalState;
  /** Null when the attempt succeeded. */
  fault: Fault | null;
  reason: string;
  exitCode: number | null;
  /** The observations the decision rests on (shown with the attempt). */
  evidence: AttemptEvidence;
  /** Whether a new attempt may help (the policy still needs attempts left). */
  restartable: boolean;
  /** Where the next attempt must not run: the lost host, or the faulty GPUs of a host. */
  avoid: { host: string; gpus?: number[] } | null;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8, SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15 };

export function signalNumber(sig: string): number {
  return SIGNALS[sig] ?? 0;
}

export function signalName(n: number): string {
  return Object.entries(SIGNALS).find(([, v]) => v === n)?.[0] ?? `signal ${n}`;
}

export function classify(input: ClassifyInput): Outcome {
  const { end, slurm } = input;
  const ev = evidenceOf(end, slurm);
  const exit = 'exitCode' in end ? end : undefined;
  const code = exit ? (exit.exitCode ?? (exit.signal ? 128 + signalNumber(exit.signal) : null)) : slurm ? (slurm.signal ? 128 + slurm.signal : slurm.exitCode) : null;
  const make = (state: FinalState, fault: Fault | null, reason: string, extra: Partial<Outcome> = {}): Outcome => ({
    state,
    fault,
    reason,
    exitCode: code,
    evidence: ev,
    restartable: fault !== null && RECOVERABLE.has(fault) && (fault !== 'workspace_lost' || !!ev.workspaceLost?.controlPlane),
    avoid: null,
    ...extra,
  });
  const on = input.host ? ` on ${input.host}` : '';

  // The broker's own stop decides first: whatever the job did after TERM follows from it.
  if (input.stopIntent === 'cancel') return make('cancelled', 'cancelled', input.stopReason ?? 'cancelled');
  if (input.stopIntent === 'timeout') return make('timed_out', 'timed_out', input.stopReason ?? 'stopped after reaching its time limit');
  // Stopped for passing a limit of a shared broker (its output cap): a failure of the job, not restartable.
  if (input.stopIntent === 'limit') return make('failed', null, input.stopReason ?? 'stopped for passing a limit');
  // Stopped to be placed again (a drain or a preemption the job did not checkpoint for): a restart may run it.
  if (input.stopIntent === 'requeue') return make('failed', 'preempted', input.stopReason ?? 'stopped to be placed again');

  if ('startError' in end && end.startError && !('lost' in end)) {
    const msg = end.startError;
    return make('failed', 'start_failed', msg.startsWith('could not start') ? msg : `could not start: ${msg}`);
  }

  // GPU health outranks the exit code: a job whose GPU fell off the bus exits non-zero too.
  const gpu = gpuVerdict(ev.gpuFaults);
  if (gpu === 'hardware') {
    const bad = [...new Set(ev.gpuFaults!.filter(isHardwareFault).map((f) => f.gpu))].sort((a, b) => a - b);
    const what = ev.gpuFaults!.filter(isHardwareFault).map((f) => (f.xid !== undefined ? `Xid ${f.xid}` : f.detail))[0];
    return make('failed', 'gpu_fault', `GPU ${bad.join(',')}${on} failed (${what})`, input.host ? { avoid: { host: input.host, gpus: bad } } : {});
  }

  if (slurm) {
    const s = slurm.state;
    const why = slurm.reason && slurm.reason !== 'None' ? `, ${slurm.reason}` : '';
    switch (s) {
      case 'NODE_FAIL':
        return make('lost', 'node_fail', `the node it ran on failed (Slurm: NODE_FAIL${why})`, { exitCode: null });
      case 'BOOT_FAIL':
        return make('failed', 'node_fail', `the node failed to boot (Slurm: BOOT_FAIL${why})`, { exitCode: null });
      case 'PREEMPTED':
        return make('failed', 'preempted', `preempted by the cluster for another job (Slurm: PREEMPTED${why})`);
      case 'CANCELLED':
        return make('cancelled', 'cancelled', 'cancelled on the cluster (Slurm: CANCELLED)');
      case 'TIMEOUT':
      case 'DEADLINE':
        return make('timed_out', 'timed_out', `Slurm stopped it at its time limit (Slurm: ${s})`);
      case 'OUT_OF_MEMORY':
        return make('failed', 'oom', 'killed for running out of memory (Slurm: OUT_OF_MEMORY)', { exitCode: code || 137 });
      case 'COMPLETED':
      case 'FAILED':
        break;
      default:
        return make('failed', 'user_error', `ended in Slurm state ${s}`);
    }
  }

  if ('lost' in end) {
    if (ev.bootIdChanged || ev.hostUnreachableSec !== undefined) {
      return make('lost', 'host_lost', `lost its host${input.host ? ` ${input.host}` : ''}: ${summarize(ev) || end.lost}`, input.host ? { avoid: { host: input.host } } : {});
    }
    if (ev.workspaceLost) return make('failed', 'workspace_lost', `workspace_lost: ${ev.workspaceLost.reason}`);
    // Gone without a trace on a host that answers: the container or its supervisor died, the host did not.
    return make('lost', 'runtime_lost', end.lost);
  }

  const x = exit!;
  if (ev.workspaceLost) return make('failed', 'workspace_lost', `workspace_lost: ${ev.workspaceLost.reason}`);
  if (x.failure) {
    const m = /^workspace_lost: (.*)$/s.exec(x.failure);
    if (m) return make('failed', 'workspace_lost', x.failure);
    return make('failed', 'user_error', x.failure);
  }
  if (x.startError) return make('failed', 'start_failed', `could not start: ${x.startError}`);
  if (ev.runtimeGone || ev.engineDown) return make('lost', 'runtime_lost', ev.runtimeGone ?? ev.engineDown!);
  if (x.exitCode === 0 && !x.signal) return make('succeeded', null, 'exited with code 0');
  if (x.oomKilled) return make('failed', 'oom', 'killed for running out of memory (OOM)');
  const appXid = gpu === 'application' ? ` (GPU: ${ev.gpuFaults!.map((f) => `Xid ${f.xid}`).join(', ')}, the application's own error)` : '';
  const words = x.signal ? `killed by signal ${x.signal}` : `exited with code ${x.exitCode}${slurmNote(slurm)}`;
  if (code !== null && input.restartOnExit?.includes(code)) {
    return { ...make('failed', 'user_error', `${words}, which it asks to be restarted on`), restartable: true };
  }
  return make('failed', 'user_error', `${words}${appXid}`);
}

function slurmNote(slurm: SlurmEnd | undefined): string {
  const r = slurm?.reason;
  return r && r !== 'NonZeroExitCode' && r !== 'None' ? ` (Slurm: ${r})` : '';
}

function isHardwareFault(f: { xid?: number }): boolean {
  return f.xid === undefined || GPU_FAULT_XIDS.has(f.xid);
}

/** 'hardware' when any observation is a GPU fault, 'application' when all are application Xids, null otherwise. */
function gpuVerdict(faults: AttemptEvidence['gpuFaults']): 'hardware' | 'application' | null {
  if (!faults?.length) return null;
  if (faults.some(isHardwareFault)) return 'hardware';
  return faults.some((f) => f.xid !== undefined && APPLICATION_XIDS.has(f.xid)) ? 'application' : null;
}

function evidenceOf(end: ClassifyInput['end'], slurm: SlurmEnd | undefined): AttemptEvidence {
  const e: Evidence = ('evidence' in end && end.evidence) || {};
  const out: AttemptEvidence = { ...e };
  if ('exitCode' in end) {
    out.exitCode = end.exitCode;
    if (end.signal) out.signal = end.signal;
    if (end.oomKilled) out.oomKilled = true;
    if (end.startError) out.startError = end.startError;
  } else if ('startError' in end && end.startError) out.startError = end.startError;
  if (slurm && !out.slurm) out.slurm = { state: slurm.state, ...(slurm.reason ? { reason: slurm.reason } : {}) };
  return out;
}

/** The evidence in a few words, for lists and the log's marker line: "unreachable 72 s, container gone after reboot". */
export function summarize(e: AttemptEvidence): string {
  const parts: string[] = [];
  if (e.hostUnreachableSec !== undefined) parts.push(`unreachable ${Math.round(e.hostUnreachableSec)} s`);
  if (e.bootIdChanged) parts.push('rebooted');
  if (e.runtimeGone) parts.push(e.runtimeGone);
  if (e.engineDown) parts.push(e.engineDown);
  if (e.workspaceLost) parts.push(`workspace: ${e.workspaceLost.reason}`);
  for (const g of e.gpuFaults ?? []) parts.push(`GPU ${g.gpu}: ${g.xid !== undefined ? `Xid ${g.xid}` : g.detail}`);
  if (e.slurm) parts.push(`Slurm ${e.slurm.state}${e.slurm.reason && e.slurm.reason !== 'None' ? ` (${e.slurm.reason})` : ''}`);
  if (e.exitCode !== undefined && e.exitCode !== null && !e.slurm) parts.push(`exit ${e.exitCode}`);
  for (const n of e.notes ?? []) parts.push(n);
  return parts.join(', ');
}

/** How an attempt ended, in a few words: "host_lost on gpu1 (unreachable 72 s, container gone after reboot)". */
export function describeEnd(a: { fault: Fault | null; host: string | null; evidence: AttemptEvidence; reason: string | null }): string {
  const ev = summarize(a.evidence);
  return `${a.fault ?? 'end'}${a.host ? ` on ${a.host}` : ''}${ev ? ` (${ev})` : a.reason ? ` (${a.reason})` : ''}`;
}

/** The line the broker writes into the job's log before attempt `n`'s output. */
export function attemptMarker(n: number, of: number, previous: Parameters<typeof describeEnd>[0]): string {
  return `── attempt ${n}/${of} after ${describeEnd(previous)} ──\n`;
}
