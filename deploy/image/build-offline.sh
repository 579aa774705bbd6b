#!/usr/bin/env bash
# Builds the shmlane container image with no network and no container
# daemon: Debian's buildah, vfs storage, `buildah from scratch`, the file
# system of make-rootfs.sh, then `buildah commit` to an OCI archive that
# `podman load`, `skopeo copy oci-archive:...` or `ctr images import` take.
#
#   deploy/image/build-offline.sh --build-dir build/release --output shmlane.oci.tar
#       [--tag shmlane:VERSION] [--storage DIR] [--keep-storage]
#
# Buildah's storage goes to --storage (default: a fresh temporary directory,
# removed at the end unless --keep-storage), never to /var/lib/containers.
# Prints the image's config and the archive's size.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build_dir="" output="" tag="" storage="" keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --storage) storage=$2; shift 2 ;;
    --keep-storage) keep=1; shift ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build-offline: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$build_dir" ] && [ -n "$output" ] || { echo "build-offline: --build-dir and --output are required" >&2; exit 2; }
command -v buildah >/dev/null || { echo "build-offline: buildah is not installed (apt-get install buildah)" >&2; exit 1; }
shmlaned=$build_dir/control/shmlaned
shmlanectl=$build_dir/clients/cli/shmlanectl
version=$("$shmlaned" --version | awk '{print $2}')
[ -n "$version" ] || { echo "build-offline: $shmlaned --version printed no version" >&2; exit 1; }
tag=${tag:-shmlane:$version}
SHMLANE_UID=${SHMLANE_UID:-65532}

work=$(mktemp -d "${TMPDIR:-/tmp}/shmlane-image.XXXXXX")
if [ -z "$storage" ]; then
  storage=$work/storage
fi
B=(buildah --root "$storage/root" --runroot "$storage/runroot" --storage-driver vfs)
ctr=""
finish() {
  local rc=$?
  [ -n "$ctr" ] && "${B[@]}" rm "$ctr" >/dev/null 2>&1 || true
  if [ "$keep" -eq 0 ]; then
    # vfs layers are plain directories; buildah unmounts nothing here.
    rm -rf "$storage" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit $rc
}
trap finish EXIT

SHMLANE_UID=$SHMLANE_UID "$here/make-rootfs.sh" "$shmlaned" "$shmlanectl" "$work/rootfs"

ctr=$("${B[@]}" from --pull=never scratch)
# Copy as a tarball so that links, modes and owners arrive as they are.
tar -C "$work/rootfs" -cf "$work/rootfs.tar" --numeric-owner .
"${B[@]}" add "$ctr" "$work/rootfs.tar" / >/dev/null
"${B[@]}" config \
  --user "$SHMLANE_UID:$SHMLANE_UID" \
  --entrypoint '["/usr/bin/shmlaned"]' \
  --workingdir / \
  --env SHMLANE_RUNTIME_DIR=/run/shmlane/daemon \
  --port 9464/tcp --port 8081/tcp \
  --volume /run/shmlane \
  --stop-signal SIGTERM \
  --label org.opencontainers.image.title=shmlane \
  --label "org.opencontainers.image.description=shmlaned (node-local shared-memory IPC daemon) and shmlanectl" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.base.name=scratch" \
  --label "io.shmlane.uid=$SHMLANE_UID" \
  --label "io.shmlane.runtime-dir=/run/shmlane/daemon" \
  --os linux --arch "$(dpkg --print-architecture 2>/dev/null || uname -m)" \
  "$ctr"
mkdir -p "$(dirname "$output")"
rm -f "$output"
"${B[@]}" commit --quiet --format oci --rm "$ctr" "oci-archive:$output:$tag" >/dev/null
ctr=""
echo "build-offline: $tag -> $output ($(du -h "$output" | cut -f1))"
