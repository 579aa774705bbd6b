#!/usr/bin/env bash
# The .deb packages of `make package`: built here with cpack from the current
# build, their control fields and contents checked with dpkg-deb, unpacked
# with dpkg -x into a scratch root where the daemon starts and answers a
# health check, and lintian reports no errors (its warnings are printed).
# python3-shmlane (when the build made the Python package): the package in
# /usr/lib/python3/dist-packages, imported from the unpacked root by
# /usr/bin/python3, which creates a channel with shmlane.control and moves a
# frame through it to a zero-copy peek.
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
# The Python package is packaged whenever clients/python built it (pybind11
# and python3-dev there): cmake/shmlane_cpack.cmake lists its component.
py=""
if compgen -G "$SHMLANE_BUILD_DIR/clients/python/shmlane/_shmlane.*.so" >/dev/null; then
  py=$(ls "$SCRATCH"/packages/python3-shmlane_*.deb 2>/dev/null | head -1)
  [ -n "$py" ] || die "no python3-shmlane_*.deb in $SCRATCH/packages"
  log "$(basename "$py") $(du -h "$py" | cut -f1)"
else
  log "NOTE: the build has no Python package (no pybind11?): python3-shmlane not checked"
fi

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
if [ -n "$py" ]; then
  [ "$(field "$py" Package)" = python3-shmlane ] || die "Python package is not python3-shmlane"
  [ "$(field "$py" Section)" = python ] || die "python3-shmlane Section: $(field "$py" Section)"
  pydepends=$(field "$py" Depends)
  log "python3-shmlane Depends: $pydepends; Recommends: $(field "$py" Recommends)"
  # The extension's interpreter version, and what it links (dpkg-shlibdeps).
  pyv=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  case "$pydepends" in *"python3 (>= $pyv~)"*"python3 (<< "*) ;;
    *) die "python3-shmlane Depends lacks python3 (>= $pyv~), python3 (<< ...): $pydepends" ;; esac
  for lib in libabsl20220623 libstdc++6 libc6; do
    case ", $pydepends," in *", $lib "* | *", $lib,"*) ;;
      *) die "python3-shmlane Depends lacks $lib: $pydepends" ;; esac
  done
  [ "$(field "$py" Recommends)" = "python3-grpcio, python3-protobuf" ] ||
    die "python3-shmlane Recommends: $(field "$py" Recommends)"
  control_files=$(dpkg-deb --ctrl-tarfile "$py" | tar -t)
  grep -qx './postinst' <<<"$control_files" && grep -qx './prerm' <<<"$control_files" ||
    die "python3-shmlane has no postinst/prerm (py3compile, py3clean): $control_files"
fi

dpkg-deb --contents "$deb" >"$SCRATCH/contents.txt"
dpkg-deb --contents "$dev" >"$SCRATCH/contents-dev.txt"
: >"$SCRATCH/contents-py.txt"
if [ -n "$py" ]; then
  dpkg-deb --contents "$py" >"$SCRATCH/contents-py.txt"
  site=./usr/lib/python3/dist-packages/shmlane
  for f in $site/__init__.py $site/_errors.py $site/control.py $site/_shmlane.pyi \
    $site/py.typed $site/v1/__init__.py $site/v1/control_pb2.py $site/v1/control_pb2_grpc.py \
    ./usr/share/doc/python3-shmlane/copyright ./usr/share/doc/python3-shmlane/changelog.gz; do
    grep -q " $f\$" "$SCRATCH/contents-py.txt" || die "python3-shmlane .deb lacks $f"
  done
  grep -Eq " $site/_shmlane\.cpython-[0-9]+-[^/]*\.so\$" "$SCRATCH/contents-py.txt" ||
    die "python3-shmlane .deb lacks the extension $site/_shmlane.cpython-*.so"
  if grep -E '__pycache__|\.pyc$' "$SCRATCH/contents-py.txt"; then
    die "python3-shmlane ships bytecode (postinst compiles it)"
  fi
fi
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
all_contents=("$SCRATCH/contents.txt" "$SCRATCH/contents-dev.txt" "$SCRATCH/contents-py.txt")
if awk '$2 != "root/root"' "${all_contents[@]}" | grep .; then
  die "files not owned by root/root"
fi
if awk '$1 ~ /^-..[sS]|^-.....[sS]/' "${all_contents[@]}" | grep .; then
  die "setuid/setgid files"
fi
if awk '{print $6}' "$SCRATCH/contents.txt" "$SCRATCH/contents-py.txt" | grep -v '^\./usr/' |
  grep -v '^\./$'; then
  die "files outside /usr"
fi

root=$SCRATCH/root
dpkg -x "$deb" "$root"
dpkg -x "$dev" "$root"
[ -z "$py" ] || dpkg -x "$py" "$root"
grep -q '^ExecStart=/usr/bin/shmlaned ' "$root/usr/lib/systemd/system/shmlaned.service" ||
  die "packaged unit's ExecStart is not /usr/bin/shmlaned"
file_out=$(file -b "$root/usr/bin/shmlaned" 2>/dev/null || true)
case "$file_out" in *"not stripped"*) die "packaged shmlaned is not stripped: $file_out" ;; esac
"$root/usr/bin/shmlaned" --version || die "unpacked shmlaned --version failed"
rt=$SCRATCH/run/shmlane
mkdir -p "$SCRATCH/run"
start_daemon "$root/usr/bin/shmlaned" "$rt" "$SCRATCH/daemon.log" --state-file "$SCRATCH/state"
"$root/usr/bin/shmlanectl" --runtime-dir "$rt" health || die "unpacked shmlanectl health failed"
if [ -n "$py" ]; then
  # The unpacked package only (-I: no user site, no PYTHONPATH of the
  # caller; the build tree is not on the path), as /usr/bin/python3 finds it
  # once installed: /usr/lib/python3/dist-packages is on its sys.path.
  pysite=$root/usr/lib/python3/dist-packages
  /usr/bin/python3 -c 'import sys; assert "/usr/lib/python3/dist-packages" in sys.path, sys.path' ||
    die "/usr/bin/python3 does not read /usr/lib/python3/dist-packages"
  timeout 60 /usr/bin/python3 -I -c '
import sys
sys.path.insert(0, sys.argv[1])
import shmlane
from shmlane import control
assert shmlane.__file__.startswith(sys.argv[1] + "/"), shmlane.__file__
ctl = control.connect(runtime_dir=sys.argv[2])
ctl.create_channel("deb-python", durable=True)
with shmlane.Consumer("deb-python", runtime_dir=sys.argv[2]) as c, \
        shmlane.Producer("deb-python", runtime_dir=sys.argv[2]) as p:
    assert c.durable
    p.write(b"from the .deb")
    view = c.peek(timeout=10)
    assert bytes(view) == b"from the .deb", bytes(view)
    c.release()
ctl.close()
print("python3-shmlane", shmlane.__version__, "from", shmlane.__file__)
' "$pysite" "$rt" || die "the unpacked python3-shmlane does not work"
fi

log "lintian"
t0=$(date +%s)
set +e
lintian --tag-display-limit 0 --fail-on error "$deb" "$dev" ${py:+"$py"} >"$SCRATCH/lintian.log" 2>&1
rc=$?
set -e
grep -v 'running with root privileges' "$SCRATCH/lintian.log" || true
log "  lintian took $(($(date +%s) - t0))s"
if [ "$rc" -ne 0 ] || grep -q '^E: ' "$SCRATCH/lintian.log"; then
  die "lintian reports errors (exit $rc)"
fi
log "lintian: no errors, $(grep -c '^W: ' "$SCRATCH/lintian.log" || true) warnings"
