#!/usr/bin/env bash
# Starts a real single-node Slurm (22.05 from Debian) for test/integration/slurm-*.test.ts: munged, slurmctld and
# slurmd on ports 6817/6818, partitions `online` (default) and `offline`, and 2 GPUs declared through gres with
# stand-in device files (there is no GPU here; Slurm only needs files to hand out), and a partition `urgent` of a
# higher priority tier whose jobs preempt (cancel, state PREEMPTED) jobs of the other two, as a site's preemption
# does (only test/integration/slurm-preempt.test.ts submits to it). Idempotent: a second run with
# the daemons up and the node idle changes nothing. Runs as root.
set -euo pipefail

STATE=/tmp/slurm
CONF_DIR=/etc/slurm
mkdir -p "$STATE/state" "$STATE/spool" "$STATE/dev" "$CONF_DIR"

# Stand-in GPU device files (character devices behaving as /dev/null): Slurm's gres/gpu plugin hands them out and
# sets CUDA_VISIBLE_DEVICES for the job, as it does with /dev/nvidia0 and /dev/nvidia1.
for i in 0 1; do
  [ -c "$STATE/dev/gpu$i" ] || { rm -f "$STATE/dev/gpu$i"; mknod -m 666 "$STATE/dev/gpu$i" c 1 3; }
done

conf=$(cat <<CONF
ClusterName=gpurun-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobCompType=jobcomp/none
MinJobAge=600
KillWait=2
SlurmctldPort=6817
SlurmdPort=6818
GresTypes=gpu
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
NodeName=localhost CPUs=2 RealMemory=8000 Gres=gpu:standin:2 State=UNKNOWN
PartitionName=online Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=offline Nodes=localhost MaxTime=INFINITE State=UP
PartitionName=urgent Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=10
CONF
)
gres="NodeName=localhost Name=gpu Type=standin File=$STATE/dev/gpu[0-1]"

changed=0
if [ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null)" != "$conf" ]; then printf '%s\n' "$conf" >"$CONF_DIR/slurm.conf"; changed=1; fi
if [ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null)" != "$gres" ]; then printf '%s\n' "$gres" >"$CONF_DIR/gres.conf"; changed=1; fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

mkdir -p /run/munge && chown munge:munge /run/munge
if ! pgrep -u munge -x munged >/dev/null; then su munge -s /bin/sh -c munged; fi

if [ "$changed" = 1 ]; then
  running "$STATE/slurmd.pid" && kill "$(cat "$STATE/slurmd.pid")" || true
  running "$STATE/slurmctld.pid" && kill "$(cat "$STATE/slurmctld.pid")" || true
  sleep 1
fi
running "$STATE/slurmctld.pid" || slurmctld
running "$STATE/slurmd.pid" || slurmd -N localhost

for i in $(seq 1 60); do
  state=$(sinfo -h -n localhost -o '%t' 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mix|alloc|plnd|comp) echo "slurm: node localhost is $state"; exit 0 ;;
    down*|drain*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm: the node did not become idle; sinfo says: $(sinfo -h -o '%t %E' 2>&1)" >&2
tail -20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
exit 1
