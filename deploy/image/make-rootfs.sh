#!/usr/bin/env bash
# Assembles the container image's whole file system in ROOTFS: shmlaned and
# shmlanectl (stripped), exactly the shared libraries they load (ldd) at
# their canonical paths, the dynamic loader, /etc/passwd and /etc/group with
# the shmlane user (65532), and /run/shmlane owned by it. No shell, no
# package manager, nothing setuid. Used by the Dockerfile's last stage and by
# build-offline.sh, so both produce the same image.
#
#   deploy/image/make-rootfs.sh SHMLANED SHMLANECTL ROOTFS
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: $0 SHMLANED SHMLANECTL ROOTFS" >&2
  exit 2
fi
shmlaned=$1 shmlanectl=$2 rootfs=$3
SHMLANE_UID=${SHMLANE_UID:-65532}

for b in "$shmlaned" "$shmlanectl"; do
  [ -x "$b" ] || { echo "make-rootfs: $b is not an executable" >&2; exit 1; }
done
mkdir -p "$rootfs"
if [ -n "$(ls -A "$rootfs")" ]; then
  echo "make-rootfs: $rootfs is not empty" >&2
  exit 1
fi

# Debian 12 merges /usr: /lib and /lib64 are links into /usr, as there.
mkdir -p "$rootfs/usr/bin" "$rootfs/usr/lib" "$rootfs/usr/lib64" "$rootfs/etc" \
  "$rootfs/run/shmlane" "$rootfs/tmp"
ln -s usr/lib "$rootfs/lib"
ln -s usr/lib64 "$rootfs/lib64"
ln -s usr/bin "$rootfs/bin"

strip_copy() {  # strip_copy SRC DEST: without debug info (a RelWithDebInfo build carries it)
  if command -v objcopy >/dev/null 2>&1; then
    objcopy --strip-unneeded "$1" "$2"
  else
    cp "$1" "$2"
  fi
  chmod 0755 "$2"
}
strip_copy "$shmlaned" "$rootfs/usr/bin/shmlaned"
strip_copy "$shmlanectl" "$rootfs/usr/bin/shmlanectl"

# Every library ldd resolves, copied (not linked) under the name the loader
# asks for, in the directory it really lives in (/lib/x86_64-linux-gnu ->
# /usr/lib/x86_64-linux-gnu). The loader itself is the line without "=>".
copy_lib() {  # copy_lib PATH_AS_LOADED
  local path=$1 dir
  dir=$(dirname "$(readlink -f "$path")")
  mkdir -p "$rootfs$dir"
  cp -L --preserve=mode "$path" "$rootfs$dir/$(basename "$path")"
  # The name as loaded, when its directory is not the canonical one (merged
  # /usr makes /lib/... the same as /usr/lib/...; /lib64 needs a link).
  local loaded_dir
  loaded_dir=$(dirname "$path")
  if [ "$(readlink -f "$rootfs$loaded_dir" 2>/dev/null)" != "$(readlink -f "$rootfs$dir")" ]; then
    mkdir -p "$rootfs$loaded_dir"
    ln -sf "$dir/$(basename "$path")" "$rootfs$path"
  fi
}
libs=$(for b in "$shmlaned" "$shmlanectl"; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u)
[ -n "$libs" ] || { echo "make-rootfs: ldd found no libraries" >&2; exit 1; }
for lib in $libs; do
  copy_lib "$lib"
done
unresolved=$(ldd "$shmlaned" "$shmlanectl" | grep "not found" || true)
if [ -n "$unresolved" ]; then
  echo "make-rootfs: unresolved libraries:" >&2
  echo "$unresolved" >&2
  exit 1
fi

# Names for the uids and gids the daemon may meet: its own, and the group
# that --attach-group/--admin-group name (glibc 2.36 reads these files itself,
# no NSS module needed).
cat >"$rootfs/etc/passwd" <<PASSWD
root:x:0:0:root:/nonexistent:/usr/sbin/nologin
shmlane:x:$SHMLANE_UID:$SHMLANE_UID:shmlane daemon:/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<GROUP
root:x:0:
shmlane:x:$SHMLANE_UID:
nogroup:x:65534:
GROUP
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"

# /run/shmlane: the daemon's, 0755. In Kubernetes a volume is mounted here
# (0777 emptyDir or hostPath) and the daemon makes its runtime directory
# /run/shmlane/daemon inside it, which it must own alone.
chmod 0755 "$rootfs/run/shmlane"
chown "$SHMLANE_UID:$SHMLANE_UID" "$rootfs/run/shmlane" 2>/dev/null || true

if find "$rootfs" -perm /6000 -type f | grep .; then
  echo "make-rootfs: setuid/setgid files above" >&2
  exit 1
fi
echo "make-rootfs: $(find "$rootfs" -type f | wc -l) files, $(du -sh "$rootfs" | cut -f1) in $rootfs"
