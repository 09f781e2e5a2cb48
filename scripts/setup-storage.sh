#!/usr/bin/env bash
# The disk store for iSCSI root disks: a btrfs filesystem (snapshots = instant per-lease clones,
# qgroups = a size limit per disk) on a sparse loop file, mounted at the server's storage.dir.
# Idempotent: an existing file is reused, a mounted store is left alone (quotas are switched on if
# they are off). Not in /etc/fstab: run it again after a reboot (scripts/prepare.sh does).
#
#   DOZEN_STORAGE_IMG   the loop file           (default /var/lib/dozen/storage.img)
#   DOZEN_STORAGE_DIR   where it is mounted     (default /var/lib/dozen/storage = storage.dir)
#   DOZEN_STORAGE_SIZE  size of a new file      (default 64G; sparse: it takes what disks use)
set -euo pipefail
IMG=${DOZEN_STORAGE_IMG:-/var/lib/dozen/storage.img}
DIR=${DOZEN_STORAGE_DIR:-/var/lib/dozen/storage}
SIZE=${DOZEN_STORAGE_SIZE:-64G}
say() { echo "setup-storage: $*"; }
die() { echo "setup-storage: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (loop devices, mount)"
for t in mkfs.btrfs btrfs losetup blkid findmnt truncate; do
  command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' — run: sudo bash scripts/setup-host.sh"
done

if findmnt -rno FSTYPE --mountpoint "$DIR" >/dev/null 2>&1; then
  fstype=$(findmnt -rno FSTYPE --mountpoint "$DIR")
  [ "$fstype" = btrfs ] || die "$DIR is mounted but is $fstype, not btrfs (the server would fall back to reflink or copy)"
  btrfs qgroup show "$DIR" >/dev/null 2>&1 || { btrfs quota enable "$DIR"; say "quotas enabled on $DIR"; }
  say "$DIR: btrfs already mounted ($(df -h --output=avail "$DIR" | tail -1 | tr -d ' ') free)"
  exit 0
fi

mkdir -p "$(dirname "$IMG")" "$DIR"
if [ -e "$IMG" ]; then
  [ "$(blkid -o value -s TYPE "$IMG" 2>/dev/null)" = btrfs ] || die "$IMG exists but holds no btrfs; move it away or set DOZEN_STORAGE_IMG"
  say "reusing $IMG"
else
  truncate -s "$SIZE" "$IMG"
  mkfs.btrfs -q -L dozen-storage "$IMG" >/dev/null
  say "made $IMG ($SIZE sparse btrfs)"
fi
mount -o loop "$IMG" "$DIR"
btrfs quota enable "$DIR"
say "mounted $IMG at $DIR (btrfs, quotas on, $(df -h --output=avail "$DIR" | tail -1 | tr -d ' ') free)"
