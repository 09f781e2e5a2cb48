#!/usr/bin/env bash
# Builds the DozenCloud docker-host image: images/debian-12 + Docker, for shared boards that run
# tenants' containers (docs/shared-boards.md), armv7 (Debian armhf) and arm64. A variant layered on
# debian-12's BUILT image, not a second debootstrap:
#   build/vmlinuz, initrd.img, dtbs/, arm64/Image, arm64/initrd.img
#                             debian-12's files, hard-linked (copied across file systems): same kernel,
#                             same initramfs (it mounts root=UUID= from the command line)
#   build/root.img            armv7: debian-12's root file system + `packages` (docker.io, containerd,
#   build/arm64/root.img      runc, tini, iptables, btrfs-progs and their missing dependencies) +
#                             rootfs/ (daemon.json, the units below), raw ext4, 1536 MiB, sparse. Its
#                             own fixed UUID (this manifest's root=UUID=), the same on both arches.
#   build/manifest.json       manifest.json + sha256 of every file and, per arch, kernel version and
#                             package versions (debian-12's list plus ours); build/SHA256SUMS the same sums
#
# Usage: sudo images/docker-host/build.sh [--force] [--refresh] [--no-base] [--out DIR]
#   --force    rebuild even when up to date
#   --refresh  re-fetch the package lists (passed on to debian-12's build.sh too)
#   --no-base  do not run images/debian-12/build.sh first (its build/ must exist)
#   --out DIR  write the image to DIR instead of images/docker-host/build
#
# Steps: (1) images/debian-12/build.sh (its own "up to date" fast path, ~12 s warm); (2) per arch,
# the extra packages resolved with images/lib/fetch-debs.sh's private apt against the dpkg status
# INSIDE debian-12's root.img (so only what is missing is installed); (3) skipped when build/.inputs
# (debian-12's manifest incl. its checksums, the resolved versions, this folder's files) is unchanged
# and the outputs match SHA256SUMS; (4) per arch: debian-12's root.img loop-mounted read-only and
# copied out, the .debs (cached by fetch-debs.sh) installed with dpkg in a chroot (qemu-user), rootfs/
# copied over, configure.sh run inside, mkfs.ext4 -d into root.img.
#
# Needs root (loop mount, chroot), qemu-user-static with binfmt_misc, e2fsprogs >= 1.43, zstd, node.
# Network: the Debian mirror only, and only for .debs not yet cached.
set -euo pipefail

main() {

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BASE_DIR=$REPO/images/debian-12
BASE_OUT=$BASE_DIR/build
OUT=$HERE/build
ROOT_SIZE=1536M
FORCE=0
REFRESH=0
RUN_BASE=1

while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --refresh) REFRESH=1 ;;
    --no-base) RUN_BASE=0 ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

BUILD_NAME=docker-host
# shellcheck source=../lib/build-log.sh
. "$REPO/images/lib/build-log.sh"

need chroot coreutils
need mke2fs e2fsprogs
need e2fsck e2fsprogs
need debugfs e2fsprogs
need losetup mount
need mountpoint util-linux
need flock util-linux
need tar tar
need sha256sum coreutils
need node nodejs
[ "$(id -u)" = 0 ] || die "needs root (loop mount, chroot): sudo $0 $*"

ARCHES=(armv7 arm64)
declare -A DEBARCH=([armv7]=armhf [arm64]=arm64)
declare -A QEMU=([armhf]=qemu-arm [arm64]=qemu-aarch64)

ROOT_UUID=$(node -e 'const m=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));const r=/root=UUID=([0-9a-f-]{36})/.exec(m.cmdline);if(!r)process.exit(1);console.log(r[1])' "$HERE/manifest.json") ||
  die "manifest.json's cmdline needs root=UUID=<uuid> (the UUID given to root.img)"

# --- 1. debian-12, the layer below ------------------------------------------------------------------
if [ "$RUN_BASE" = 1 ]; then
  log "images/debian-12/build.sh (the base image)"
  base_args=()
  [ "$REFRESH" = 1 ] && base_args+=(--refresh)
  bash "$BASE_DIR/build.sh" ${base_args[@]+"${base_args[@]}"} 2>&1 | sed -u 's/^/    /' >&2 ||
    die "images/debian-12/build.sh failed (above)"
fi
[ -f "$BASE_OUT/manifest.json" ] || die "no $BASE_OUT/manifest.json: build debian-12 first (sudo images/debian-12/build.sh)"

for a in "${ARCHES[@]}"; do
  q=${QEMU[${DEBARCH[$a]}]}
  grep -qs enabled "/proc/sys/fs/binfmt_misc/$q" || die "no binfmt_misc handler $q (debian-12's build.sh enables it; or: update-binfmts --enable $q)"
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock -w 1800 9 || die "another build holds $OUT/.lock for too long"
# debian-12 must not be rebuilt under us while we read it (its build takes the same kind of lock).
exec 6>"$BASE_OUT/.lock"
flock -s -w 1800 6 || true

# base_field ARCH FIELD: a field of debian-12's built manifest for ARCH.
base_field() {
  node -e 'const m=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));const v=m.arches[process.argv[2]]?.[process.argv[3]];if(v===undefined)process.exit(1);console.log(typeof v==="string"?v:JSON.stringify(v))' \
    "$BASE_OUT/manifest.json" "$1" "$2"
}

W=$OUT/.work
R=$W/root
umount_all() {
  for m in "$R/proc" "$R/dev" "$W/base"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  return 0
}
cleanup() { umount_all; rm -rf "$W"; }
umount_all
rm -rf "$W"
mkdir -p "$W/out"
trap cleanup EXIT

# --- 2. the extra packages, resolved against debian-12's installed set -------------------------------
# shellcheck source=../lib/fetch-debs.sh
. "$REPO/images/lib/fetch-debs.sh"
WANT=$(sed 's/#.*//' "$HERE/packages" | tr -s ' \t\n' '\n' | sed '/^$/d')
declare -A INST=()
for a in "${ARCHES[@]}"; do
  da=${DEBARCH[$a]}
  disk=$BASE_OUT/$(base_field "$a" rootDisk)
  debugfs -R "dump /var/lib/dpkg/status $W/status-$a" "$disk" >/dev/null 2>&1
  [ -s "$W/status-$a" ] || die "$a: could not read /var/lib/dpkg/status from $disk"
  debs_init "$da"
  debs_lock
  debs_ensure_lists "$REFRESH"
  # "name version" in apt's install order; the later -o overrides fetch-debs's empty status file.
  # shellcheck disable=SC2086
  INST[$a]=$(apt-get "${DEBS_APT[@]}" -oDir::State::Status="$W/status-$a" -s install --no-install-recommends $WANT 2>"$W/apt-$a.err" |
    awk '/^Inst / { v = $3; sub(/^\(/, "", v); print $2, v }') || true
  debs_unlock
  [ -n "${INST[$a]}" ] || { cat "$W/apt-$a.err" >&2; die "$a: apt could not resolve $(echo $WANT) against debian-12's packages (try --refresh)"; }
  for p in $WANT; do
    grep -q "^$p " <<<"${INST[$a]}" || grep -q "^Package: $p$" "$W/status-$a" || die "$a: $p is neither installable nor installed"
  done
  log "$a: $(wc -l <<<"${INST[$a]}") packages to add: $(cut -d' ' -f1 <<<"${INST[$a]}" | paste -sd' ')"
done

# --- 3. up to date? ----------------------------------------------------------------------------------
inputs_hash() {
  {
    echo "size=$ROOT_SIZE"
    echo "debian-12 $(sha256sum <"$BASE_OUT/manifest.json")"
    for a in "${ARCHES[@]}"; do echo "$a ${INST[$a]}"; done
    cd "$HERE"
    find build.sh configure.sh manifest.json packages rootfs \( -type f -o -type l \) -print | LC_ALL=C sort |
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

# link_or_copy SRC DST: a hard link when on the same file system (debian-12 replaces its files with
# mv, so our link keeps the content we checksummed), else a copy.
link_or_copy() {
  mkdir -p "$(dirname "$2")"
  ln -f "$1" "$2" 2>/dev/null || cp --sparse=always "$1" "$2"
}

# --- 4. per arch: root.img = debian-12's + packages + rootfs/ ---------------------------------------
# in_root CMD...: CMD in the chroot with a clean environment (the caller's TMPDIR, e.g. a test run's
# temporary folder, does not exist in there: maintainer scripts' mktemp would fail).
in_root() {
  chroot "$R" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    TMPDIR=/tmp LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"
}

build_arch() {
  local a=$1 da=${DEBARCH[$1]} kernel initrd rootdisk dtbs d
  kernel=$(base_field "$a" kernel)
  initrd=$(base_field "$a" initrd)
  rootdisk=$(base_field "$a" rootDisk)
  # The manifest template must name the same paths as debian-12's (the files are debian-12's).
  for f in kernel initrd rootDisk; do
    [ "$(base_field "$a" "$f")" = "$(node -p "require('$HERE/manifest.json').arches['$a'].$f")" ] ||
      die "manifest.json: arches.$a.$f differs from debian-12's"
  done
  link_or_copy "$BASE_OUT/$kernel" "$W/out/$kernel"
  link_or_copy "$BASE_OUT/$initrd" "$W/out/$initrd"
  dtbs=$(node -p "Object.values(require('$HERE/manifest.json').arches['$a'].dtbs).join('\n')")
  for d in $dtbs; do
    [ -f "$BASE_OUT/$d" ] || die "$a: debian-12 has no $d"
    link_or_copy "$BASE_OUT/$d" "$W/out/$d"
  done

  # The .debs, from fetch-debs.sh's cache (downloaded once).
  local names debs
  names=$(cut -d' ' -f1 <<<"${INST[$a]}")
  debs_init "$da"
  debs_lock
  # shellcheck disable=SC2086
  debs=$(debs_fetch_many $names) || { debs_unlock; die "$a: could not fetch the .debs ($(echo $names))"; }
  debs_unlock

  log "$a: copying debian-12's root file system out of $rootdisk"
  umount_all
  rm -rf "$R"
  mkdir -p "$R" "$W/base"
  # Read-only, no journal replay: debian-12's image stays bit for bit as its checksum says.
  mount -o loop,ro,noload "$BASE_OUT/$rootdisk" "$W/base"
  tar -C "$W/base" --numeric-owner --xattrs --xattrs-include='*' --acls -cf - . | tar -C "$R" --numeric-owner --xattrs --xattrs-include='*' --acls -xpf -
  umount "$W/base"
  [ "$(cat "$R/etc/dozen-release" 2>/dev/null | sed -n 's/^DOZEN_IMAGE=//p')" = debian-12 ] || die "$a: $rootdisk is not a debian-12 root"

  mkdir -p "$R/tmp/debs"
  # shellcheck disable=SC2086
  cp $debs "$R/tmp/debs/"
  # No service may start inside the chroot (docker.io's postinst would try).
  printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
  chmod 755 "$R/usr/sbin/policy-rc.d"
  mount -t proc proc "$R/proc"
  mount --bind /dev "$R/dev"
  log "$a: installing $(wc -l <<<"$debs") packages (dpkg under ${QEMU[$da]})"
  # In apt's order: dpkg unpacks them all, then configures them with their dependencies in the set.
  local order
  order=$(for p in $names; do basename "$(grep -m1 "/${p}_" <<<"$debs")"; done | sed 's|^|/tmp/debs/|' | paste -sd' ')
  # The initrd is debian-12's (hard-linked above, what boards boot): the initramfs-tools trigger that
  # btrfs-progs and apparmor fire would only spend a minute of emulation on a copy nobody boots.
  local uconf=$R/etc/initramfs-tools/update-initramfs.conf
  cp -p "$uconf" "$W/update-initramfs.conf"
  sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$uconf"
  if ! in_root sh -c "dpkg -i $order" >"$W/dpkg-$a.log" 2>&1; then
    tail -40 "$W/dpkg-$a.log" >&2
    die "$a: dpkg -i failed inside the image (log above)"
  fi
  cp -p "$W/update-initramfs.conf" "$uconf"
  rm -rf "$R/tmp/debs" "$R/usr/sbin/policy-rc.d"

  tar -C "$HERE/rootfs" --owner=0 --group=0 --numeric-owner -cf - . | tar -C "$R" --no-overwrite-dir -xf -
  printf 'UUID=%s\t/\text4\tdefaults,noatime,errors=remount-ro\t0\t1\n' "$ROOT_UUID" >"$R/etc/fstab"
  cp "$HERE/configure.sh" "$R/tmp/configure.sh"
  log "$a: configuring inside the image"
  if ! in_root sh /tmp/configure.sh >"$W/configure-$a.log" 2>&1; then
    tail -40 "$W/configure-$a.log" >&2
    die "$a: configure.sh failed inside the image (log above)"
  fi
  umount_all
  rm -f "$R/tmp/configure.sh"

  local kver pkg_versions img=$W/out/$rootdisk
  kver=$(base_field "$a" kernelVersion)
  # shellcheck disable=SC2086
  pkg_versions=$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f '${Package} ${Version}\n' $WANT 2>/dev/null)
  printf 'DOZEN_IMAGE=docker-host\nBASE_IMAGE=debian-12\nARCH=%s\nKERNEL=%s\n' "$a" "$kver" >"$R/etc/dozen-release"
  log "$a: making $rootdisk ($ROOT_SIZE ext4, $(du -sh "$R" | cut -f1) used)"
  mkdir -p "$(dirname "$img")"
  mke2fs -q -F -t ext4 -L dozen-root -U "$ROOT_UUID" -E root_owner=0:0 -d "$R" "$img" "$ROOT_SIZE" >/dev/null ||
    die "$a: mke2fs -d failed (is $ROOT_SIZE too small for the root file system?)"
  e2fsck -fn "$img" >/dev/null 2>&1 || die "$a: e2fsck finds errors in the new $rootdisk"
  rm -rf "$R"
  node -e '
    const fs = require("fs");
    const [base, arch, out, versions] = process.argv.slice(1);
    const b = JSON.parse(fs.readFileSync(base, "utf8")).arches[arch];
    const ours = Object.fromEntries(versions.trim().split("\n").map((l) => l.split(" ")));
    fs.writeFileSync(out, JSON.stringify({ kernelVersion: b.kernelVersion, packages: { ...b.packages, ...ours } }));
  ' "$BASE_OUT/manifest.json" "$a" "$W/meta-$a.json" "$pkg_versions"
}

for a in "${ARCHES[@]}"; do build_arch "$a"; done

# --- 5. checksums and manifest -----------------------------------------------------------------------
log "checksums"
(cd "$W/out" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs sha256sum) >"$W/SHA256SUMS"
mv "$W/SHA256SUMS" "$W/out/SHA256SUMS"
node -e '
  const fs = require("fs");
  const [tmpl, sums, out, dir, ...arches] = process.argv.slice(1);
  const m = JSON.parse(fs.readFileSync(tmpl, "utf8"));
  for (const a of arches) Object.assign(m.arches[a], JSON.parse(fs.readFileSync(`${dir}/meta-${a}.json`, "utf8")));
  m.sha256 = {};
  for (const line of fs.readFileSync(sums, "utf8").trim().split("\n")) {
    const [hash, file] = line.split(/\s+\*?/);
    if (file === "SHA256SUMS") continue;
    m.sha256[file] = hash;
  }
  fs.writeFileSync(out, JSON.stringify(m, null, 2) + "\n");
' "$HERE/manifest.json" "$W/out/SHA256SUMS" "$W/out/manifest.json" "$W" "${ARCHES[@]}"

# --- 6. install into OUT (stale marker first, so an interrupted install is rebuilt) ------------------
rm -f "$OUT/.inputs"
rm -rf "$OUT/dtbs" "$OUT/arm64"
for f in dtbs arm64; do [ -d "$W/out/$f" ] && mv "$W/out/$f" "$OUT/$f"; done
# rm first: the kernel and initrd are hard links to debian-12's, and so may be the old ones (mv refuses
# to move a file onto another link of itself).
for f in vmlinuz initrd.img root.img SHA256SUMS manifest.json; do rm -f "$OUT/$f"; mv "$W/out/$f" "$OUT/$f"; done
echo "$INPUTS" >"$OUT/.inputs"
log "built $OUT: root disks $(du -h --apparent-size "$OUT/root.img" | cut -f1) each ($(du -ch "$OUT/root.img" "$OUT/arm64/root.img" | tail -1 | cut -f1) on disk)"
}

main "$@"
