#!/usr/bin/env bash
# Builds the DozenCloud Debian 12 (bookworm) armhf image, a real Debian that boots with its root
# file system on the lease's iSCSI disk:
#   build/vmlinuz       the armmp kernel (zImage, U-Boot `bootz`)
#   build/initrd.img    initramfs-tools + open-iscsi: logs in to the target named by iscsi_* kernel args
#   build/dtbs/*.dtb    device trees of the Banana Pi boards (sun7i-a20-banana*.dtb)
#   build/root.img      the root file system: raw ext4, NO partition table (the LUN is the file system),
#                       1536 MiB apparent size, sparse. dozen-firstboot grows it (resize2fs) on boot
#                       when the server exports a bigger disk.
#   build/manifest.json images/debian-12/manifest.json plus dtbs, sha256 of every file, kernel version,
#                       package versions (format: images/README.md)
#   build/SHA256SUMS    the same checksums for sha256sum -c
#
# Usage: sudo images/debian-12/build.sh [--force] [--refresh] [--out DIR]
#   --force    rebuild the image even when it is up to date (the cached base is reused)
#   --refresh  re-fetch the armhf package lists; a newer version of a listed package rebuilds the base
#   --out DIR  write the image to DIR instead of images/debian-12/build
#
# Two stages, both cached under ${DOZEN_CACHE:-<repo>/.cache}/debian-12:
#   base   debootstrap minbase + images/debian-12/packages, then the kernel and its initramfs
#          (base.sh): the slow part, dpkg under qemu-arm. Cached as base-<key>.tar.zst, key = base.sh,
#          the initramfs configuration files in rootfs/ (base.sh's BASE_FILES), the package list and
#          the versions the cached armhf lists (images/lib/fetch-armhf-debs.sh) resolve it to,
#          debootstrap's version and the mirror. Downloaded .debs stay in debs/ for the next base.
#   image  unpack the base, copy rootfs/ over it, run configure.sh inside (units, cleanup), make
#          root.img with mkfs.ext4 -d (no loop mount). Skipped when build/.inputs (base key + this
#          script, configure.sh, manifest.json, rootfs/) is unchanged and the outputs match SHA256SUMS.
#
# Needs root (debootstrap, chroot) and qemu-user-static with binfmt_misc (enabled here if it is not).
set -euo pipefail

# The body is one function, read whole before it runs: editing this file during a build is safe.
main() {

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$HERE/build
CACHE=${DOZEN_CACHE:-$REPO/.cache}/debian-12
MIRROR=${DOZEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT_SIZE=1536M
FORCE=0
REFRESH=0

while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --refresh) REFRESH=1 ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

BUILD_NAME=debian-12
# shellcheck source=../lib/build-log.sh
. "$REPO/images/lib/build-log.sh"

need debootstrap debootstrap
need chroot coreutils
need mke2fs e2fsprogs
need e2fsck e2fsprogs
need zstd zstd
need tar tar
need cpio cpio
need sha256sum coreutils
need flock util-linux
need mountpoint util-linux
need node nodejs
[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot): sudo $0 $*"
mke2fs -d / -n /dev/null 2>&1 | grep -q 'invalid option' && die "mke2fs is too old for -d (need e2fsprogs >= 1.43)"

# The manifest's root=UUID= is the file system's UUID: one source of truth.
ROOT_UUID=$(node -e 'const m=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));const r=/root=UUID=([0-9a-f-]{36})/.exec(m.cmdline);if(!r)process.exit(1);console.log(r[1])' "$HERE/manifest.json") ||
  die "manifest.json's cmdline needs root=UUID=<uuid> (the UUID given to root.img)"

# armhf binaries run through binfmt_misc + qemu-arm (F flag: works inside the chroot too).
ensure_binfmt() {
  local f=/proc/sys/fs/binfmt_misc
  [ -e "$f/status" ] || mount -t binfmt_misc binfmt_misc "$f" 2>/dev/null || true
  if ! grep -qs enabled "$f/qemu-arm" && command -v update-binfmts >/dev/null; then
    update-binfmts --enable qemu-arm >/dev/null 2>&1 || true
  fi
  grep -qs enabled "$f/qemu-arm" ||
    die "no binfmt_misc handler for ARM binaries — apt-get install qemu-user-static binfmt-support, then: update-binfmts --enable qemu-arm"
}
ensure_binfmt

mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock -w 1800 9 || die "another build holds $OUT/.lock for too long"

# --- 1. the base's cache key -------------------------------------------------------------------------
# shellcheck source=../lib/fetch-armhf-debs.sh
. "$REPO/images/lib/fetch-armhf-debs.sh"
PKGS=$(sed 's/#.*//' "$HERE/packages" | tr -s ' \t\n' '\n' | sed '/^$/d')
armhf_init
armhf_lock
armhf_ensure_lists "$REFRESH"
# One apt-cache call for all (one per package takes seconds): "name=candidate version" lines.
VERSIONS=$(apt-cache "${ARMHF_APT[@]}" policy $PKGS 2>/dev/null |
  awk '/^[^ ].*:$/ { p = $0; sub(/:$/, "", p) } /^  Candidate:/ && $2 != "(none)" { print p "=" $2 }')
for p in $PKGS; do
  grep -q "^$p=" <<<"$VERSIONS" || die "package '$p' (images/debian-12/packages) is not in the armhf lists; try --refresh"
done
armhf_unlock
BASE_FILES=$(sed -n 's/^BASE_FILES="\(.*\)"$/\1/p' "$HERE/base.sh")
BASE_KEY=$({
  echo "mirror=$MIRROR"
  echo "debootstrap=$(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || debootstrap --version)"
  sha256sum <"$HERE/base.sh"
  for f in $BASE_FILES; do echo "$f $(sha256sum <"$HERE/rootfs/$f")"; done
  echo "$VERSIONS"
} | sha256sum | cut -c1-16)
BASE_TAR=$CACHE/base-$BASE_KEY.tar.zst
log "packages: $(echo "$VERSIONS" | grep -m1 '^linux-image-armmp=' ), $(echo "$PKGS" | wc -l) listed; base $BASE_KEY"

# --- 2. up to date? ----------------------------------------------------------------------------------
inputs_hash() {
  {
    echo "base=$BASE_KEY size=$ROOT_SIZE"
    cd "$HERE"
    find build.sh configure.sh manifest.json rootfs \( -type f -o -type l \) -print | LC_ALL=C sort |
      while read -r f; do
        if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f $(stat -c %a "$f") $(sha256sum <"$f" | cut -c1-64)"; fi
      done
  } | sha256sum | cut -c1-64
}
INPUTS=$(inputs_hash)
if [ "$FORCE" = 0 ] && [ "$(cat "$OUT/.inputs" 2>/dev/null)" = "$INPUTS" ] && [ -f "$OUT/manifest.json" ]; then
  log "checking the outputs against SHA256SUMS"
  if (cd "$OUT" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1); then
    log "up to date: $OUT (use --force to rebuild)"
    exit 0
  fi
  log "outputs changed since the last build: rebuilding"
fi

# --- 3. base (debootstrap), cached -------------------------------------------------------------------
if [ -f "$BASE_TAR" ]; then
  log "base: cached $(basename "$BASE_TAR")"
else
  log "base: not cached, running debootstrap (cold: about 10 minutes on 2 cores)"
  bash "$HERE/base.sh" "$BASE_KEY" "$BASE_TAR"
  # Older bases are dead weight (hundreds of MB each); the .debs stay for the next one.
  find "$CACHE" -maxdepth 1 -name 'base-*.tar.zst' ! -name "$(basename "$BASE_TAR")" -delete
  log "base: built"
fi

# --- 4. unpack, overlay, configure inside the image --------------------------------------------------
W=$OUT/.work
R=$W/root
umount_all() {
  for m in proc dev; do mountpoint -q "$R/$m" 2>/dev/null && umount -l "$R/$m"; done
  return 0
}
cleanup() { umount_all; rm -rf "$W"; }
umount_all
rm -rf "$W"
mkdir -p "$R" "$W/out/dtbs"
trap cleanup EXIT
log "unpacking the base"
zstd -dc "$BASE_TAR" | tar -C "$R" --numeric-owner --xattrs --xattrs-include='*' --acls -xf -
# Our files, owned by root, without touching the modes of directories that already exist.
tar -C "$HERE/rootfs" --owner=0 --group=0 --numeric-owner -cf - . | tar -C "$R" --no-overwrite-dir -xf -
printf 'UUID=%s\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' "$ROOT_UUID" >"$R/etc/fstab"
echo dozen >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdozen\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
cp "$HERE/configure.sh" "$R/tmp/configure.sh"
mount -t proc proc "$R/proc"
mount --bind /dev "$R/dev"
log "configuring inside the image"
if ! chroot "$R" /bin/sh /tmp/configure.sh >"$W/configure.log" 2>&1; then
  tail -40 "$W/configure.log" >&2
  die "configure.sh failed inside the image (log above)"
fi
umount_all
rm -f "$R/tmp/configure.sh"

# --- 5. kernel, initrd, device trees -----------------------------------------------------------------
KVERS=$(ls "$R/lib/modules")
[ "$(echo "$KVERS" | wc -l)" = 1 ] || die "expected one kernel in the image, found: $KVERS"
KVER=$KVERS
cp "$R/boot/vmlinuz-$KVER" "$W/out/vmlinuz"
cp "$R/boot/initrd.img-$KVER" "$W/out/initrd.img"
magic=$(od -An -tx4 -j 36 -N 4 --endian=little "$W/out/vmlinuz" | tr -d ' ')
[ "$magic" = 016f2818 ] || die "vmlinuz-$KVER is not an ARM zImage (magic at 0x24: $magic)"
for dtb in "$R/usr/lib/linux-image-$KVER"/sun7i-a20-banana*.dtb; do
  [ -f "$dtb" ] || die "the kernel package has no sun7i-a20-banana*.dtb"
  cp "$dtb" "$W/out/dtbs/"
done
# The initramfs must be able to log in to the root's target: iscsistart, its script and iscsi_tcp.
INITRD_LIST=$(zstd -dc "$W/out/initrd.img" | cpio -it --quiet 2>/dev/null)
for want in 'sbin/iscsistart$' '^scripts/local-top/iscsi$' '/iscsi_tcp\.ko' '^etc/iscsi\.initramfs$'; do
  grep -qE "$want" <<<"$INITRD_LIST" || die "the initramfs lacks $want: the open-iscsi hook did not run"
done
log "kernel $KVER ($(($(stat -c %s "$W/out/vmlinuz") / 1024)) KiB), initrd $(($(stat -c %s "$W/out/initrd.img") / 1024)) KiB with iscsistart, $(ls "$W/out/dtbs" | wc -l) device trees"

# --- 6. root.img: the root file system, no partition table -------------------------------------------
PKG_VERSIONS=$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f '${Package} ${Version}\n' $PKGS "linux-image-$KVER" 2>/dev/null)
echo "DOZEN_IMAGE=debian-12" >"$R/etc/dozen-release"
echo "KERNEL=$KVER" >>"$R/etc/dozen-release"
log "making root.img ($ROOT_SIZE ext4, $(du -sh "$R" | cut -f1) used)"
mke2fs -q -F -t ext4 -L dozen-root -U "$ROOT_UUID" -E root_owner=0:0 -d "$R" "$W/out/root.img" "$ROOT_SIZE" >/dev/null ||
  die "mke2fs -d failed (is $ROOT_SIZE too small for the root file system?)"
e2fsck -fn "$W/out/root.img" >/dev/null 2>&1 || die "e2fsck finds errors in the new root.img"

# --- 7. checksums and manifest -----------------------------------------------------------------------
log "checksums"
(cd "$W/out" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs sha256sum) >"$W/SHA256SUMS"
mv "$W/SHA256SUMS" "$W/out/SHA256SUMS"
node -e '
  const fs = require("fs");
  const [tmpl, sums, out, kver, versions] = process.argv.slice(1);
  const m = JSON.parse(fs.readFileSync(tmpl, "utf8"));
  m.dtbs = {};
  m.sha256 = {};
  for (const line of fs.readFileSync(sums, "utf8").trim().split("\n")) {
    const [hash, file] = line.split(/\s+\*?/);
    if (file === "SHA256SUMS") continue;
    m.sha256[file] = hash;
    const d = /^dtbs\/sun7i-a20-(.+)\.dtb$/.exec(file);
    if (d) m.dtbs[d[1]] = file; // keyed by board model: bananapi, bananapro, ...
  }
  m.kernelVersion = kver;
  m.packages = Object.fromEntries(versions.trim().split("\n").map((l) => l.split(" ")));
  fs.writeFileSync(out, JSON.stringify(m, null, 2) + "\n");
' "$HERE/manifest.json" "$W/out/SHA256SUMS" "$W/out/manifest.json" "$KVER" "$PKG_VERSIONS"

# --- 8. install into OUT (stale marker first, so an interrupted install is rebuilt) ------------------
rm -f "$OUT/.inputs"
rm -rf "$OUT/dtbs"
mv "$W/out/dtbs" "$OUT/dtbs"
for f in vmlinuz initrd.img root.img SHA256SUMS manifest.json; do mv -f "$W/out/$f" "$OUT/$f"; done
echo "$INPUTS" >"$OUT/.inputs"
log "built $OUT: kernel $KVER, root.img $(du -h --apparent-size "$OUT/root.img" | cut -f1) ($(du -h "$OUT/root.img" | cut -f1) on disk)"
}

main "$@"
