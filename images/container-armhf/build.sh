#!/usr/bin/env bash
# Builds the DozenCloud ARMv7 container base image (linux/arm/v7) from Debian 12 armhf packages,
# without debootstrap and without a registry:
#   build/rootfs.tar   the root filesystem, for `docker import` (the server imports it through the
#                      Docker API into every shared board that lacks it: src/containers/images.ts)
#   build/image.json   ref (dozen/armhf-base:<first 12 hex of the tar's sha256>), platform, the
#                      Dockerfile-style changes to apply at import, sha256, package versions
#
# Contents: busybox-static (every applet as a symlink), dropbear-bin with its shared libraries
# (key-only SSH on port 22), rootfs/ (/sbin/dozen-init is PID 1: console shell on the TTY, SSH,
# readiness marker; passwd, profile). The lease driver writes /root/.ssh/authorized_keys into each
# container. `docker import` ignores --platform on Docker 20.10, so the platform is also a label
# (dozen.platform), which the lease driver checks against the board's.
#
# Usage: images/container-armhf/build.sh [--force] [--refresh] [--out DIR] [--import DOCKER_HOST]
#   --force    rebuild even when the outputs are up to date
#   --refresh  re-fetch the armhf package lists
#   --out DIR  write to DIR instead of images/container-armhf/build
#   --import H also `docker -H H import` the result (e.g. unix:///run/dozen-test-docker.sock)
#
# Cached like images/test: the .debs live in ${DOZEN_CACHE:-<repo>/.cache}/apt-armhf, and the build is
# skipped when build/.inputs (hash of the exact .debs, this script, rootfs/ and images/lib/) is
# unchanged and build/rootfs.tar still has the recorded sha256. Reproducible: sorted tar, owner 0:0,
# every mtime SOURCE_DATE_EPOCH (default 0), so the same .debs give the same ref.
# Needs qemu-user-static (lists busybox's applets by running the armhf binary).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$HERE/build
FORCE=0
REFRESH=0
IMPORT=""
EPOCH=${SOURCE_DATE_EPOCH:-0}
ROOTS=(busybox-static dropbear-bin)
PLATFORM=linux/arm/v7
NAME=dozen/armhf-base

while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --refresh) REFRESH=1 ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    --import) IMPORT=${2:?--import needs a Docker host}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

BUILD_NAME=container-armhf
# shellcheck source=../lib/build-log.sh
. "$REPO/images/lib/build-log.sh"

# shellcheck source=../lib/fetch-debs.sh
. "$REPO/images/lib/fetch-debs.sh"
need dpkg-deb dpkg
need tar tar
need sha256sum coreutils
need flock util-linux
need qemu-arm-static qemu-user-static
need node nodejs

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock -w 900 9 || die "another build holds $OUT/.lock for too long"

# --- 1. resolve the dependency closure and fetch it -----------------------------------------
debs_init armhf
debs_lock
debs_ensure_lists "$REFRESH"
resolve_all() {
  declare -gA SEEN=()
  PKGS=()
  local queue=("${ROOTS[@]}") p d
  while [ ${#queue[@]} -gt 0 ]; do
    p=${queue[0]}; queue=("${queue[@]:1}")
    [ -n "${SEEN[$p]:-}" ] && continue
    SEEN[$p]=1
    PKGS+=("$p")
    for d in $(debs_depends "$p"); do [ -n "${SEEN[$d]:-}" ] || queue+=("$d"); done
  done
  DEBS=()
  for p in "${PKGS[@]}"; do DEBS+=("$(debs_fetch_one "$p")") || return 1; done
}
# Resolving costs ~30 apt calls (~9 s); the result only changes with the package lists, so it is
# kept in OUT/.resolved keyed by the lists' names, sizes and mtimes.
lists_stamp() { echo "${ROOTS[*]}"; ls -l --time-style=+%s "$DEBS_CACHE"/lists/*_Packages* 2>/dev/null | awk '{print $5, $6, $7}'; }
STAMP=$(lists_stamp | sha256sum | cut -c1-64)
load_resolved() {
  [ -f "$OUT/.resolved" ] && [ "$(head -1 "$OUT/.resolved")" = "$STAMP" ] || return 1
  mapfile -t PKGS < <(sed -n '2p' "$OUT/.resolved" | tr ' ' '\n')
  mapfile -t DEBS < <(tail -n +3 "$OUT/.resolved")
  local d
  for d in "${DEBS[@]}"; do [ -f "$d" ] || return 1; done
}
if ! load_resolved; then
  if ! resolve_all; then
    [ "$DEBS_LISTS_FRESH" = 0 ] || die "could not resolve or download the armhf packages (see above)"
    log "retrying with fresh package lists (the archive may have moved on)"
    debs_update
    resolve_all || die "could not resolve or download the armhf packages (see above)"
  fi
  STAMP=$(lists_stamp | sha256sum | cut -c1-64)
  { echo "$STAMP"; echo "${PKGS[*]}"; printf '%s\n' "${DEBS[@]}"; } >"$OUT/.resolved"
fi
debs_unlock
log "packages: ${PKGS[*]}"

# --- 2. up to date? --------------------------------------------------------------------------
inputs_hash() {
  {
    echo "epoch=$EPOCH platform=$PLATFORM"
    for d in "${DEBS[@]}"; do basename "$d"; done | LC_ALL=C sort
    cd "$HERE"
    find build.sh rootfs "$REPO/images/lib" \( -type f -o -type l \) -print | LC_ALL=C sort |
      while read -r f; do
        if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f $(stat -c %a "$f") $(sha256sum <"$f" | cut -c1-64)"; fi
      done
  } | sha256sum | cut -c1-64
}
INPUTS=$(inputs_hash)
recorded_sha() { node -e 'try { console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).sha256) } catch {}' "$OUT/image.json"; }
if [ "$FORCE" = 0 ] && [ "$(cat "$OUT/.inputs" 2>/dev/null)" = "$INPUTS" ] && [ -f "$OUT/rootfs.tar" ] &&
  [ "$(recorded_sha)" = "$(sha256sum "$OUT/rootfs.tar" | cut -c1-64)" ]; then
  log "up to date: $OUT (use --force to rebuild)"
else
  # --- 3. unpack the .debs into a root filesystem ----------------------------------------------
  W=$OUT/.work
  rm -rf "$W"
  R=$W/root
  mkdir -p "$R"
  trap 'rm -rf "$W"' EXIT
  for d in "${DEBS[@]}"; do dpkg-deb -x "$d" "$R"; done
  # Documentation, locales and charset converters are dead weight in a 64 MiB container.
  rm -rf "$R"/usr/share/{doc,man,info,lintian,locale,bug} "$R"/usr/lib/arm-linux-gnueabihf/gconv
  elf=$(od -An -tx1 -N 20 "$R/bin/busybox" | tr -d ' \n')
  case "$elf" in 7f454c46010101*2800) ;; *) die "busybox from busybox-static is not a 32-bit ARM ELF ($elf)" ;; esac
  [ -x "$R/usr/sbin/dropbear" ] || die "dropbear-bin has no /usr/sbin/dropbear"

  # --- 4. busybox applets (run the armhf binary through qemu-user) ------------------------------
  n=0
  while read -r applet; do
    [ -n "$applet" ] && [ ! -e "$R/$applet" ] && [ ! -L "$R/$applet" ] || continue
    mkdir -p "$(dirname "$R/$applet")"
    ln -s /bin/busybox "$R/$applet"
    n=$((n + 1))
  done < <(qemu-arm-static "$R/bin/busybox" --list-full)
  [ "$n" -gt 100 ] || die "busybox listed only $n applets"
  log "busybox: $n applet links"

  # --- 5. our files, directories and modes -------------------------------------------------------
  cp -R "$HERE/rootfs/." "$R/"
  mkdir -p "$R"/{proc,sys,dev,run,tmp,root,var/log,etc/dropbear}
  ln -sfn /run "$R/var/run"
  declare -A VERSIONS=()
  for d in "${DEBS[@]}"; do VERSIONS[$(dpkg-deb -f "$d" Package)]=$(dpkg-deb -f "$d" Version); done
  {
    echo "DOZEN_IMAGE=armhf-base"
    echo "PLATFORM=$PLATFORM"
    for p in $(printf '%s\n' "${!VERSIONS[@]}" | LC_ALL=C sort); do echo "PACKAGE=\"$p ${VERSIONS[$p]}\""; done
  } >"$R/etc/dozen-release"
  find "$R" -type d -exec chmod 755 {} +
  chmod 1777 "$R/tmp"
  chmod 700 "$R/root" "$R/etc/dropbear"
  chmod 600 "$R/etc/shadow"

  # --- 6. reproducible tar -----------------------------------------------------------------------
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" --format=gnu \
    -C "$R" -cf "$W/rootfs.tar" .
  SHA=$(sha256sum "$W/rootfs.tar" | cut -c1-64)
  node -e '
    const fs = require("fs");
    const [out, name, platform, sha, ...pkgs] = process.argv.slice(1);
    const packages = {};
    for (let i = 0; i < pkgs.length; i += 2) packages[pkgs[i]] = pkgs[i + 1];
    fs.writeFileSync(out, JSON.stringify({
      ref: `${name}:${sha.slice(0, 12)}`,
      platform,
      tar: "rootfs.tar",
      sha256: sha,
      changes: [
        "CMD [\"/sbin/dozen-init\"]",
        `LABEL dozen.platform=${platform}`,
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "EXPOSE 22/tcp",
      ],
      packages,
    }, null, 2) + "\n");
  ' "$W/image.json" "$NAME" "$PLATFORM" "$SHA" $(for p in $(printf '%s\n' "${!VERSIONS[@]}" | LC_ALL=C sort); do echo "$p" "${VERSIONS[$p]}"; done)

  # --- 7. install (stale marker first, so an interrupted install is rebuilt) ----------------------
  rm -f "$OUT/.inputs"
  mv -f "$W/rootfs.tar" "$OUT/rootfs.tar"
  mv -f "$W/image.json" "$OUT/image.json"
  echo "$INPUTS" >"$OUT/.inputs"
  log "built $OUT/rootfs.tar ($(($(stat -c %s "$OUT/rootfs.tar") / 1024)) KiB), ref $NAME:${SHA:0:12}"
fi

if [ -n "$IMPORT" ]; then
  need docker docker.io
  REF=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).ref)' "$OUT/image.json")
  CHANGES=()
  while read -r c; do CHANGES+=(-c "$c"); done < <(node -e 'for (const c of JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).changes) console.log(c)' "$OUT/image.json")
  docker -H "$IMPORT" import --platform "$PLATFORM" "${CHANGES[@]}" "$OUT/rootfs.tar" "$REF" >/dev/null
  log "imported $REF into $IMPORT"
fi
