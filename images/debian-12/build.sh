#!/usr/bin/env bash
# Builds the DozenCloud Debian 12 (bookworm) image, a real Debian that boots with its root file
# system on the lease's iSCSI disk, for two architectures: armv7 (Debian armhf, the armmp kernel)
# and arm64 (Debian arm64, the generic arm64 kernel). Paths come from manifest.json's arches.<arch>:
#   build/vmlinuz             armv7: the armmp kernel (zImage, U-Boot `bootz`)
#   build/initrd.img          armv7: initramfs-tools + open-iscsi: logs in to the target named by the
#                             iscsi_* kernel args; drivers from modules-armhf (virtio, A20 and R40 NICs)
#   build/dtbs/*.dtb          armv7: the device trees named in manifest.json (Banana Pi, Pro, M2 Ultra)
#   build/root.img            armv7: the root file system: raw ext4, NO partition table (the LUN is the
#                             file system), 1536 MiB apparent size, sparse. dozen-firstboot grows it
#                             (resize2fs) on boot when the server exports a bigger disk.
#   build/arm64/Image         arm64: linux-image-arm64's kernel, DEcompressed (U-Boot `booti`)
#   build/arm64/initrd.img    arm64: the same initramfs, drivers from modules-arm64 (virtio)
#   build/arm64/root.img      arm64: the same root file system, arm64 binaries. Both root.img files
#                             get the same fixed UUID: the manifest's one root=UUID= is shared.
#   build/manifest.json       images/debian-12/manifest.json plus sha256 of every file and, per arch,
#                             kernel version and package versions (format: images/README.md)
#   build/SHA256SUMS          the same checksums for sha256sum -c
#
# Usage: sudo images/debian-12/build.sh [--force] [--refresh] [--out DIR]
#   --force    rebuild the image even when it is up to date (the cached bases are reused)
#   --refresh  re-fetch both architectures' package lists; a newer version of a listed package
#              rebuilds that architecture's base
#   --out DIR  write the image to DIR instead of images/debian-12/build
#
# Two stages per architecture, cached under ${DOZEN_CACHE:-<repo>/.cache}/debian-12:
#   base   debootstrap minbase + images/debian-12/packages, then the kernel and its initramfs
#          (base.sh): the slow part, dpkg under qemu-arm / qemu-aarch64. Cached as
#          base-<debian arch>-<key>.tar.zst, key = the architecture, base.sh, the initramfs
#          configuration files (base.sh's BASE_FILES and modules-<debian arch>), the package list and
#          the versions that architecture's cached lists (images/lib/fetch-debs.sh) resolve it to,
#          debootstrap's version and the mirror. Downloaded .debs stay in debs/ for the next base.
#          The bases are built one after the other, never two debootstraps at once.
#   image  unpack the base, copy rootfs/ over it, run configure.sh inside (units, cleanup), make
#          root.img with mkfs.ext4 -d (no loop mount). Skipped when build/.inputs (both base keys +
#          this script, configure.sh, manifest.json, rootfs/) is unchanged and the outputs match
#          SHA256SUMS.
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
need gzip gzip
need tar tar
need cpio cpio
need od coreutils
need sha256sum coreutils
need flock util-linux
need mountpoint util-linux
need node nodejs
[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot): sudo $0 $*"
mke2fs -d / -n /dev/null 2>&1 | grep -q 'invalid option' && die "mke2fs is too old for -d (need e2fsprogs >= 1.43)"

# Image architecture -> Debian architecture, and the emulator its binaries run under.
ARCHES=(armv7 arm64)
declare -A DEBARCH=([armv7]=armhf [arm64]=arm64)
declare -A QEMU=([armhf]=qemu-arm [arm64]=qemu-aarch64)

# The manifest's root=UUID= is the file system's UUID: one source of truth, shared by both
# architectures' root.img (the server renders one cmdline per image; no board mounts both).
ROOT_UUID=$(node -e 'const m=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));const r=/root=UUID=([0-9a-f-]{36})/.exec(m.cmdline);if(!r)process.exit(1);console.log(r[1])' "$HERE/manifest.json") ||
  die "manifest.json's cmdline needs root=UUID=<uuid> (the UUID given to root.img)"

# Foreign binaries run through binfmt_misc + qemu-arm / qemu-aarch64 (F flag: works inside the chroot too).
ensure_binfmt() { # ensure_binfmt QEMU-NAME
  local f=/proc/sys/fs/binfmt_misc q=$1
  [ -e "$f/status" ] || mount -t binfmt_misc binfmt_misc "$f" 2>/dev/null || true
  if ! grep -qs enabled "$f/$q" && command -v update-binfmts >/dev/null; then
    update-binfmts --enable "$q" >/dev/null 2>&1 || true
  fi
  grep -qs enabled "$f/$q" ||
    die "no binfmt_misc handler $q — apt-get install qemu-user-static binfmt-support, then: update-binfmts --enable $q"
}
for a in "${ARCHES[@]}"; do ensure_binfmt "${QEMU[${DEBARCH[$a]}]}"; done

mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock -w 1800 9 || die "another build holds $OUT/.lock for too long"

# The manifest template's entry for one architecture, as lines "kernel PATH", "initrd PATH",
# "rootDisk PATH" and "dtb PATH" (one per device tree).
arch_paths() {
  node -e '
    const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const e = (m.arches ?? {})[process.argv[2]];
    if (!e) { console.error(`manifest.json has no arches.${process.argv[2]}`); process.exit(1); }
    for (const k of ["kernel", "initrd", "rootDisk"]) if (e[k]) console.log(k, e[k]);
    for (const p of Object.values(e.dtbs ?? {})) console.log("dtb", p);
  ' "$HERE/manifest.json" "$1"
}

# --- 1. the bases' cache keys ------------------------------------------------------------------------
# shellcheck source=../lib/fetch-debs.sh
. "$REPO/images/lib/fetch-debs.sh"
# pkgs_for DEBIAN-ARCH: the package list for that architecture ("arch:name" lines for it, plain names).
pkgs_for() {
  sed 's/#.*//' "$HERE/packages" | tr -s ' \t\n' '\n' | sed '/^$/d' |
    awk -v a="$1" '{ n = split($0, f, ":"); if (n == 1) print; else if (f[1] == a) print f[2] }'
}
BASE_FILES=$(sed -n 's/^BASE_FILES="\(.*\)"$/\1/p' "$HERE/base.sh")
DEBOOTSTRAP_VERSION=$(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || debootstrap --version)
declare -A PKGS=() BASE_KEY=() BASE_TAR=()
for a in "${ARCHES[@]}"; do
  da=${DEBARCH[$a]}
  PKGS[$a]=$(pkgs_for "$da")
  debs_init "$da"
  debs_lock
  debs_ensure_lists "$REFRESH"
  # One apt-cache call for all (one per package takes seconds): "name=candidate version" lines.
  # shellcheck disable=SC2086
  versions=$(apt-cache "${DEBS_APT[@]}" policy ${PKGS[$a]} 2>/dev/null |
    awk '/^[^ ].*:$/ { p = $0; sub(/:$/, "", p) } /^  Candidate:/ && $2 != "(none)" { print p "=" $2 }')
  debs_unlock
  for p in ${PKGS[$a]}; do
    grep -q "^$p=" <<<"$versions" || die "package '$p' (images/debian-12/packages) is not in the $da lists; try --refresh"
  done
  BASE_KEY[$a]=$({
    echo "arch=$da"
    echo "mirror=$MIRROR"
    echo "debootstrap=$DEBOOTSTRAP_VERSION"
    sha256sum <"$HERE/base.sh"
    for f in $BASE_FILES; do echo "$f $(sha256sum <"$HERE/rootfs/$f")"; done
    echo "modules-$da $(sha256sum <"$HERE/modules-$da")"
    echo "$versions"
  } | sha256sum | cut -c1-16)
  BASE_TAR[$a]=$CACHE/base-$da-${BASE_KEY[$a]}.tar.zst
  log "$a: $(grep -m1 '^linux-image-' <<<"$versions"), $(wc -l <<<"${PKGS[$a]}") packages listed; base $da-${BASE_KEY[$a]}"
done

# --- 2. up to date? ----------------------------------------------------------------------------------
inputs_hash() {
  {
    for a in "${ARCHES[@]}"; do echo "$a base=${BASE_KEY[$a]}"; done
    echo "size=$ROOT_SIZE"
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

W=$OUT/.work
R=$W/root
umount_all() {
  for m in proc dev; do mountpoint -q "$R/$m" 2>/dev/null && umount -l "$R/$m"; done
  return 0
}
cleanup() { umount_all; rm -rf "$W"; }
umount_all
rm -rf "$W"
mkdir -p "$W/out"
trap cleanup EXIT

# build_arch ARCH: ARCH's kernel, initrd, device trees and root.img into $W/out (paths from the
# template), its metadata into $W/meta-ARCH.json.
build_arch() {
  local a=$1 da=${DEBARCH[$1]} tar=${BASE_TAR[$1]}
  local kernel_path='' initrd_path='' rootdisk_path='' k v
  local -a dtb_paths=()
  while read -r k v; do
    case "$k" in
      kernel) kernel_path=$v ;;
      initrd) initrd_path=$v ;;
      rootDisk) rootdisk_path=$v ;;
      dtb) dtb_paths+=("$v") ;;
    esac
  done < <(arch_paths "$a")
  [ -n "$kernel_path" ] && [ -n "$initrd_path" ] && [ -n "$rootdisk_path" ] ||
    die "manifest.json: arches.$a needs kernel, initrd and rootDisk"

  # --- 3. base (debootstrap), cached: one at a time ----------------------------------------------
  if [ -f "$tar" ]; then
    log "$a: base cached: $(basename "$tar")"
  else
    log "$a: base not cached, running debootstrap --arch=$da (cold: about 10 minutes on 2 cores)"
    bash "$HERE/base.sh" "$da" "${BASE_KEY[$a]}" "$tar"
    # Older bases of this architecture (and of the armhf-only layout, base-<key>) are dead weight
    # (hundreds of MB each); the .debs stay for the next one.
    find "$CACHE" -maxdepth 1 \( -name "base-$da-*.tar.zst" -o -regex '.*/base-[0-9a-f]+\.tar\.zst' \) \
      ! -name "$(basename "$tar")" -delete
    log "$a: base built"
  fi

  # --- 4. unpack, overlay, configure inside the image ----------------------------------------------
  umount_all
  rm -rf "$R"
  mkdir -p "$R"
  log "$a: unpacking the base"
  zstd -dc "$tar" | tar -C "$R" --numeric-owner --xattrs --xattrs-include='*' --acls -xf -
  # Our files, owned by root, without touching the modes of directories that already exist.
  tar -C "$HERE/rootfs" --owner=0 --group=0 --numeric-owner -cf - . | tar -C "$R" --no-overwrite-dir -xf -
  # The list the initramfs was built from (base.sh), for the tenant's own update-initramfs.
  install -m 644 "$HERE/modules-$da" "$R/etc/initramfs-tools/modules"
  # noatime: when iscsid takes over the initramfs's session it stops the connection and logs in again;
  # a read that updates an atime in that window starts an ext4 journal handle, which waits on a journal
  # commit queued behind the stopped connection: iscsid never sends its login, and the root dies at the
  # 120-s recovery timeout (seen on the emulated Banana Pi: "comm iscsid: Detected aborted journal").
  printf 'UUID=%s\t/\text4\tdefaults,noatime,errors=remount-ro\t0\t1\n' "$ROOT_UUID" >"$R/etc/fstab"
  echo dozen >"$R/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tdozen\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
  cp "$HERE/configure.sh" "$R/tmp/configure.sh"
  mount -t proc proc "$R/proc"
  mount --bind /dev "$R/dev"
  log "$a: configuring inside the image"
  if ! chroot "$R" /bin/sh /tmp/configure.sh >"$W/configure-$a.log" 2>&1; then
    tail -40 "$W/configure-$a.log" >&2
    die "$a: configure.sh failed inside the image (log above)"
  fi
  umount_all
  rm -f "$R/tmp/configure.sh"

  # --- 5. kernel, initrd, device trees -------------------------------------------------------------
  local kvers kver kout=$W/out/$kernel_path iout=$W/out/$initrd_path magic
  kvers=$(ls "$R/lib/modules")
  [ "$(echo "$kvers" | wc -l)" = 1 ] || die "$a: expected one kernel in the image, found: $kvers"
  kver=$kvers
  mkdir -p "$(dirname "$kout")" "$(dirname "$iout")"
  case "$a" in
    armv7)
      cp "$R/boot/vmlinuz-$kver" "$kout"
      magic=$(od -An -tx4 -j 36 -N 4 --endian=little "$kout" | tr -d ' ')
      [ "$magic" = 016f2818 ] || die "vmlinuz-$kver is not an ARM zImage (magic at 0x24: $magic)"
      ;;
    arm64)
      # Debian's arm64 vmlinuz is a gzip'd Image; booti wants it plain (no kernel_comp_addr_r needed).
      if [ "$(od -An -tx1 -N 2 "$R/boot/vmlinuz-$kver" | tr -d ' ')" = 1f8b ]; then
        gzip -dc "$R/boot/vmlinuz-$kver" >"$kout"
      else
        cp "$R/boot/vmlinuz-$kver" "$kout"
      fi
      magic=$(od -An -tx4 -j 56 -N 4 --endian=little "$kout" | tr -d ' ')
      [ "$magic" = 644d5241 ] || die "vmlinuz-$kver is not an arm64 Image (magic at 0x38: $magic)"
      ;;
  esac
  cp "$R/boot/initrd.img-$kver" "$iout"
  local dtb src
  for dtb in ${dtb_paths[@]+"${dtb_paths[@]}"}; do
    src=$(find "$R/usr/lib/linux-image-$kver" -name "$(basename "$dtb")" -print -quit)
    [ -n "$src" ] || die "$a: the kernel package has no device tree $(basename "$dtb")"
    mkdir -p "$(dirname "$W/out/$dtb")"
    cp "$src" "$W/out/$dtb"
  done
  # The initramfs must be able to log in to the root's target (iscsistart, its script, iscsi_tcp)
  # and must carry every module of modules-ARCH that is not built into the kernel.
  local list want m re
  list=$(zstd -dc "$iout" | cpio -it --quiet 2>/dev/null)
  for want in 'sbin/iscsistart$' '^scripts/local-top/iscsi$' '/iscsi_tcp\.ko' '^etc/iscsi\.initramfs$'; do
    grep -qE "$want" <<<"$list" || die "$a: the initramfs lacks $want: the open-iscsi hook did not run"
  done
  for m in $(sed 's/#.*//' "$HERE/modules-$da"); do
    re=${m//[-_]/[-_]}
    grep -qE "/$re\.ko(\.xz)?$" <<<"$list" || grep -qE "/$re\.ko$" "$R/lib/modules/$kver/modules.builtin" ||
      die "$a: the initramfs lacks module $m (modules-$da)"
  done
  log "$a: kernel $kver ($(($(stat -c %s "$kout") / 1024)) KiB), initrd $(($(stat -c %s "$iout") / 1024)) KiB with iscsistart and modules-$da, ${#dtb_paths[@]} device trees"

  # --- 6. root.img: the root file system, no partition table ---------------------------------------
  local img=$W/out/$rootdisk_path pkg_versions
  # shellcheck disable=SC2086
  pkg_versions=$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f '${Package} ${Version}\n' ${PKGS[$a]} "linux-image-$kver" 2>/dev/null)
  printf 'DOZEN_IMAGE=debian-12\nARCH=%s\nKERNEL=%s\n' "$a" "$kver" >"$R/etc/dozen-release"
  log "$a: making $rootdisk_path ($ROOT_SIZE ext4, $(du -sh "$R" | cut -f1) used)"
  mkdir -p "$(dirname "$img")"
  mke2fs -q -F -t ext4 -L dozen-root -U "$ROOT_UUID" -E root_owner=0:0 -d "$R" "$img" "$ROOT_SIZE" >/dev/null ||
    die "$a: mke2fs -d failed (is $ROOT_SIZE too small for the root file system?)"
  e2fsck -fn "$img" >/dev/null 2>&1 || die "$a: e2fsck finds errors in the new $rootdisk_path"
  rm -rf "$R"
  node -e '
    const [out, kver, versions] = process.argv.slice(1);
    require("fs").writeFileSync(out, JSON.stringify({
      kernelVersion: kver,
      packages: Object.fromEntries(versions.trim().split("\n").map((l) => l.split(" "))),
    }));
  ' "$W/meta-$a.json" "$kver" "$pkg_versions"
}

for a in "${ARCHES[@]}"; do build_arch "$a"; done

# --- 7. checksums and manifest -----------------------------------------------------------------------
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

# --- 8. install into OUT (stale marker first, so an interrupted install is rebuilt) ------------------
rm -f "$OUT/.inputs"
rm -rf "$OUT/dtbs" "$OUT/arm64"
for f in dtbs arm64; do [ -d "$W/out/$f" ] && mv "$W/out/$f" "$OUT/$f"; done
for f in vmlinuz initrd.img root.img SHA256SUMS manifest.json; do mv -f "$W/out/$f" "$OUT/$f"; done
echo "$INPUTS" >"$OUT/.inputs"
log "built $OUT: $(for a in "${ARCHES[@]}"; do printf '%s %s, ' "$a" "$(node -p "require('$W/meta-$a.json').kernelVersion")"; done)root disks $(du -h --apparent-size "$OUT/root.img" | cut -f1) each ($(du -ch "$OUT/root.img" "$OUT/arm64/root.img" | tail -1 | cut -f1) on disk)"
}

main "$@"
