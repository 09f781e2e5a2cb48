#!/usr/bin/env bash
# Builds the DozenCloud ARMv7 test image from Debian 12 (bookworm) armhf packages:
#   build/vmlinuz       zImage from linux-image-armmp's kernel package (U-Boot `bootz`)
#   build/initrd.img    gzip'd newc cpio: busybox-static, /init, a serial login, needed modules,
#                       iscsistart (open-iscsi) for an iSCSI root when the kernel command line names one
#   build/root.img      the iSCSI root disk: a sparse ext4 filesystem image (busybox, the same login,
#                       iscsid to keep the session alive), exported per lease by src/storage
#   build/dtbs/*.dtb    device trees for the real boards named in manifest.json's "dtbs"
#   build/manifest.json the template images/test/manifest.json plus sha256 of every file,
#                       kernel version, package versions and loaded modules (images/README.md)
#   build/SHA256SUMS    the same checksums for sha256sum -c
#
# Usage: images/test/build.sh [--force] [--refresh] [--out DIR]
#   --force    rebuild even when the outputs are up to date
#   --refresh  re-fetch the armhf package lists (picks up newer Debian packages); implies a
#              rebuild only if that changes a package
#   --out DIR  write the image to DIR instead of images/test/build
#
# Cached and idempotent: the .debs and package lists live in ${DOZEN_CACHE:-<repo>/.cache}/apt-armhf
# (see images/lib/fetch-armhf-debs.sh). The build is skipped when build/.inputs (a hash of the
# exact .debs, of this script, manifest.json, modules, rootfs/, rootdisk/ and images/lib/) is
# unchanged and the outputs still match build/SHA256SUMS. The output is reproducible: same inputs,
# same bytes (sorted cpio with fixed owners and mtimes, gzip -n; root.img with fixed UUID, hash seed
# and every inode time set to SOURCE_DATE_EPOCH).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$HERE/build
FORCE=0
REFRESH=0
# Fixed timestamp for every file in the initrd (reproducible builds).
EPOCH=${SOURCE_DATE_EPOCH:-0}

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

BUILD_NAME=test-image
# shellcheck source=../lib/build-log.sh
. "$REPO/images/lib/build-log.sh"

# shellcheck source=../lib/fetch-armhf-debs.sh
. "$REPO/images/lib/fetch-armhf-debs.sh"
# shellcheck source=../lib/armhf-elf.sh
. "$REPO/images/lib/armhf-elf.sh"
need dpkg-deb dpkg
need cpio cpio
need gzip gzip
need sha256sum coreutils
need od coreutils
need flock util-linux
need find findutils
need node nodejs
need readelf binutils
need mkfs.ext4 e2fsprogs
need debugfs e2fsprogs

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock -w 900 9 || die "another build holds $OUT/.lock for too long"

# --- 1. resolve and fetch the packages -------------------------------------------------------
# open-iscsi's iscsistart (initrd) and iscsid (root disk) and the libraries they link: elf_install
# checks the closure and names any library missing from this list.
ISCSI_PKGS=(open-iscsi libc6 libssl3 libkmod2 liblzma5 libzstd1 libopeniscsiusr libisns0 libmount1 libblkid1
  libselinux1 libpcre2-8-0 libsystemd0 libcap2 libgcrypt20 libgpg-error0 liblz4-1)
armhf_init
armhf_lock
armhf_ensure_lists "$REFRESH"
fetch_all() {
  KPKG=$(armhf_depends linux-image-armmp | grep -m1 '^linux-image-') || return 1
  META_VERSION=$(armhf_version linux-image-armmp) || return 1
  local debs
  debs=$(armhf_fetch_many "$KPKG" busybox-static "${ISCSI_PKGS[@]}") || return 1
  mapfile -t ISCSI_DEBS <<<"$debs"
  KDEB=${ISCSI_DEBS[0]}
  BBDEB=${ISCSI_DEBS[1]}
  ISCSI_DEBS=("${ISCSI_DEBS[@]:2}")
  [ ${#ISCSI_DEBS[@]} = ${#ISCSI_PKGS[@]} ] || return 1
}
if ! fetch_all; then
  [ "$ARMHF_LISTS_FRESH" = 0 ] || die "could not resolve or download the armhf packages (see above)"
  log "retrying with fresh package lists (the archive may have moved on)"
  armhf_update
  fetch_all || die "could not resolve or download the armhf packages (see above)"
fi
armhf_unlock
log "packages: $(basename "$KDEB"), $(basename "$BBDEB"), ${#ISCSI_DEBS[@]} for iSCSI ($(basename "${ISCSI_DEBS[0]}"))"

# --- 2. up to date? --------------------------------------------------------------------------
inputs_hash() {
  {
    echo "epoch=$EPOCH"
    basename "$KDEB"
    basename "$BBDEB"
    for d in "${ISCSI_DEBS[@]}"; do basename "$d"; done
    cd "$HERE"
    find build.sh manifest.json modules rootfs rootdisk ../lib \( -type f -o -type l \) -print | LC_ALL=C sort |
      while read -r f; do
        if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f $(stat -c %a "$f") $(sha256sum <"$f" | cut -c1-64)"; fi
      done
  } | sha256sum | cut -c1-64
}
INPUTS=$(inputs_hash)
if [ "$FORCE" = 0 ] && [ "$(cat "$OUT/.inputs" 2>/dev/null)" = "$INPUTS" ] && [ -f "$OUT/manifest.json" ] &&
  (cd "$OUT" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1); then
  log "up to date: $OUT (use --force to rebuild)"
  exit 0
fi

# --- 3. unpack -------------------------------------------------------------------------------
W=$OUT/.work
rm -rf "$W"
mkdir -p "$W/kernel" "$W/busybox" "$W/root" "$W/out"
trap 'rm -rf "$W"' EXIT
log "unpacking $(basename "$KDEB")"
dpkg-deb -x "$KDEB" "$W/kernel"
dpkg-deb -x "$BBDEB" "$W/busybox"
mkdir -p "$W/iscsi"
for d in "${ISCSI_DEBS[@]}"; do dpkg-deb -x "$d" "$W/iscsi"; done
KVERS=$(ls "$W/kernel/lib/modules")
[ "$(echo "$KVERS" | wc -l)" = 1 ] || die "expected one kernel in $KPKG, found: $KVERS"
KVER=$KVERS
KMOD=$W/kernel/lib/modules/$KVER

# --- 4. kernel and device trees --------------------------------------------------------------
cp "$W/kernel/boot/vmlinuz-$KVER" "$W/out/vmlinuz"
magic=$(od -An -tx4 -j 36 -N 4 --endian=little "$W/out/vmlinuz" | tr -d ' ')
[ "$magic" = 016f2818 ] || die "vmlinuz-$KVER is not an ARM zImage (magic at 0x24: $magic)"
log "kernel $KVER ($(($(stat -c %s "$W/out/vmlinuz") / 1024)) KiB zImage)"

DTB_SRC=$W/kernel/usr/lib/linux-image-$KVER
node -e '
  const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  for (const p of Object.values(m.dtbs ?? {})) console.log(p);
' "$HERE/manifest.json" | while read -r dtb; do
  src=$(find "$DTB_SRC" -name "$(basename "$dtb")" -print -quit)
  [ -n "$src" ] || die "$KPKG has no device tree $(basename "$dtb")"
  mkdir -p "$(dirname "$W/out/$dtb")"
  cp "$src" "$W/out/$dtb"
done
log "device trees: $(cd "$W/out" && find . -name '*.dtb' -printf '%P\n' | LC_ALL=C sort | tr '\n' ' ')"

# --- 5. modules: each listed module plus its dependencies, dependencies first ----------------
declare -A KO=() BUILTIN=() PICKED=()
while read -r p; do
  n=${p##*/}; n=${n%.ko}; KO[${n//-/_}]=$p
done < <(cd "$KMOD" && find kernel -name '*.ko')
while read -r p; do
  n=${p##*/}; n=${n%.ko}; BUILTIN[${n//-/_}]=1
done <"$KMOD/modules.builtin"

ORDER=()
resolve() { # resolve NAME: appends NAME's dependencies, then NAME, to ORDER
  local n=${1//-/_} deps d
  [ -n "${BUILTIN[$n]:-}" ] && return
  [ -n "${KO[$n]:-}" ] || die "module $1 (modules file) is neither built into nor shipped with $KVER"
  for d in "${ORDER[@]}"; do [ "$d" = "$n" ] && return; done
  deps=$(tr '\0' '\n' <"$KMOD/${KO[$n]}" | sed -n 's/^depends=//p' | head -1)
  for d in ${deps//,/ }; do resolve "$d"; done
  ORDER+=("$n")
}
mkdir -p "$W/root/etc/dozen" "$W/root/lib/modules/$KVER"
{
  echo "# <device-tree compatible|*> <module path>, in load order (generated by images/test/build.sh)"
  while read -r when mods; do
    case "$when" in '' | '#'*) continue ;; esac
    ORDER=()
    for m in $mods; do
      [ -n "${BUILTIN[${m//-/_}]:-}" ] && log "module $m is built into the kernel"
      resolve "$m"
    done
    for n in "${ORDER[@]}"; do
      echo "$when ${KO[$n]}"
      PICKED[$n]=1
      mkdir -p "$(dirname "$W/root/lib/modules/$KVER/${KO[$n]}")"
      cp "$KMOD/${KO[$n]}" "$W/root/lib/modules/$KVER/${KO[$n]}"
    done
  done <"$HERE/modules"
} >"$W/root/etc/dozen/modules.load"
cp "$KMOD/modules.builtin" "$KMOD/modules.order" "$W/root/lib/modules/$KVER/"
MODULES=$(printf '%s\n' "${!PICKED[@]}" | LC_ALL=C sort | tr '\n' ' ')
log "modules: $MODULES"

# --- 6. initrd -------------------------------------------------------------------------------
R=$W/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,root,var/log}
cp "$W/busybox/bin/busybox" "$R/bin/busybox"
elf=$(od -An -tx1 -N 20 "$R/bin/busybox" | tr -d ' \n')
case "$elf" in 7f454c46010101*2800) ;; *) die "busybox from busybox-static is not a 32-bit ARM ELF ($elf)" ;; esac
ln -s busybox "$R/bin/sh"
cp -R "$HERE/rootfs/." "$R/"
# iscsistart logs in to the root disk's target when the kernel command line names one (see /init).
elf_install "$W/iscsi" "$R" sbin/iscsistart
BB_VERSION=$(dpkg-deb -f "$BBDEB" Version)
OI_VERSION=$(dpkg-deb -f "${ISCSI_DEBS[0]}" Version)
K_VERSION=$(dpkg-deb -f "$KDEB" Version)
cat >"$R/etc/dozen-release" <<EOF
DOZEN_IMAGE=test
KERNEL=$KVER
KERNEL_PACKAGE="$KPKG $K_VERSION"
BUSYBOX_PACKAGE="busybox-static $BB_VERSION"
OPEN_ISCSI_PACKAGE="open-iscsi $OI_VERSION"
EOF
# Normalize modes (git only keeps the x bit) and times; owners are set by cpio -R.
find "$R" -type d -exec chmod 755 {} +
find "$R" -type f -perm /111 -exec chmod 755 {} +
find "$R" -type f ! -perm /111 -exec chmod 644 {} +
chmod 1777 "$R/tmp"
chmod 700 "$R/root"
[ -f "$R/etc/shadow" ] && chmod 600 "$R/etc/shadow"
find "$R" -exec touch -h -d "@$EPOCH" {} +
(cd "$R" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
  cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -9 >"$W/out/initrd.img"
log "initrd: $(($(stat -c %s "$W/out/initrd.img") / 1024)) KiB gzip'd cpio, $(find "$R" -mindepth 1 | wc -l) entries"

# --- 6b. root disk (iSCSI) ---------------------------------------------------------------------
# The same busybox userland and login as the initrd, plus iscsid (it adopts the session iscsistart
# made, so the board survives a target restart) and the root's own /sbin/init (rootdisk/).
ROOT_MIB=128
D=$W/rootdisk
mkdir -p "$D"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,root,var/log,etc/dozen,etc/iscsi}
cp "$W/busybox/bin/busybox" "$D/bin/busybox"
ln -s busybox "$D/bin/sh"
cp -R "$HERE/rootfs/etc/." "$D/etc/"
cp "$HERE/rootfs/sbin/dozen-login" "$HERE/rootfs/sbin/dozen-metadata" "$D/sbin/"
cp -R "$HERE/rootdisk/." "$D/"
cp "$R/etc/dozen-release" "$D/etc/dozen-release"
elf_install "$W/iscsi" "$D" sbin/iscsid
find "$D" -type d -exec chmod 755 {} +
find "$D" -type f -perm /111 -exec chmod 755 {} +
find "$D" -type f ! -perm /111 -exec chmod 644 {} +
chmod 1777 "$D/tmp"
chmod 700 "$D/root"
chmod 600 "$D/etc/shadow"
rm -f "$W/out/root.img"
truncate -s "${ROOT_MIB}M" "$W/out/root.img"
# Fixed UUID and directory hash seed, files owned by root whoever builds: reproducible. e2fsprogs
# ignores a fake time of 0, so superblock times are EPOCH, or 1 s past it when EPOCH is 0.
FAKE_TIME=$((EPOCH > 0 ? EPOCH : 1))
E2FSPROGS_FAKE_TIME=$FAKE_TIME mkfs.ext4 -q -F -L dozen-root -U 6f1c1b7e-d0ce-4c1d-9e12-000000000001 \
  -E hash_seed=6f1c1b7e-d0ce-4c1d-9e12-000000000002,root_owner=0:0 -d "$D" "$W/out/root.img" ||
  die "mkfs.ext4 -d failed for the root disk"
# mkfs -d copies each file's ctime/atime (which touch cannot fix) and owner: set them like cpio -R 0:0.
(cd "$D" && find . -printf '%P\n') | while read -r p; do
  for f in atime ctime mtime crtime; do echo "sif \"/$p\" $f @$EPOCH"; echo "sif \"/$p\" ${f}_extra 0"; done
  echo "sif \"/$p\" uid 0"
  echo "sif \"/$p\" gid 0"
done >"$W/debugfs.cmds"
for f in atime ctime mtime crtime; do echo "sif /lost+found $f @$EPOCH"; done >>"$W/debugfs.cmds"
E2FSPROGS_FAKE_TIME=$FAKE_TIME debugfs -w -f "$W/debugfs.cmds" "$W/out/root.img" >/dev/null 2>"$W/debugfs.err" ||
  die "debugfs could not normalise root.img: $(tail -3 "$W/debugfs.err")"
e2fsck -fn "$W/out/root.img" >/dev/null 2>&1 || die "root.img does not pass e2fsck -fn"
log "root disk: ${ROOT_MIB} MiB sparse ext4, $(($(stat -c %b "$W/out/root.img") * 512 / 1024)) KiB allocated, $(find "$D" -mindepth 1 | wc -l) entries"

# --- 7. checksums and manifest ---------------------------------------------------------------
(cd "$W/out" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs sha256sum) >"$W/SHA256SUMS"
mv "$W/SHA256SUMS" "$W/out/SHA256SUMS"
node -e '
  const fs = require("fs");
  const [tmpl, sums, out, kver, kpkg, kver2, meta, bbver, modules, oiver] = process.argv.slice(1);
  const m = JSON.parse(fs.readFileSync(tmpl, "utf8"));
  m.sha256 = {};
  for (const line of fs.readFileSync(sums, "utf8").trim().split("\n")) {
    const [hash, file] = line.split(/\s+\*?/);
    m.sha256[file] = hash;
  }
  m.kernelVersion = kver;
  m.packages = {
    "linux-image-armmp": meta,
    [kpkg]: kver2,
    "busybox-static": bbver,
    "open-iscsi": oiver,
  };
  m.modules = modules.trim().split(/\s+/).filter(Boolean);
  fs.writeFileSync(out, JSON.stringify(m, null, 2) + "\n");
' "$HERE/manifest.json" "$W/out/SHA256SUMS" "$W/out/manifest.json" "$KVER" "$KPKG" "$K_VERSION" "$META_VERSION" "$BB_VERSION" "$MODULES" "$OI_VERSION"

# --- 8. install into OUT (stale marker first, so an interrupted install is rebuilt) ----------
rm -f "$OUT/.inputs"
rm -rf "$OUT/dtbs"
[ -d "$W/out/dtbs" ] && mv "$W/out/dtbs" "$OUT/dtbs"
for f in vmlinuz initrd.img root.img SHA256SUMS manifest.json; do mv -f "$W/out/$f" "$OUT/$f"; done
echo "$INPUTS" >"$OUT/.inputs"
log "built $OUT (kernel $KVER)"
