#!/usr/bin/env bash
# The container image, built offline with deploy/image/build-offline.sh
# (buildah, vfs storage under this test's scratch directory): its config
# (non-root numeric user, entrypoint, no shell, no setuid files, size), then
# shmlaned run inside it with `buildah run --isolation chroot` and a runtime
# volume bind-mounted the way a Kubernetes emptyDir is (0777): it becomes
# ready, answers `shmlanectl health` from inside the image and from outside
# through the shared directory, and exits 0 on SIGTERM.
source "$(dirname "$0")/lib.sh"
: "${SHMLANE_BUILD_DIR:?}" "${SHMLANE_SOURCE_DIR:?}" "${SHMLANECTL:?}"
need buildah "Debian package buildah"
need python3 "reads buildah inspect's JSON"

store=$SCRATCH/storage
B=(buildah --root "$store/root" --runroot "$store/runroot" --storage-driver vfs)
# Whatever happens, leave no container or layer behind (the scratch
# directory, storage included, is removed after this).
cleanup "${B[*]} rm --all >/dev/null 2>&1; ${B[*]} rmi --all --force >/dev/null 2>&1"

archive=$SCRATCH/shmlane.oci.tar
log "build-offline.sh"
t0=$(date +%s.%N)
"$SHMLANE_SOURCE_DIR/deploy/image/build-offline.sh" --build-dir "$SHMLANE_BUILD_DIR" \
  --output "$archive" --tag shmlane:test >"$SCRATCH/build.log" 2>&1 ||
  { cat "$SCRATCH/build.log" >&2; die "build-offline.sh failed"; }
cat "$SCRATCH/build.log"
log "  image built in $(echo "$(date +%s.%N) $t0" | awk '{printf "%.1f", $1-$2}')s"
[ -s "$archive" ] || die "no OCI archive at $archive"
# The script removes its own storage: nothing may be left under its default place.
# (The listing is captured first: with pipefail, `tar | grep -q` fails when
# grep exits at its first match and tar dies of SIGPIPE.)
listing=$(tar -tf "$archive") || die "tar cannot list $archive"
grep -qx 'index.json' <<<"$listing" || die "$archive is not an OCI layout archive"

ctr=$("${B[@]}" from --pull=never --name shmlane-test "oci-archive:$archive" 2>>"$SCRATCH/build.log") ||
  { cat "$SCRATCH/build.log" >&2; die "buildah from oci-archive failed"; }
"${B[@]}" inspect --type image shmlane:test >"$SCRATCH/inspect.json"
python3 - "$SCRATCH/inspect.json" <<'PY' || die "image config check failed"
import json, sys
d = json.load(open(sys.argv[1]))
c = d["OCIv1"]["config"]
errors = []
user = c.get("User", "")
uid = user.split(":")[0]
if not uid.isdigit() or int(uid) == 0:
    errors.append(f"User must be a numeric non-root uid (runAsNonRoot checks numbers): {user!r}")
if c.get("Entrypoint") != ["/usr/bin/shmlaned"]:
    errors.append(f"Entrypoint {c.get('Entrypoint')!r} != ['/usr/bin/shmlaned']")
if c.get("Cmd"):
    errors.append(f"unexpected Cmd {c.get('Cmd')!r}")
labels = c.get("Labels", {})
for key in ("org.opencontainers.image.title", "org.opencontainers.image.version"):
    if key not in labels:
        errors.append(f"label {key} missing")
if "SHMLANE_RUNTIME_DIR=/run/shmlane/daemon" not in c.get("Env", []):
    errors.append(f"Env lacks SHMLANE_RUNTIME_DIR=/run/shmlane/daemon: {c.get('Env')}")
layers = d["OCIv1"]["rootfs"]["diff_ids"]
if len(layers) != 1:
    errors.append(f"expected one layer, got {len(layers)}")
for e in errors:
    print("image config:", e, file=sys.stderr)
print(f"image config: User {user}, Entrypoint {c['Entrypoint']}, {len(labels)} labels, {len(layers)} layer")
sys.exit(1 if errors else 0)
PY

mnt=$("${B[@]}" mount "$ctr")
cleanup "${B[*]} umount $ctr >/dev/null 2>&1"
for absent in bin/sh usr/bin/sh bin/bash usr/bin/busybox usr/bin/apt usr/bin/dpkg; do
  [ ! -e "$mnt/$absent" ] || die "the image contains /$absent"
done
setuid=$(find "$mnt" -xdev -perm /6000 -type f)
[ -z "$setuid" ] || die "setuid/setgid files in the image: $setuid"
files=$(find "$mnt" -xdev -type f | wc -l)
size=$(du -sh "$mnt" | cut -f1)
log "image: $files files, $size unpacked, $(du -h "$archive" | cut -f1) as OCI archive"
"${B[@]}" umount "$ctr" >/dev/null

# The runtime volume, as a kubelet makes an emptyDir: 0777, root's.
vol=$SCRATCH/volume
mkdir -p "$vol"
chmod 0777 "$vol"
log "buildah run --isolation chroot: shmlaned in the image"
"${B[@]}" run --isolation chroot -v "$vol:/run/shmlane" "$ctr" -- \
  /usr/bin/shmlaned --metrics-listen none >"$SCRATCH/daemon.log" 2>&1 &
run_pid=$!
cleanup "kill -TERM $run_pid 2>/dev/null; wait $run_pid 2>/dev/null"
rt=$vol/daemon
deadline=$(($(date +%s) + 30))
until [ -S "$rt/control.sock" ] && "$SHMLANECTL" --runtime-dir "$rt" --timeout 1s health >/dev/null 2>&1; do
  if ! kill -0 "$run_pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
    cat "$SCRATCH/daemon.log" >&2
    die "shmlaned in the image did not become healthy within 30 s"
  fi
  sleep 0.1
done
log "healthy after $(elapsed)s of test time; from outside: $("$SHMLANECTL" --runtime-dir "$rt" health)"
owner=$(stat -c %u "$rt")
[ "$owner" != 0 ] || die "the runtime directory belongs to root: the image's user was not applied"
log "runtime directory $rt: uid $owner, mode $(stat -c %a "$rt")"
for s in control.sock attach.sock; do [ -S "$rt/$s" ] || die "no $s in the runtime directory"; done

# From inside the image: its own shmlanectl, SHMLANE_RUNTIME_DIR from the image's Env.
inside=$(timeout 30 "${B[@]}" run --isolation chroot -v "$vol:/run/shmlane" "$ctr" -- \
  /usr/bin/shmlanectl health 2>&1) || die "shmlanectl health inside the image failed: $inside"
log "from inside: $inside"
timeout 30 "${B[@]}" run --isolation chroot -v "$vol:/run/shmlane" "$ctr" -- \
  /usr/bin/shmlanectl channel create in-image >/dev/null 2>&1 ||
  die "shmlanectl channel create inside the image failed"
"$SHMLANECTL" --runtime-dir "$rt" channel get in-image >/dev/null ||
  die "the channel created inside the image is not visible from outside"

# SIGTERM to the daemon (its pid is in the lock file): clean exit 0.
daemon_pid=$(tr -d ' \n' <"$rt/shmlaned.lock")
case "$daemon_pid" in '' | *[!0-9]*) die "no pid in $rt/shmlaned.lock" ;; esac
kill -TERM "$daemon_pid"
set +e
timeout 20 tail --pid="$run_pid" -f /dev/null
wait "$run_pid"
rc=$?
set -e
[ "$rc" -eq 0 ] || { cat "$SCRATCH/daemon.log" >&2; die "shmlaned in the image exited $rc on SIGTERM"; }
log "shmlaned in the image exited 0 on SIGTERM"
