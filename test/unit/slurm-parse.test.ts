/** Parsers of Slurm's output, on output captured from the real Slurm 22.05 of test/setup/50-slurm.sh. */
import assert from 'node:assert/strict';
import { classify, signalName, type Outcome } from '../../server/core/outcome.ts';
import { parseSacct, parseSbatchParsable, parseScontrolJob, parseSqueue, pendingPositions, pendingReason, phaseOf } from '../../server/slurm/parse.ts';

// squeue -h --states=all --partition=online,offline -o '%i|%T|%r|%Q|%P|%S|%N' (captured)
const SQUEUE = `18|CANCELLED|None|4294901742|offline|2026-11-22T10:18:18|localhost
1|FAILED|NonZeroExitCode|4294901759|offline|2026-11-22T10:09:55|localhost
33|PENDING|Resources|4294901727|offline|2027-11-22T10:19:28|
7|CANCELLED|Priority|4294901753|online|2026-11-22T10:11:21|
32|RUNNING|None|4294901728|online|2026-11-22T10:19:28|localhost
3|PENDING|Resources|4294901757|online|N/A|
5|TIMEOUT|TimeLimit|4294901755|online|2026-11-22T10:11:19|localhost
4|PENDING|Priority|4294901756|online|N/A|
`;

// scontrol show job -o 32 (captured while it ran), 5 (timed out), 6 (killed by signal 9), 34 (completed)
const SC_RUNNING = 'JobId=32 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901728 Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:01 TimeLimit=365-00:00:00 TimeMin=N/A SubmitTime=2026-11-22T10:19:27 EligibleTime=2026-11-22T10:19:27 AccrueTime=2026-11-22T10:19:27 StartTime=2026-11-22T10:19:28 EndTime=2027-11-22T10:19:28 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T10:19:28 Scheduler=Backfill Partition=online AllocNode:Sid=localhost:7237 ReqNodeList=(null) ExcNodeList=(null) NodeList=localhost BatchHost=localhost NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=8000M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/sl StdErr=/dev/null StdIn=/dev/null StdOut=/dev/null Power= TresPerNode=gres:gpu:2 \n';
const SC_PENDING = 'JobId=33 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901727 Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=Resources Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T10:19:27 EligibleTime=2026-11-22T10:19:27 AccrueTime=2026-11-22T10:19:27 StartTime=2027-11-22T10:19:28 EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T10:19:28 Scheduler=Main Partition=offline AllocNode:Sid=localhost:7237 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=8000M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/sl StdErr=/dev/null StdIn=/dev/null StdOut=/dev/null Power= TresPerNode=gres:gpu:1 \n';
const SC_FAILED = 'JobId=1 JobName=t1 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:03 TimeLimit=00:01:00 TimeMin=N/A SubmitTime=2026-11-22T10:09:55 EligibleTime=2026-11-22T10:09:55 AccrueTime=2026-11-22T10:09:55 StartTime=2026-11-22T10:09:55 EndTime=2026-11-22T10:09:58 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T10:09:55 Scheduler=Backfill Partition=offline AllocNode:Sid=localhost:7237 ReqNodeList=(null) ExcNodeList=(null) NodeList=localhost BatchHost=localhost NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=100M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=100M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=/tmp/sl/a.sh WorkDir=/tmp StdErr=/tmp/sl/out-1.log StdIn=/dev/null StdOut=/tmp/sl/out-1.log Power= TresPerNode=gres:gpu:standin:1 \n';
// Fields of the captured TIMEOUT and signal-9 records (scontrol show job -o 5 / 6).
const SC_TIMEOUT = 'JobId=5 JobName=wrap JobState=TIMEOUT Reason=TimeLimit Dependency=(null) ExitCode=0:15 StartTime=2026-11-22T10:11:19 NodeList=localhost StdOut=/tmp/sl/to-5.log\n';
const SC_SIGNAL = 'JobId=6 JobName=wrap JobState=FAILED Reason=JobLaunchFailure Dependency=(null) ExitCode=0:9 StartTime=2026-11-22T10:12:22 NodeList=localhost StdOut=/tmp/sl/k-6.log\n';

describe('slurm parsers', () => {
  it('sbatch --parsable: the job id, with or without a cluster name', () => {
    assert.equal(parseSbatchParsable('32\n'), '32');
    assert.equal(parseSbatchParsable('1234;gpu-cluster\n'), '1234');
    assert.throws(() => parseSbatchParsable(''), /sbatch printed no job id/);
    assert.throws(() => parseSbatchParsable('sbatch: error: Batch job submission failed\n'), /no job id/);
  });

  it('squeue rows, with N/A and empty start/node fields', () => {
    const rows = parseSqueue(SQUEUE);
    assert.equal(rows.length, 8);
    assert.deepEqual(rows[4], { slurmId: '32', state: 'RUNNING', reason: 'None', priority: 4294901728, partition: 'online', start: '2026-11-22T10:19:28', nodes: 'localhost' });
    assert.deepEqual(rows[5], { slurmId: '3', state: 'PENDING', reason: 'Resources', priority: 4294901757, partition: 'online', start: null, nodes: '' });
    assert.deepEqual(parseSqueue('squeue: error: Invalid job id specified\n'), []);
    assert.deepEqual(parseSqueue(''), []);
  });

  it('queue positions per partition, by priority then age, pending jobs only', () => {
    const pos = pendingPositions(parseSqueue(SQUEUE));
    assert.deepEqual(Object.fromEntries(pos), { '33': 1, '3': 1, '4': 2 });
  });

  it('scontrol show job -o: state, reason, exit code and signal', () => {
    assert.deepEqual(parseScontrolJob(SC_RUNNING), { slurmId: '32', state: 'RUNNING', reason: 'None', exitCode: 0, signal: 0, start: '2026-11-22T10:19:28', nodes: 'localhost' });
    assert.equal(parseScontrolJob(SC_PENDING)!.nodes, '');
    assert.equal(parseScontrolJob(SC_PENDING)!.reason, 'Resources');
    assert.deepEqual(parseScontrolJob(SC_FAILED), { slurmId: '1', state: 'FAILED', reason: 'NonZeroExitCode', exitCode: 3, signal: 0, start: '2026-11-22T10:09:55', nodes: 'localhost' });
    assert.equal(parseScontrolJob('slurm_load_jobs error: Invalid job id specified\n'), undefined);
  });

  it('sacct -n -P -X: one record per job, "CANCELLED by UID" as CANCELLED', () => {
    // Format as documented for sacct --parsable2 (this machine keeps no accounting to capture from).
    const out = '41|COMPLETED|0:0|None|2026-11-22T10:19:28|node01\n42|CANCELLED by 1000|0:15|None|2026-11-22T10:20:00|node02\n43|PENDING|0:0|Priority|Unknown|None assigned\n';
    const recs = parseSacct(out);
    assert.deepEqual(recs.map((r) => [r.slurmId, r.state, r.exitCode, r.signal, r.nodes]), [
      ['41', 'COMPLETED', 0, 0, 'node01'],
      ['42', 'CANCELLED', 0, 15, 'node02'],
      ['43', 'PENDING', 0, 0, ''],
    ]);
  });

  it('maps every Slurm state to a phase', () => {
    for (const s of ['PENDING', 'REQUEUED']) assert.equal(phaseOf(s).kind, 'queued');
    for (const s of ['RUNNING', 'CONFIGURING', 'COMPLETING', 'SUSPENDED']) assert.equal(phaseOf(s).kind, 'running');
    for (const s of ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'PREEMPTED', 'OUT_OF_MEMORY', 'BOOT_FAIL', 'DEADLINE']) assert.equal(phaseOf(s).kind, 'ended');
  });

  it('gives the outcome classifier what it needs from captured final records', () => {
    const of = (text: string) => {
      const r = parseScontrolJob(text)!;
      return classify({ end: { exitCode: r.signal ? null : r.exitCode, signal: r.signal ? signalName(r.signal) : null, endedAt: 't' }, stopIntent: null, slurm: r });
    };
    assert.deepEqual(pick(of(SC_FAILED)), { state: 'failed', fault: 'user_error', reason: 'exited with code 3', exitCode: 3 });
    assert.deepEqual(pick(of(SC_SIGNAL)), { state: 'failed', fault: 'user_error', reason: 'killed by signal SIGKILL', exitCode: 137 });
    assert.deepEqual(pick(of(SC_TIMEOUT)), { state: 'timed_out', fault: 'timed_out', reason: 'Slurm stopped it at its time limit (Slurm: TIMEOUT)', exitCode: 143 });
  });

  it('says why a job waits, keeping Slurm\'s word', () => {
    assert.equal(pendingReason('gpu', 'Resources'), 'waiting for free resources on cluster gpu (Slurm: Resources)');
    assert.equal(pendingReason('gpu', 'Priority'), 'waiting behind jobs of higher priority on cluster gpu (Slurm: Priority)');
    assert.equal(pendingReason('gpu', 'AssocMaxJobsLimit'), 'queued on cluster gpu (Slurm: AssocMaxJobsLimit)');
    assert.equal(pendingReason('gpu', 'None'), 'queued on cluster gpu (Slurm: submitted)');
  });
});

function pick(o: Outcome): Pick<Outcome, 'state' | 'fault' | 'reason' | 'exitCode'> {
  return { state: o.state, fault: o.fault, reason: o.reason, exitCode: o.exitCode };
}
