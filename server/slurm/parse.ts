/**
 * Parsers of Slurm's command output and the phase (queued, running, ended) of Slurm's job states. Pure. How an ended
 * job's state maps to a gpurun state and fault is the outcome classifier's (core/outcome.ts). The formats are fixed
 * here (SQUEUE_FORMAT, SACCT_FIELDS) and the parsers are tested with output captured from a real Slurm 22.05.
 */

/** `squeue -o`: job id, state, reason, priority, partition, start time, node list — `|`-separated. */
export const SQUEUE_FORMAT = '%i|%T|%r|%Q|%P|%S|%N';
/** `sacct -n -P -X -o` fields (used where the cluster keeps accounting). */
export const SACCT_FIELDS = 'JobIDRaw,State,ExitCode,Reason,Start,NodeList';

export interface SqueueRow {
  slurmId: string;
  /** Slurm's state name, e.g. PENDING, RUNNING, COMPLETED, CANCELLED. */
  state: string;
  /** Slurm's reason, e.g. Priority, Resources, None. */
  reason: string;
  priority: number;
  partition: string;
  /** ISO-8601 (local time as Slurm prints it, no zone) or null when Slurm does not know it (N/A, Unknown). */
  start: string | null;
  nodes: string;
}

/** The Slurm job id from `sbatch --parsable`'s output ("42" or "42;cluster"). */
export function parseSbatchParsable(stdout: string): string {
  const line = stdout.trim().split('\n').pop() ?? '';
  const id = line.split(';')[0].trim();
  if (!/^\d+$/.test(id)) throw new Error(`sbatch printed no job id: "${stdout.trim().slice(0, 200)}"`);
  return id;
}

function startTime(s: string): string | null {
  return /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/.test(s) ? s : null;
}

/** Rows of `squeue -h -o SQUEUE_FORMAT`. Lines that are not rows (warnings) are skipped. */
export function parseSqueue(stdout: string): SqueueRow[] {
  const rows: SqueueRow[] = [];
  for (const line of stdout.split('\n')) {
    const f = line.trim().split('|');
    if (f.length !== 7 || !/^\d+/.test(f[0])) continue;
    rows.push({ slurmId: f[0], state: f[1], reason: f[2], priority: Number(f[3]) || 0, partition: f[4], start: startTime(f[5]), nodes: f[6] });
  }
  return rows;
}

/** A finished job's record, from `scontrol show job -o ID` or sacct. */
export interface SlurmRecord {
  slurmId: string;
  state: string;
  reason: string;
  /** From Slurm's "CODE:SIGNAL". */
  exitCode: number;
  signal: number;
  start: string | null;
  nodes: string;
}

function exitPair(s: string | undefined): [number, number] {
  const m = /^(\d+):(\d+)$/.exec(s ?? '');
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

/** `scontrol show job -o ID`: one line of Key=Value pairs. Undefined when the line holds no job. */
export function parseScontrolJob(stdout: string): SlurmRecord | undefined {
  const get = (key: string) => new RegExp(`(?:^|\\s)${key}=(\\S*)`).exec(stdout)?.[1];
  const id = get('JobId');
  const state = get('JobState');
  if (!id || !state) return undefined;
  const [exitCode, signal] = exitPair(get('ExitCode'));
  const nodes = get('NodeList');
  return { slurmId: id, state, reason: get('Reason') ?? 'None', exitCode, signal, start: startTime(get('StartTime') ?? ''), nodes: nodes && nodes !== '(null)' ? nodes : '' };
}

/** `sacct -n -P -X -o SACCT_FIELDS`: one job per line, `|`-separated; "CANCELLED by 0" counts as CANCELLED. */
export function parseSacct(stdout: string): SlurmRecord[] {
  const out: SlurmRecord[] = [];
  for (const line of stdout.split('\n')) {
    const f = line.trim().split('|');
    if (f.length !== 6 || !/^\d+$/.test(f[0])) continue;
    const [exitCode, signal] = exitPair(f[2]);
    out.push({ slurmId: f[0], state: f[1].split(' ')[0], reason: f[3] || 'None', exitCode, signal, start: startTime(f[4]), nodes: f[5] === 'None assigned' ? '' : f[5] });
  }
  return out;
}

const PENDING = new Set(['PENDING', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED', 'RESV_DEL_HOLD', 'SPECIAL_EXIT']);
const RUNNING = new Set(['RUNNING', 'CONFIGURING', 'COMPLETING', 'SUSPENDED', 'STAGE_OUT', 'SIGNALING', 'RESIZING', 'STOPPED']);

/** Where a Slurm job is, in gpurun's terms. */
export type Phase = { kind: 'queued' } | { kind: 'running' } | { kind: 'ended' };

export function phaseOf(slurmState: string): Phase {
  if (PENDING.has(slurmState)) return { kind: 'queued' };
  if (RUNNING.has(slurmState)) return { kind: 'running' };
  return { kind: 'ended' };
}

const REASON_WORDS: Record<string, string> = {
  Priority: 'waiting behind jobs of higher priority',
  Resources: 'waiting for free resources',
  Dependency: 'waiting for a job it depends on',
  QOSMaxJobsPerUserLimit: 'waiting: the account runs as many jobs as its QOS allows',
  AssocGrpGRES: 'waiting: the account uses all the GPUs it may',
  ReqNodeNotAvail: 'waiting: the nodes it needs are unavailable',
  PartitionDown: 'waiting: the partition is down',
  BeginTime: 'waiting for its start time',
  JobHeldAdmin: 'held by an administrator',
  JobHeldUser: 'held',
};

/** A pending job's reason in words, keeping Slurm's own word: "waiting for free resources (Slurm: Resources)". */
export function pendingReason(clusterName: string, slurmReason: string): string {
  const words = REASON_WORDS[slurmReason];
  const slurm = slurmReason && slurmReason !== 'None' ? slurmReason : 'submitted';
  return words ? `${words} on cluster ${clusterName} (Slurm: ${slurm})` : `queued on cluster ${clusterName} (Slurm: ${slurm})`;
}

/**
 * 1-based position of each pending job in its partition, in the order Slurm will consider them (priority, then
 * age): the jobs of every user the poll saw, not only gpurun's.
 */
export function pendingPositions(rows: SqueueRow[]): Map<string, number> {
  const byPart = new Map<string, SqueueRow[]>();
  for (const r of rows) if (r.state === 'PENDING') (byPart.get(r.partition) ?? byPart.set(r.partition, []).get(r.partition)!).push(r);
  const pos = new Map<string, number>();
  for (const list of byPart.values()) {
    list.sort((a, b) => b.priority - a.priority || Number(a.slurmId) - Number(b.slurmId));
    list.forEach((r, i) => pos.set(r.slurmId, i + 1));
  }
  return pos;
}
