#!/usr/bin/env bash
# `make install` works for a program outside the tree: install the build into
# a temporary prefix, build tests/deploy/outoftree against it once with
# find_package(shmlane CONFIG) and once with pkg-config, and run both
# programs (C++ and C ABI) against a real shmlaned: a channel is created with
# shmlanectl, each program attaches as producer and writes one frame.
source "$(dirname "$0")/lib.sh"
: "${SHMLANE_BUILD_DIR:?}" "${SHMLANE_SOURCE_DIR:?}" "${SHMLANED:?}" "${SHMLANECTL:?}" "${CMAKE_COMMAND:?}"
need pkg-config "builds the program with pkg-config"
need c++ "compiles the out-of-tree program"

prefix=$SCRATCH/prefix
log "cmake --install $SHMLANE_BUILD_DIR --prefix $prefix"
"$CMAKE_COMMAND" --install "$SHMLANE_BUILD_DIR" --prefix "$prefix" >"$SCRATCH/install.log" 2>&1 ||
  { cat "$SCRATCH/install.log" >&2; die "cmake --install failed"; }
for f in bin/shmlaned bin/shmlanectl include/shmlane/clients/producer.h \
  include/shmlane/clients/shmlane.h include/shmlane/dataplane/lane.h \
  lib/cmake/shmlane/shmlaneConfig.cmake lib/pkgconfig/shmlane.pc lib/pkgconfig/shmlane-c.pc; do
  [ -e "$prefix/$f" ] || die "not installed: $f"
done
libdir=$(dirname "$(find "$prefix" -name libshmlane_client.a -print -quit)")
[ -n "$libdir" ] || die "libshmlane_client.a not installed"

# The source tree must not leak into the package: a user has only the prefix.
if grep -rl -e "$SHMLANE_SOURCE_DIR" -e "$SHMLANE_BUILD_DIR" "$prefix/lib/cmake" "$libdir/pkgconfig"; then
  die "installed CMake/pkg-config files name the source or build tree"
fi

# 1. CMake: find_package(shmlane CONFIG) in a project that is not ours.
log "out-of-tree build with find_package(shmlane CONFIG)"
t0=$(date +%s)
"$CMAKE_COMMAND" -S "$SHMLANE_SOURCE_DIR/tests/deploy/outoftree" -B "$SCRATCH/cmake-build" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >"$SCRATCH/cmake.log" 2>&1 ||
  { cat "$SCRATCH/cmake.log" >&2; die "configuring the out-of-tree project failed"; }
"$CMAKE_COMMAND" --build "$SCRATCH/cmake-build" -j2 >>"$SCRATCH/cmake.log" 2>&1 ||
  { cat "$SCRATCH/cmake.log" >&2; die "building the out-of-tree project failed"; }
log "  built in $(($(date +%s) - t0))s"

# 2. pkg-config: plain compiler command lines.
log "out-of-tree build with pkg-config"
t0=$(date +%s)
export PKG_CONFIG_PATH="$libdir/pkgconfig"
src=$SHMLANE_SOURCE_DIR/tests/deploy/outoftree
mkdir -p "$SCRATCH/pc-build"
# shellcheck disable=SC2046
c++ -std=c++20 -O1 -o "$SCRATCH/pc-build/produce_one" "$src/produce_one.cc" \
  $(pkg-config --cflags --libs shmlane) >"$SCRATCH/pc.log" 2>&1 ||
  { cat "$SCRATCH/pc.log" >&2; die "c++ with \$(pkg-config --cflags --libs shmlane) failed"; }
# shellcheck disable=SC2046
cc -std=c11 -O1 -c -o "$SCRATCH/pc-build/produce_one_c.o" "$src/produce_one_c.c" \
  $(pkg-config --cflags shmlane-c) >>"$SCRATCH/pc.log" 2>&1 ||
  { cat "$SCRATCH/pc.log" >&2; die "cc with \$(pkg-config --cflags shmlane-c) failed"; }
# shellcheck disable=SC2046
c++ -o "$SCRATCH/pc-build/produce_one_c" "$SCRATCH/pc-build/produce_one_c.o" \
  $(pkg-config --libs shmlane-c) >>"$SCRATCH/pc.log" 2>&1 ||
  { cat "$SCRATCH/pc.log" >&2; die "linking the C program with \$(pkg-config --libs shmlane-c) failed"; }
log "  built in $(($(date +%s) - t0))s"

# 3. Run them against a real daemon: the installed one.
rt=$SCRATCH/run/shmlane
mkdir -p "$SCRATCH/run"
start_daemon "$prefix/bin/shmlaned" "$rt" "$SCRATCH/daemon.log" --state-file "$SCRATCH/state"
"$prefix/bin/shmlanectl" --runtime-dir "$rt" channel create outoftree >/dev/null ||
  die "shmlanectl channel create outoftree failed"
for p in cmake-build/produce_one cmake-build/produce_one_c pc-build/produce_one pc-build/produce_one_c; do
  set +e
  out=$(timeout 30 "$SCRATCH/$p" "$rt" outoftree 2>&1)
  rc=$?
  set -e
  echo "$out"
  [ "$rc" -eq 0 ] || die "$p exited $rc"
  case "$out" in *"wrote "*) ;; *) die "$p did not say it wrote a frame" ;; esac
done
# The daemon saw the producers: the channel's stats count frames.
"$prefix/bin/shmlanectl" --runtime-dir "$rt" --json stats outoftree >"$SCRATCH/stats.json" ||
  die "shmlanectl stats outoftree failed"
log "stats: $(tr -d '\n ' <"$SCRATCH/stats.json" | cut -c1-300)"
sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["frames_sent"])' "$SCRATCH/stats.json")
[ "$sent" = "4" ] || die "the daemon counts $sent frames sent on channel outoftree, expected 4 (one per program)"
