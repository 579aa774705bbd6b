#!/usr/bin/env bash
# Runs every libFuzzer target in a fuzz build for a bounded time and count,
# each from its own committed seeds in tests/fuzz/corpus/<target> (read-only:
# new inputs go to a temporary directory). Runs all targets, prints each
# one's executions and coverage (cov/ft and -print_final_stats), and fails if
# any target found a crash, hang or oracle violation; reproducers are saved
# as $FUZZ_ARTIFACTS/<target>-crash-* (default: the current directory).
#
#   scripts/run-fuzz.sh BUILD_DIR [SECONDS] [RUNS] [TARGET...]
#
# SHMLANE_FUZZ_SKIP=name,... switches off oracles tied to a known defect
# (tests/fuzz/fuzz_harness.h); SHMLANE_FUZZ_SLACK_MS changes the deadline
# slack (50 ms).
set -uo pipefail
build=${1:?usage: run-fuzz.sh BUILD_DIR [SECONDS] [RUNS] [TARGET...]}
seconds=${2:-60}
runs=${3:-2000000}
shift $(($# < 3 ? $# : 3))
root=$(cd "$(dirname "$0")/.." && pwd)
artifacts=${FUZZ_ARTIFACTS:-$PWD}
mkdir -p "$artifacts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
summary=()
for target in "$build"/tests/fuzz/*_fuzz; do
  [ -x "$target" ] || continue
  name=$(basename "$target")
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  seeds="$root/tests/fuzz/corpus/$name"
  mkdir -p "$work/$name"
  echo "fuzz: $name for ${seconds}s or ${runs} runs (seeds: tests/fuzz/corpus/$name)"
  log="$work/$name.log"
  # -timeout is only the backstop: every call already has a deadline oracle
  # and a watchdog inside the target (one input stays well under a second).
  "$target" -max_total_time="$seconds" -runs="$runs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$name-" "$work/$name" \
    $( [ -d "$seeds" ] && echo "$seeds" ) >"$log" 2>&1
  rc=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(echo "$done_line" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+')
  ft=$(echo "$done_line" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+')
  corp=$(echo "$done_line" | grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' | cut -d' ' -f2)
  if [ $rc -ne 0 ]; then
    cat "$log"
    failed+=("$name")
    summary+=("$(printf '%-14s FAILED (rc %d)' "$name" "$rc")")
  else
    grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::|Done [0-9]+ runs)' "$log"
    summary+=("$(printf '%-14s %9s execs %6s/s  cov %5s  ft %6s  corpus %s' "$name" "${execs:-?}" \
      "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")")
  fi
done
echo "fuzz summary (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (reproducers: $artifacts/<target>-crash-*)" >&2
  exit 1
fi
