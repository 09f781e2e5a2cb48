#!/usr/bin/env bash
# The slow half of the debian-12 image: a Debian bookworm root file system of one architecture
# (armhf or arm64), cached as a tarball that build.sh unpacks and finishes. Run by build.sh; not
# meant to be run by hand.
#   1. debootstrap --variant=minbase with images/debian-12/packages (the lines for this architecture)
#      except linux-image-*, in one go: its second stage runs the foreign dpkg through binfmt_misc +
#      qemu-arm (armhf) or qemu-aarch64 (arm64);
#   2. the initramfs configuration (BASE_FILES below, from rootfs/, and modules-ARCH as
#      /etc/initramfs-tools/modules) is put in place;
#   3. the kernel .debs (images/lib/fetch-debs.sh) are installed with dpkg: their postinst builds the
#      initramfs, with the open-iscsi hook, exactly once. (Installing the kernel with debootstrap
#      builds it twice: once for the kernel, again when initramfs-tools' trigger runs.)
#
# Usage: images/debian-12/base.sh ARCH KEY TARBALL
#   ARCH     Debian architecture: armhf or arm64
#   KEY      cache key computed by build.sh (written into the tarball as /etc/dozen-base-key)
#   TARBALL  where to put the .tar.zst (written to TARBALL.tmp, renamed when complete)
#
# Environment: DOZEN_CACHE (debootstrap's .debs are kept in $DOZEN_CACHE/debian-12/debs and reused),
# DOZEN_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ARCH=${1:?usage: base.sh ARCH KEY TARBALL}
KEY=${2:?usage: base.sh ARCH KEY TARBALL}
TARBALL=${3:?usage: base.sh ARCH KEY TARBALL}
CACHE=${DOZEN_CACHE:-$REPO/.cache}/debian-12
MIRROR=${DOZEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# Files of rootfs/ that the initramfs is built from; build.sh puts them, and modules-ARCH (the
# initramfs' module list, installed as /etc/initramfs-tools/modules), in the base's cache key.
BASE_FILES="etc/initramfs-tools/conf.d/dozen etc/iscsi/iscsi.initramfs"

T0=$(date +%s)
log() { printf '[debian-12/base-%s] %4ds %s\n' "$ARCH" "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf '[debian-12/base-%s] ERROR: %s\n' "$ARCH" "$*" >&2; exit 1; }

case "$ARCH" in
  armhf) QEMU=qemu-arm ;;
  arm64) QEMU=qemu-aarch64 ;;
  *) die "unsupported architecture $ARCH (armhf or arm64)" ;;
esac
[ -f "$HERE/modules-$ARCH" ] || die "no initramfs module list $HERE/modules-$ARCH"
# The package list for ARCH: "ARCH:pkg" lines only for that architecture, plain names for all.
ALL=$(sed 's/#.*//' "$HERE/packages" | tr -s ' \t\n' '\n' | sed '/^$/d' |
  awk -v a="$ARCH" '{ n = split($0, f, ":"); if (n == 1) print; else if (f[1] == a) print f[2] }')
INCLUDE=$(echo "$ALL" | grep -v '^linux-image-' | paste -sd, -)
KERNEL_META=$(echo "$ALL" | grep '^linux-image-' | head -1)
[ -n "$KERNEL_META" ] || die "images/debian-12/packages names no linux-image-* package"

mkdir -p "$CACHE/debs"
W=$(mktemp -d "$CACHE/base.XXXXXX")
R=$W/root
umount_all() {
  for m in proc sys dev/pts dev; do mountpoint -q "$R/$m" 2>/dev/null && umount -l "$R/$m"; done
  return 0
}
cleanup() { umount_all; rm -rf "$W"; }
trap cleanup EXIT

# --- 1. debootstrap ----------------------------------------------------------------------------------
log "debootstrap $SUITE $ARCH minbase + $(echo "$INCLUDE" | tr ',' ' ') from $MIRROR"
log "(dpkg runs under $QEMU emulation: several minutes on a cold cache; progress every 30 s)"
# A download failure (a mirror mid-sync, a dropped connection) is retried from scratch, twice, 30 and
# 60 s later; the .debs already fetched stay in the cache. Any other failure is final.
for try in 1 2 3; do
  debootstrap --arch="$ARCH" --variant=minbase --components=main --include="$INCLUDE" \
    --cache-dir="$CACHE/debs" "$SUITE" "$R" "$MIRROR" >"$W/debootstrap.log" 2>&1 &
  DB=$!
  while kill -0 "$DB" 2>/dev/null; do
    sleep 30 & wait $! || true
    kill -0 "$DB" 2>/dev/null && log "... $(grep '^I: ' "$W/debootstrap.log" | tail -1 | cut -c4-)"
  done
  wait "$DB" && break
  tail -40 "$W/debootstrap.log" >&2
  [ -f "$R/debootstrap/debootstrap.log" ] && tail -40 "$R/debootstrap/debootstrap.log" >&2
  if [ "$try" -lt 3 ] && grep -qiE "couldn't download|failed getting release|invalid release|hash sum mismatch|unexpected size|couldn't retrieve|failed to fetch" \
    "$W/debootstrap.log" "$R/debootstrap/debootstrap.log" 2>/dev/null; then
    log "debootstrap could not download (log above): retrying in $((try * 30)) s (try $((try + 1)) of 3)"
    umount_all
    rm -rf "$R"
    mkdir -p "$R"
    sleep $((try * 30))
    continue
  fi
  die "debootstrap failed (log above)"
done
umount_all
log "debootstrap done ($(grep -c '^I: Retrieving' "$W/debootstrap.log" || true) packages downloaded, the rest from the cache)"

# --- 2. initramfs configuration, before the kernel -----------------------------------------------
for f in $BASE_FILES; do
  install -D -m 644 "$HERE/rootfs/$f" "$R/$f"
done
install -D -m 644 "$HERE/modules-$ARCH" "$R/etc/initramfs-tools/modules"
# A placeholder initiator name: the real one comes from iscsi_initiator= per lease (dozen-firstboot).
printf 'GenerateName=yes\n' >"$R/etc/iscsi/initiatorname.iscsi"

# --- 3. the kernel ------------------------------------------------------------------------------------
FETCH=("$REPO/images/lib/fetch-debs.sh" --arch "$ARCH")
KDEBS=$(bash "${FETCH[@]}" "$KERNEL_META" $(bash "${FETCH[@]}" --depends "$KERNEL_META" | grep '^linux-image-'))
mkdir -p "$R/tmp/kernel"
cp $KDEBS "$R/tmp/kernel/"
log "installing $(cd "$R/tmp/kernel" && ls | tr '\n' ' ')(builds the initramfs: a few minutes under emulation)"
mount -t proc proc "$R/proc"
if ! chroot "$R" sh -c 'DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/kernel/*.deb' >"$W/kernel.log" 2>&1; then
  tail -40 "$W/kernel.log" >&2
  die "installing the kernel failed (log above)"
fi
umount_all
rm -rf "$R/tmp/kernel"
ls "$R"/boot/initrd.img-* >/dev/null 2>&1 || die "the kernel's postinst made no initramfs (log: $(tail -5 "$W/kernel.log"))"

# debootstrap's and apt's leftovers; the image fetches fresh package lists on first use.
rm -rf "$R/var/cache/apt/archives/"*.deb "$R/var/lib/apt/lists/"* "$R/debootstrap"
echo "$KEY" >"$R/etc/dozen-base-key"

log "packing $(du -sh --apparent-size "$R" | cut -f1) into $(basename "$TARBALL")"
tar -C "$R" --numeric-owner --xattrs --xattrs-include='*' --acls -cf - . | zstd -q -T0 -6 -o "$TARBALL.tmp" -f
mv -f "$TARBALL.tmp" "$TARBALL"
log "cached $TARBALL ($(du -h "$TARBALL" | cut -f1))"
