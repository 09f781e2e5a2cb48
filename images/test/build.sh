#!/usr/bin/env bash
# Builds the DozenCloud test image, one image with two architectures, from Debian 12 (bookworm)
# packages: armv7 from armhf (linux-image-armmp), arm64 from arm64 (linux-image-arm64).
#   build/vmlinuz             armv7: zImage from linux-image-armmp's kernel package (U-Boot `bootz`)
#   build/initrd.img          armv7: gzip'd newc cpio: busybox-static, /init, a serial login, the
#                             modules its boards need, iscsistart (open-iscsi) for an iSCSI root
#   build/root.img            armv7: the iSCSI root disk: a sparse ext4 filesystem image (busybox, the
#                             same login, iscsid to keep the session alive), exported per lease
#   build/dtbs/*.dtb          armv7: device trees named in manifest.json's arches.armv7.dtbs
#   build/arm64/Image         arm64: linux-image-arm64's kernel, decompressed (U-Boot `booti`)
#   build/arm64/initrd.img    arm64: the same initrd, from arm64 packages
#   build/arm64/root.img      arm64: the same root disk, from arm64 packages
#   build/manifest.json       the template images/test/manifest.json plus sha256 of every file and,
#                             per arch, kernel version, package versions and modules (images/README.md)
#   build/SHA256SUMS          the same checksums for sha256sum -c
#
# Usage: images/test/build.sh [--force] [--refresh] [--out DIR]
#   --force    rebuild even when the outputs are up to date
#   --refresh  re-fetch the package lists of both architectures (picks up newer Debian packages);
#              implies a rebuild only if that changes a package
#   --out DIR  write the image to DIR instead of images/test/build
#
# Cached and idempotent: the .debs and package lists live in ${DOZEN_CACHE:-<repo>/.cache}/apt-armhf
# and apt-arm64 (see images/lib/fetch-debs.sh). The build is skipped when build/.inputs (a hash of
# the exact .debs of both architectures, of this script, manifest.json, modules, rootfs/, rootdisk/
# and images/lib/) is unchanged and the outputs still match build/SHA256SUMS. The output is
# reproducible: same inputs, same bytes (sorted cpio with fixed owners and mtimes, gzip -n; root.img
# with fixed UUID, hash seed and every inode time set to SOURCE_DATE_EPOCH).
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

# shellcheck source=../lib/fetch-debs.sh
. "$REPO/images/lib/fetch-debs.sh"
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
need xz xz-utils
need debugfs e2fsprogs

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock -w 900 9 || die "another build holds $OUT/.lock for too long"

# --- 1. resolve and fetch the packages, per architecture -------------------------------------
# Image architecture -> Debian architecture, kernel metapackage, where its files go in the image.
ARCHES=(armv7 arm64)
declare -A DEBARCH=([armv7]=armhf [arm64]=arm64)
declare -A KMETA=([armv7]=linux-image-armmp [arm64]=linux-image-arm64)
declare -A PREFIX=([armv7]="" [arm64]="arm64/")
# open-iscsi's iscsistart (initrd) and iscsid (root disk) and the libraries they link: elf_install_arch
# checks the closure and names any library missing from this list.
ISCSI_PKGS=(open-iscsi libc6 libssl3 libkmod2 liblzma5 libzstd1 libopeniscsiusr libisns0 libmount1 libblkid1
  libselinux1 libpcre2-8-0 libsystemd0 libcap2 libgcrypt20 libgpg-error0 liblz4-1)
# Per arch: the kernel package and metapackage version, and the .debs (kernel, busybox, iSCSI ones
# in ISCSI_PKGS order), newline-separated.
declare -A KPKG=() META_VERSION=() DEBLIST=()
fetch_all() { # fetch_all ARCH
  local a=$1 stanza kpkg meta debs
  stanza=$(debs_candidate "${KMETA[$a]}") || return 1
  kpkg=$(debs_stanza_depends <<<"$stanza" | grep -m1 '^linux-image-') || return 1
  meta=$(sed -n 's/^Version: //p' <<<"$stanza" | head -1)
  [ -n "$meta" ] || return 1
  debs=$(debs_fetch_many "$kpkg" busybox-static "${ISCSI_PKGS[@]}") || return 1
  [ "$(printf '%s\n' "$debs" | wc -l)" = $((2 + ${#ISCSI_PKGS[@]})) ] || return 1
  KPKG[$a]=$kpkg META_VERSION[$a]=$meta DEBLIST[$a]=$debs
}
# Both architectures at once (each costs a few apt calls of about a second): each in a subshell that
# writes "KPKG\nMETA_VERSION\n<.debs>" to a file; the caches and locks are per architecture.
resolve_arch() { # resolve_arch ARCH FILE
  local a=$1
  debs_init "${DEBARCH[$a]}"
  debs_lock
  debs_ensure_lists "$REFRESH"
  if ! fetch_all "$a"; then
    [ "$DEBS_LISTS_FRESH" = 0 ] || die "could not resolve or download the ${DEBARCH[$a]} packages (see above)"
    log "$a: retrying with fresh ${DEBARCH[$a]} package lists (the archive may have moved on)"
    debs_update
    fetch_all "$a" || die "could not resolve or download the ${DEBARCH[$a]} packages (see above)"
  fi
  debs_unlock
  printf '%s\n%s\n%s\n' "${KPKG[$a]}" "${META_VERSION[$a]}" "${DEBLIST[$a]}" >"$2"
}
RES=$(mktemp -d)
trap 'rm -rf "$RES"' EXIT
declare -A RPID=()
for a in "${ARCHES[@]}"; do
  resolve_arch "$a" "$RES/$a" &
  RPID[$a]=$!
done
for a in "${ARCHES[@]}"; do wait "${RPID[$a]}" || die "$a: package resolution failed (see above)"; done
for a in "${ARCHES[@]}"; do
  mapfile -t _d <"$RES/$a"
  KPKG[$a]=${_d[0]} META_VERSION[$a]=${_d[1]}
  DEBLIST[$a]=$(printf '%s\n' "${_d[@]:2}")
  log "$a packages: $(basename "${_d[2]}"), $(basename "${_d[3]}"), ${#ISCSI_PKGS[@]} for iSCSI ($(basename "${_d[4]}"))"
done
rm -rf "$RES"

# --- 2. up to date? --------------------------------------------------------------------------
inputs_hash() {
  {
    echo "epoch=$EPOCH"
    for a in "${ARCHES[@]}"; do
      echo "arch=$a"
      printf '%s\n' "${DEBLIST[$a]}" | while read -r d; do basename "$d"; done
    done
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

W=$OUT/.work
rm -rf "$W"
mkdir -p "$W/out"
trap 'rm -rf "$W" "$RES"' EXIT

# The template's entry for one architecture, as lines "kernel PATH", "initrd PATH", "rootDisk PATH"
# and "dtb PATH" (one per device tree).
arch_paths() {
  node -e '
    const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const e = (m.arches ?? {})[process.argv[2]];
    if (!e) { console.error(`manifest.json has no arches.${process.argv[2]}`); process.exit(1); }
    for (const k of ["kernel", "initrd", "rootDisk"]) if (e[k]) console.log(k, e[k]);
    for (const p of Object.values(e.dtbs ?? {})) console.log("dtb", p);
  ' "$HERE/manifest.json" "$1"
}

# build_arch ARCH: builds ARCH's kernel, device trees, initrd and root disk into $W/out (paths from
# the template) and its metadata into $W/meta-ARCH.json.
build_arch() {
  local a=$1 da=${DEBARCH[$a]} A=$W/$1
  local -a debs iscsi_debs
  mapfile -t debs <<<"${DEBLIST[$a]}"
  local kdeb=${debs[0]} bbdeb=${debs[1]} kpkg=${KPKG[$a]}
  iscsi_debs=("${debs[@]:2}")
  local kernel_path initrd_path rootdisk_path
  local -a dtb_paths=()
  while read -r k v; do
    case "$k" in
      kernel) kernel_path=$v ;;
      initrd) initrd_path=$v ;;
      rootDisk) rootdisk_path=$v ;;
      dtb) dtb_paths+=("$v") ;;
    esac
  done < <(arch_paths "$a")
  [ -n "${kernel_path:-}" ] && [ -n "${initrd_path:-}" ] && [ -n "${rootdisk_path:-}" ] ||
    die "manifest.json: arches.$a needs kernel, initrd and rootDisk"

  # --- 3. unpack -----------------------------------------------------------------------------
  mkdir -p "$A/kernel" "$A/busybox" "$A/root" "$A/iscsi"
  log "$a: unpacking $(basename "$kdeb")"
  dpkg-deb -x "$kdeb" "$A/kernel"
  dpkg-deb -x "$bbdeb" "$A/busybox"
  local d
  for d in "${iscsi_debs[@]}"; do dpkg-deb -x "$d" "$A/iscsi"; done
  local kvers kver kmod
  kvers=$(ls "$A/kernel/lib/modules")
  [ "$(echo "$kvers" | wc -l)" = 1 ] || die "expected one kernel in $kpkg, found: $kvers"
  kver=$kvers
  kmod=$A/kernel/lib/modules/$kver

  # --- 4. kernel and device trees ------------------------------------------------------------
  local kout=$W/out/$kernel_path magic
  mkdir -p "$(dirname "$kout")"
  case "$a" in
    armv7)
      cp "$A/kernel/boot/vmlinuz-$kver" "$kout"
      magic=$(od -An -tx4 -j 36 -N 4 --endian=little "$kout" | tr -d ' ')
      [ "$magic" = 016f2818 ] || die "vmlinuz-$kver is not an ARM zImage (magic at 0x24: $magic)"
      log "$a: kernel $kver ($(($(stat -c %s "$kout") / 1024)) KiB zImage)"
      ;;
    arm64)
      # Debian's arm64 vmlinuz is a gzip'd Image; booti wants it plain (no kernel_comp_addr_r needed).
      if [ "$(od -An -tx1 -N 2 "$A/kernel/boot/vmlinuz-$kver" | tr -d ' ')" = 1f8b ]; then
        gzip -dc "$A/kernel/boot/vmlinuz-$kver" >"$kout"
      else
        cp "$A/kernel/boot/vmlinuz-$kver" "$kout"
      fi
      magic=$(od -An -tx4 -j 56 -N 4 --endian=little "$kout" | tr -d ' ')
      [ "$magic" = 644d5241 ] || die "vmlinuz-$kver is not an arm64 Image (magic at 0x38: $magic)"
      log "$a: kernel $kver ($(($(stat -c %s "$kout") / 1024)) KiB Image, decompressed)"
      ;;
  esac
  local dtb_src=$A/kernel/usr/lib/linux-image-$kver dtb src
  for dtb in ${dtb_paths[@]+"${dtb_paths[@]}"}; do
    src=$(find "$dtb_src" -name "$(basename "$dtb")" -print -quit)
    [ -n "$src" ] || die "$kpkg has no device tree $(basename "$dtb")"
    mkdir -p "$(dirname "$W/out/$dtb")"
    cp "$src" "$W/out/$dtb"
  done
  [ ${#dtb_paths[@]} = 0 ] || log "$a: device trees: $(printf '%s\n' "${dtb_paths[@]}" | xargs -n1 basename | tr '\n' ' ')"

  # --- 5. modules: each listed module plus its dependencies, dependencies first --------------
  # Modules may be .ko or .ko.xz in the package; the initrd gets them uncompressed (busybox insmod).
  local -A KO=() BUILTIN=() PICKED=()
  local p n
  while read -r p; do
    n=${p##*/}; n=${n%.xz}; n=${n%.ko}; KO[${n//-/_}]=$p
  done < <(cd "$kmod" && find kernel -name '*.ko' -o -name '*.ko.xz')
  while read -r p; do
    n=${p##*/}; n=${n%.ko}; BUILTIN[${n//-/_}]=1
  done <"$kmod/modules.builtin"
  local R=$A/root
  mkdir -p "$R/etc/dozen" "$R/lib/modules/$kver"
  modfile() { # modfile NAME: the module's uncompressed .ko in the initrd tree, copied on first use
    local src=$kmod/${KO[$1]} dst=$R/lib/modules/$kver/${KO[$1]%.xz}
    if [ ! -f "$dst" ]; then
      mkdir -p "$(dirname "$dst")"
      case "$src" in *.xz) xz -dc "$src" >"$dst" ;; *) cp "$src" "$dst" ;; esac
    fi
    echo "$dst"
  }
  local -a ORDER=()
  resolve() { # resolve NAME: appends NAME's dependencies, then NAME, to ORDER
    local n=${1//-/_} deps d
    [ -n "${BUILTIN[$n]:-}" ] && return
    [ -n "${KO[$n]:-}" ] || die "$a: module $1 (modules file) is neither built into nor shipped with $kver"
    for d in ${ORDER[@]+"${ORDER[@]}"}; do [ "$d" = "$n" ] && return; done
    deps=$(tr '\0' '\n' <"$(modfile "$n")" | sed -n 's/^depends=//p' | head -1)
    for d in ${deps//,/ }; do resolve "$d"; done
    ORDER+=("$n")
  }
  local when mods m
  {
    echo "# <device-tree compatible|*|iscsi> <module path>, in load order (generated by images/test/build.sh for $a)"
    while read -r when mods; do
      case "$when" in '' | '#'*) continue ;; esac
      case "$when" in
        *:*) [ "${when%%:*}" = "$a" ] || continue; when=${when#*:} ;;
      esac
      ORDER=()
      for m in $mods; do
        [ -n "${BUILTIN[${m//-/_}]:-}" ] && log "$a: module $m is built into the kernel"
        resolve "$m"
      done
      for n in ${ORDER[@]+"${ORDER[@]}"}; do
        echo "$when ${KO[$n]%.xz}"
        PICKED[$n]=1
      done
    done <"$HERE/modules"
  } >"$R/etc/dozen/modules.load"
  cp "$kmod/modules.builtin" "$kmod/modules.order" "$R/lib/modules/$kver/"
  local modules
  modules=$(printf '%s\n' "${!PICKED[@]}" | LC_ALL=C sort | tr '\n' ' ')
  log "$a: modules: $modules"

  # --- 6. initrd -----------------------------------------------------------------------------
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,root,var/log}
  cp "$A/busybox/bin/busybox" "$R/bin/busybox"
  local elf
  elf=$(od -An -tx1 -N 20 "$R/bin/busybox" | tr -d ' \n')
  case "$a:$elf" in
    armv7:7f454c46010101*2800) ;;  # ELFCLASS32, little-endian, EM_ARM
    arm64:7f454c46020101*b700) ;;  # ELFCLASS64, little-endian, EM_AARCH64
    *) die "busybox from the $da busybox-static is not a $a ELF ($elf)" ;;
  esac
  ln -s busybox "$R/bin/sh"
  cp -R "$HERE/rootfs/." "$R/"
  # iscsistart logs in to the root disk's target when the kernel command line names one (see /init).
  elf_install_arch "$da" "$A/iscsi" "$R" sbin/iscsistart
  local bb_version oi_version k_version
  bb_version=$(dpkg-deb -f "$bbdeb" Version)
  oi_version=$(dpkg-deb -f "${iscsi_debs[0]}" Version)
  k_version=$(dpkg-deb -f "$kdeb" Version)
  cat >"$R/etc/dozen-release" <<EOF
DOZEN_IMAGE=test
ARCH=$a
KERNEL=$kver
KERNEL_PACKAGE="$kpkg $k_version"
BUSYBOX_PACKAGE="busybox-static $bb_version"
OPEN_ISCSI_PACKAGE="open-iscsi $oi_version"
EOF
  # Normalize modes (git only keeps the x bit) and times; owners are set by cpio -R.
  find "$R" -type d -exec chmod 755 {} +
  find "$R" -type f -perm /111 -exec chmod 755 {} +
  find "$R" -type f ! -perm /111 -exec chmod 644 {} +
  chmod 1777 "$R/tmp"
  chmod 700 "$R/root"
  [ -f "$R/etc/shadow" ] && chmod 600 "$R/etc/shadow"
  find "$R" -exec touch -h -d "@$EPOCH" {} +
  mkdir -p "$(dirname "$W/out/$initrd_path")"
  (cd "$R" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -9 >"$W/out/$initrd_path"
  log "$a: initrd: $(($(stat -c %s "$W/out/$initrd_path") / 1024)) KiB gzip'd cpio, $(find "$R" -mindepth 1 | wc -l) entries"

  # --- 6b. root disk (iSCSI) -------------------------------------------------------------------
  # The same busybox userland and login as the initrd, plus iscsid (it adopts the session iscsistart
  # made, so the board survives a target restart) and the root's own /sbin/init (rootdisk/).
  local ROOT_MIB=128 D=$A/rootdisk img=$W/out/$rootdisk_path
  mkdir -p "$D"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,root,var/log,etc/dozen,etc/iscsi}
  cp "$A/busybox/bin/busybox" "$D/bin/busybox"
  ln -s busybox "$D/bin/sh"
  cp -R "$HERE/rootfs/etc/." "$D/etc/"
  cp "$HERE/rootfs/sbin/dozen-login" "$HERE/rootfs/sbin/dozen-metadata" "$D/sbin/"
  cp -R "$HERE/rootdisk/." "$D/"
  cp "$R/etc/dozen-release" "$D/etc/dozen-release"
  elf_install_arch "$da" "$A/iscsi" "$D" sbin/iscsid
  find "$D" -type d -exec chmod 755 {} +
  find "$D" -type f -perm /111 -exec chmod 755 {} +
  find "$D" -type f ! -perm /111 -exec chmod 644 {} +
  chmod 1777 "$D/tmp"
  chmod 700 "$D/root"
  chmod 600 "$D/etc/shadow"
  mkdir -p "$(dirname "$img")"
  rm -f "$img"
  truncate -s "${ROOT_MIB}M" "$img"
  # Fixed UUID and directory hash seed, files owned by root whoever builds: reproducible. e2fsprogs
  # ignores a fake time of 0, so superblock times are EPOCH, or 1 s past it when EPOCH is 0.
  local FAKE_TIME=$((EPOCH > 0 ? EPOCH : 1))
  E2FSPROGS_FAKE_TIME=$FAKE_TIME mkfs.ext4 -q -F -L dozen-root -U 6f1c1b7e-d0ce-4c1d-9e12-000000000001 \
    -E hash_seed=6f1c1b7e-d0ce-4c1d-9e12-000000000002,root_owner=0:0 -d "$D" "$img" ||
    die "mkfs.ext4 -d failed for the $a root disk"
  # mkfs -d copies each file's ctime/atime (which touch cannot fix) and owner: set them like cpio -R 0:0.
  (cd "$D" && find . -printf '%P\n') | while read -r p; do
    for f in atime ctime mtime crtime; do echo "sif \"/$p\" $f @$EPOCH"; echo "sif \"/$p\" ${f}_extra 0"; done
    echo "sif \"/$p\" uid 0"
    echo "sif \"/$p\" gid 0"
  done >"$A/debugfs.cmds"
  for f in atime ctime mtime crtime; do echo "sif /lost+found $f @$EPOCH"; done >>"$A/debugfs.cmds"
  E2FSPROGS_FAKE_TIME=$FAKE_TIME debugfs -w -f "$A/debugfs.cmds" "$img" >/dev/null 2>"$A/debugfs.err" ||
    die "debugfs could not normalise $rootdisk_path: $(tail -3 "$A/debugfs.err")"
  e2fsck -fn "$img" >/dev/null 2>&1 || die "$rootdisk_path does not pass e2fsck -fn"
  log "$a: root disk: ${ROOT_MIB} MiB sparse ext4, $(($(stat -c %b "$img") * 512 / 1024)) KiB allocated, $(find "$D" -mindepth 1 | wc -l) entries"

  # Per-arch metadata for the manifest.
  node -e '
    const [out, kver, meta, metaVer, kpkg, kVer, bbVer, oiVer, modules] = process.argv.slice(1);
    require("fs").writeFileSync(out, JSON.stringify({
      kernelVersion: kver,
      packages: { [meta]: metaVer, [kpkg]: kVer, "busybox-static": bbVer, "open-iscsi": oiVer },
      modules: modules.trim().split(/\s+/).filter(Boolean),
    }));
  ' "$W/meta-$a.json" "$kver" "${KMETA[$a]}" "${META_VERSION[$a]}" "$kpkg" "$k_version" "$bb_version" "$oi_version" "$modules"
  rm -rf "$A"
}

for a in "${ARCHES[@]}"; do build_arch "$a"; done

# --- 7. checksums and manifest ---------------------------------------------------------------
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
    m.sha256[file] = hash;
  }
  fs.writeFileSync(out, JSON.stringify(m, null, 2) + "\n");
' "$HERE/manifest.json" "$W/out/SHA256SUMS" "$W/out/manifest.json" "$W" "${ARCHES[@]}"

# --- 8. install into OUT (stale marker first, so an interrupted install is rebuilt) ----------
rm -f "$OUT/.inputs"
rm -rf "$OUT/dtbs" "$OUT/arm64"
for f in dtbs arm64; do [ -d "$W/out/$f" ] && mv "$W/out/$f" "$OUT/$f"; done
for f in vmlinuz initrd.img root.img SHA256SUMS manifest.json; do mv -f "$W/out/$f" "$OUT/$f"; done
echo "$INPUTS" >"$OUT/.inputs"
log "built $OUT ($(for a in "${ARCHES[@]}"; do printf '%s: %s ' "$a" "$(node -p "require('$W/meta-$a.json').kernelVersion")"; done))"
