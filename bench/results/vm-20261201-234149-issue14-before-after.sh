#!/bin/bash
# Before (main at 7f7db9f) and after (h-wait14) with the command, interleaved, 3 rounds.
# B: shmlane-bench built from main at 7f7db9f (before); A: from h-wait14 (after)
B=/tmp/wait14-before/bench/shmlane-bench
A=/tmp/wait14-after/bench/shmlane-bench
CMD="--pattern openloop --clients 1 --rate 20000 --duration 2 --warmup 0.5 --json"
OUT=/tmp/wait14-results/beforeafter.jsonl
: > $OUT
cg=/sys/fs/cgroup/cpu/wait14-before
mkdir -p $cg; echo 100000 > $cg/cpu.cfs_period_us; echo 100000 > $cg/cpu.cfs_quota_us
run() { # tag cmd...
  local tag=$1; shift
  "$@" 2>/dev/null | sed "s/^{/{\"tag\":\"$tag\",/" >> $OUT
}
incg() { # run in the manual 1-CPU cgroup (as the issue did)
  local tag=$1; shift
  ( echo $BASHPID > $cg/cgroup.procs; exec "$@" ) 2>/dev/null | sed "s/^{/{\"tag\":\"$tag\",/" >> $OUT
}
for r in 1 2 3; do
  uptime >> /tmp/wait14-results/beforeafter-load.txt
  run before-nolimit-shm $B --transport shm $CMD
  run before-nolimit-uds $B --transport uds $CMD
  run after-nolimit-shm $A --transport shm $CMD
  run after-nolimit-uds $A --transport uds $CMD
  incg before-cpu1-shm-adaptive $B --transport shm $CMD
  incg before-cpu1-uds $B --transport uds $CMD
  incg before-cpu1-shm-park $B --transport shm --wait park $CMD
  run after-cpu1-shm-balanced $A --transport shm --cpu-limit 1 $CMD
  run after-cpu1-uds $A --transport uds --cpu-limit 1 $CMD
  run after-cpu1-shm-park $A --transport shm --wait park --cpu-limit 1 $CMD
  run after-cpu1-shm-latency $A --transport shm --wait adaptive --cpu-limit 1 $CMD
done
uptime >> /tmp/wait14-results/beforeafter-load.txt
rmdir $cg
