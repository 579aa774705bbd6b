#!/usr/bin/env bash
# Runs the README's "one-minute tour" as written, from the source directory,
# with a temporary runtime directory and a free metrics port in place of the
# README's /tmp/shmlane-tour and 9464 (the only substitutions), under a time
# bound, and checks what a reader should see.
set -euo pipefail
src=${1:?usage: readme_tour_test.sh SOURCE_DIR}
cd "$src"
scratch=$(mktemp -d)
trap 'pkill -f -- "$scratch" 2>/dev/null || true; rm -rf "$scratch"' EXIT
die() { echo "readme_tour_test: $*" >&2; exit 1; }

awk '/^## A one-minute tour/{f=1} f&&/^```sh$/{g=1; next} g&&/^```$/{exit} g' README.md >"$scratch/tour.sh"
[ "$(wc -l <"$scratch/tour.sh")" -gt 10 ] || die "could not find the tour's sh block in README.md"
grep -q '/tmp/shmlane-tour' "$scratch/tour.sh" || die "the tour no longer uses /tmp/shmlane-tour"
grep -q '9464' "$scratch/tour.sh" || die "the tour no longer uses port 9464"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i -e "s|/tmp/shmlane-tour|$scratch/rt|g" -e "s|9464|$port|g" "$scratch/tour.sh"

set +e
timeout 240 bash -euo pipefail "$scratch/tour.sh" >"$scratch/out.txt" 2>"$scratch/err.txt"
rc=$?
set -e
cat "$scratch/out.txt"
if [ "$rc" -ne 0 ]; then
  cat "$scratch/err.txt" >&2
  die "the tour failed (exit $rc)"
fi
grep -q 'shmlane_frames_total' "$scratch/out.txt" || die "no shmlane_frames_total in the metrics step"
grep -q 'p1' "$scratch/out.txt" && grep -q 'p2' "$scratch/out.txt" ||
  die "the consumer did not report both producers"
grep -qi 'round trip\|rtt\|p50' "$scratch/out.txt" || die "echo_client printed no latency"
grep -q 'publisher.py: wrote [0-9]* frames to 2 subscribers' "$scratch/out.txt" ||
  die "publisher.py did not publish to both Python subscribers"
[ "$(grep -c 'subscriber.py: 100000 frames, 0 missed, 0 out of order' "$scratch/out.txt")" -eq 2 ] ||
  die "the two Python subscribers did not both read every frame in order"
echo "readme_tour_test: the README tour ran as written ($(wc -l <"$scratch/tour.sh") lines)"
