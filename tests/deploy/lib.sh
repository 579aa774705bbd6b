# Shared helpers of the deploy tests (sourced). Each test is a bash script
# run by ctest with a TIMEOUT; exit 77 is ctest's SKIP_RETURN_CODE, used only
# when a tool the test needs is not installed (scripts/install-deps.sh
# installs them all).
set -euo pipefail

DEPLOY_TEST_NAME=${DEPLOY_TEST_NAME:-$(basename "$0" .sh)}
DEPLOY_TEST_START=$(date +%s.%N)

log() { echo "[$DEPLOY_TEST_NAME] $*"; }
die() { echo "[$DEPLOY_TEST_NAME] FAIL: $*" >&2; exit 1; }

# skip TOOL WHY: the loud, unmistakable message of a test that did not run.
skip() {
  {
    echo "================================================================"
    echo "[$DEPLOY_TEST_NAME] SKIPPED: $1 is not installed ($2)."
    echo "[$DEPLOY_TEST_NAME] Install it with scripts/install-deps.sh; nothing was tested."
    echo "================================================================"
  } >&2
  exit 77
}

need() {  # need TOOL [WHY]
  command -v "$1" >/dev/null 2>&1 || skip "$1" "${2:-needed by this test}"
}

elapsed() { echo "$(date +%s.%N) $DEPLOY_TEST_START" | awk '{printf "%.1f", $1 - $2}'; }

# Scratch directory removed on exit, plus extra cleanup commands.
DEPLOY_CLEANUPS=()
on_exit() {
  local rc=$?
  local i
  for ((i = ${#DEPLOY_CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${DEPLOY_CLEANUPS[$i]}" || true
  done
  if [ "$rc" -eq 0 ]; then
    log "PASS in $(elapsed)s"
  elif [ "$rc" -ne 77 ]; then
    log "exit $rc after $(elapsed)s"
  fi
}
trap on_exit EXIT
cleanup() { DEPLOY_CLEANUPS+=("$1"); }

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/shmlane-$DEPLOY_TEST_NAME.XXXXXX")
cleanup "rm -rf '$SCRATCH'"

# start_daemon SHMLANED RUNTIME_DIR LOG [ARGS...]: starts shmlaned in the
# background (killed on exit) and waits until `shmlanectl health` answers
# SERVING, at most 20 s. Sets DAEMON_PID.
start_daemon() {
  local shmlaned=$1 dir=$2 logfile=$3
  shift 3
  "$shmlaned" --runtime-dir "$dir" --metrics-listen none "$@" >"$logfile" 2>&1 &
  DAEMON_PID=$!
  cleanup "kill -TERM $DAEMON_PID 2>/dev/null; wait $DAEMON_PID 2>/dev/null"
  wait_healthy "$dir" 20 || { cat "$logfile" >&2; die "shmlaned did not become healthy in 20 s"; }
}

# wait_healthy RUNTIME_DIR SECONDS [SHMLANECTL]
wait_healthy() {
  local dir=$1 seconds=$2 ctl=${3:-$SHMLANECTL}
  local deadline=$(($(date +%s) + seconds))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if "$ctl" --runtime-dir "$dir" --timeout 1s health >/dev/null 2>&1; then
      return 0
    fi
    if [ -n "${DAEMON_PID:-}" ] && ! kill -0 "$DAEMON_PID" 2>/dev/null; then
      return 1
    fi
    sleep 0.1
  done
  return 1
}
