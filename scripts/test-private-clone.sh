#!/usr/bin/env bash
# Runs the tests that drop to another uid from a clone inside a 0700
# directory, as a root user's `git clone` into $HOME is: the test binaries
# then lie where other users cannot reach them, and the tests must still
# work (they copy what another uid runs into a 0755 temporary directory).
# Needs root to switch uids; without it the tests skip and say so.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
private=$(mktemp -d)  # 0700
trap 'rm -rf "$private"' EXIT
chmod 0700 "$private"
git clone -q "$root" "$private/shmlane"
cd "$private/shmlane"
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target \
  shmlaned shmlanectl client_test_peer client_integration_test daemon_attach_test
ctest --preset release -R '^(client_integration_test|daemon_attach_test)$'
