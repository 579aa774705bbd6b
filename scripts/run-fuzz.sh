#!/usr/bin/env bash
# Runs every libFuzzer target in a fuzz build for a bounded time and count,
# starting from the committed seeds in tests/fuzz/corpus (read-only: new
# inputs go to a temporary directory).
set -euo pipefail
build=${1:?usage: run-fuzz.sh BUILD_DIR [SECONDS] [RUNS]}
seconds=${2:-60}
runs=${3:-2000000}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in "$build"/tests/fuzz/*_fuzz; do
  [ -x "$target" ] || continue
  echo "fuzz: $(basename "$target") for ${seconds}s or ${runs} runs"
  "$target" -max_total_time="$seconds" -runs="$runs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$work" "$root/tests/fuzz/corpus"
done
