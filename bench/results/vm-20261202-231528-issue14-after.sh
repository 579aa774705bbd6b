#!/bin/bash
# The command with the 0.1.0 code ("after" only; the "before" rows,
# main at 7f7db9f, are in vm-20261201-234149-issue14-before-after.jsonl),
# 3 interleaved rounds. Run from the repository root after a release build.
A=${A:-build/release/bench/shmlane-bench}
CMD="--pattern openloop --clients 1 --rate 20000 --duration 2 --warmup 0.5 --json"
OUT=${OUT:?set OUT to the .jsonl to write}
: > "$OUT"
run() { # tag cmd...
  local tag=$1; shift
  "$@" 2>/dev/null | sed "s/^{/{\"tag\":\"$tag\",/" >> "$OUT"
}
for r in 1 2 3; do
  echo "round $r: $(cat /proc/loadavg)" >&2
  run after-nolimit-shm $A --transport shm $CMD
  run after-nolimit-uds $A --transport uds $CMD
  run after-cpu1-shm-balanced $A --transport shm --cpu-limit 1 $CMD
  run after-cpu1-uds $A --transport uds --cpu-limit 1 $CMD
  run after-cpu1-shm-park $A --transport shm --wait park --cpu-limit 1 $CMD
  run after-cpu1-shm-latency $A --transport shm --wait adaptive --cpu-limit 1 $CMD
done
echo "end: $(cat /proc/loadavg)" >&2
