#!/usr/bin/env bash
# The .deb packages of `make package`: built here with cpack from the current
# build, their control fields and contents checked with dpkg-deb, unpacked
# with dpkg -x into a scratch root where the daemon starts and answers a
# health check, and lintian reports no errors (its warnings are printed).
source "$(dirname "$0")/lib.sh"
: "${SHMLANE_BUILD_DIR:?}" "${CPACK_COMMAND:?}" "${SHMLANECTL:?}"
need dpkg-deb "Debian package dpkg"
need dpkg-shlibdeps "Debian package dpkg-dev (CPACK_DEBIAN_PACKAGE_SHLIBDEPS)"
need lintian "Debian package lintian"

log "cpack -G DEB"
t0=$(date +%s)
"$CPACK_COMMAND" --config "$SHMLANE_BUILD_DIR/CPackConfig.cmake" -B "$SCRATCH/packages" \
  >"$SCRATCH/cpack.log" 2>&1 || { cat "$SCRATCH/cpack.log" >&2; die "cpack failed"; }
log "  packaged in $(($(date +%s) - t0))s"
deb=$(ls "$SCRATCH"/packages/shmlane_*.deb 2>/dev/null | head -1)
dev=$(ls "$SCRATCH"/packages/shmlane-dev_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || die "no shmlane_*.deb in $SCRATCH/packages"
[ -n "$dev" ] || die "no shmlane-dev_*.deb in $SCRATCH/packages"
log "$(basename "$deb") $(du -h "$deb" | cut -f1), $(basename "$dev") $(du -h "$dev" | cut -f1)"

field() { dpkg-deb --field "$1" "$2"; }
[ "$(field "$deb" Package)" = shmlane ] || die "runtime package is not named shmlane"
[ "$(field "$dev" Package)" = shmlane-dev ] || die "dev package is not named shmlane-dev"
depends=$(field "$deb" Depends)
log "Depends: $depends"
# dpkg-shlibdeps found Debian's runtime libraries (not a hand-written list).
for lib in libgrpc++1.51 libprotobuf32 libabsl20220623 libstdc++6 libc6; do
  case ", $depends," in *", $lib "* | *", $lib,"*) ;; *) die "Depends lacks $lib: $depends" ;; esac
done
case "$(field "$dev" Depends)" in *libgrpc++-dev*libprotobuf-dev*libabsl-dev*) ;;
  *) die "shmlane-dev Depends lacks the -dev packages: $(field "$dev" Depends)" ;; esac
dpkg-deb --info "$deb" >/dev/null || die "dpkg-deb --info failed"

dpkg-deb --contents "$deb" >"$SCRATCH/contents.txt"
dpkg-deb --contents "$dev" >"$SCRATCH/contents-dev.txt"
for f in ./usr/bin/shmlaned ./usr/bin/shmlanectl ./usr/lib/systemd/system/shmlaned.service \
  ./usr/share/doc/shmlane/copyright ./usr/share/doc/shmlane/changelog.gz \
  ./usr/share/doc/shmlane/deployment.md ./usr/share/doc/shmlane/README.md \
  ./usr/share/doc/shmlane/examples/shmlaned.textproto \
  ./usr/share/man/man8/shmlaned.8.gz ./usr/share/man/man1/shmlanectl.1.gz; do
  grep -q " $f\$" "$SCRATCH/contents.txt" || die "shmlane .deb lacks $f"
done
for f in include/shmlane/clients/producer.h include/shmlane/clients/shmlane.h \
  libshmlane_client.a cmake/shmlane/shmlaneConfig.cmake pkgconfig/shmlane.pc; do
  grep -q "/$f\$" "$SCRATCH/contents-dev.txt" || die "shmlane-dev .deb lacks $f"
done
# Owned by root, no setuid/setgid, nothing outside /usr (no /etc conffiles).
if awk '$2 != "root/root"' "$SCRATCH/contents.txt" "$SCRATCH/contents-dev.txt" | grep .; then
  die "files not owned by root/root"
fi
if awk '$1 ~ /^-..[sS]|^-.....[sS]/' "$SCRATCH/contents.txt" | grep .; then die "setuid/setgid files"; fi
if awk '{print $6}' "$SCRATCH/contents.txt" | grep -v '^\./usr/' | grep -v '^\./$'; then
  die "files outside /usr"
fi

root=$SCRATCH/root
dpkg -x "$deb" "$root"
dpkg -x "$dev" "$root"
grep -q '^ExecStart=/usr/bin/shmlaned ' "$root/usr/lib/systemd/system/shmlaned.service" ||
  die "packaged unit's ExecStart is not /usr/bin/shmlaned"
file_out=$(file -b "$root/usr/bin/shmlaned" 2>/dev/null || true)
case "$file_out" in *"not stripped"*) die "packaged shmlaned is not stripped: $file_out" ;; esac
"$root/usr/bin/shmlaned" --version || die "unpacked shmlaned --version failed"
rt=$SCRATCH/run/shmlane
mkdir -p "$SCRATCH/run"
start_daemon "$root/usr/bin/shmlaned" "$rt" "$SCRATCH/daemon.log" --state-file "$SCRATCH/state"
"$root/usr/bin/shmlanectl" --runtime-dir "$rt" health || die "unpacked shmlanectl health failed"

log "lintian"
t0=$(date +%s)
set +e
lintian --tag-display-limit 0 --fail-on error "$deb" "$dev" >"$SCRATCH/lintian.log" 2>&1
rc=$?
set -e
grep -v 'running with root privileges' "$SCRATCH/lintian.log" || true
log "  lintian took $(($(date +%s) - t0))s"
if [ "$rc" -ne 0 ] || grep -q '^E: ' "$SCRATCH/lintian.log"; then
  die "lintian reports errors (exit $rc)"
fi
log "lintian: no errors, $(grep -c '^W: ' "$SCRATCH/lintian.log" || true) warnings"
