#!/usr/bin/env bash
# Shared helpers for scripts/lab-sunxi/*.sh (sourced, not run).
#
# Private apt state per architecture, in the same spirit as images/lib/fetch-debs.sh (whose
# cache and lists this never touches): sources, lists and .debs live under
#   ${DOZEN_CACHE:-<repo>/.cache}/lab-sunxi/apt-<arch>/
# and every apt call gets them through -o options; the system's apt configuration and dpkg status
# are never read or written. Unlike the image builds, these lists include bookworm-security (where
# Debian 12's point-release kernels live between point releases) and bookworm-backports (QEMU 10,
# 6.12 kernels), so the packages named here can be pinned exactly.
#
# Lists are fetched once and reused (same cache, same versions) until DOZEN_APT_REFRESH=1, or until
# a package is missing / gone from the mirror (then they are refreshed once).
set -euo pipefail

SUNXI_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUNXI_REPO=$(cd "$SUNXI_LIB_DIR/../.." && pwd)
SUNXI_CACHE=${DOZEN_CACHE:-$SUNXI_REPO/.cache}/lab-sunxi
SUNXI_MIRROR=${DOZEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUNXI_SECURITY_MIRROR=${DOZEN_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUNXI_KEYRING=${DOZEN_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
# QEMU 10 (bookworm-backports), unpacked beside the system QEMU, never over it.
QEMU10_DIR=${DOZEN_QEMU10_DIR:-/opt/dozen-qemu10}
QEMU10_BIN=$QEMU10_DIR/usr/bin/qemu-system-arm
QEMU10_DATA=$QEMU10_DIR/usr/share/qemu
# The lock every QEMU boot on this machine holds (tests and demos share it).
DOZEN_TEST_LOCK=${DOZEN_TEST_LOCK:-/tmp/dozen-test.lock}

# shellcheck source=../lib/apt-update.sh
. "$SUNXI_LIB_DIR/../lib/apt-update.sh"

log() { echo "[${SUNXI_NAME:-lab-sunxi}] $*" >&2; }
die() { echo "[${SUNXI_NAME:-lab-sunxi}] ERROR: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing tool '$1' — install it with: apt-get install $2"; }

# sunxi_apt ARCH: sets SUNXI_APT (apt -o options) and SUNXI_APT_DIR for ARCH (armhf|amd64), laying
# out the private tree on first use. Rewrites sources.list only when it changes (then drops the lists).
sunxi_apt() {
  local arch=$1 d=$SUNXI_CACHE/apt-$1 want
  need apt-get apt
  [ -r "$SUNXI_KEYRING" ] || die "Debian archive keyring $SUNXI_KEYRING not found — apt-get install debian-archive-keyring"
  mkdir -p "$d"/{etc/empty.d,lists/partial,cache/archives/partial,debs}
  : >>"$d/status"
  : >>"$d/etc/preferences"
  want=$(
    for s in bookworm bookworm-updates bookworm-backports; do
      echo "deb [arch=$arch signed-by=$SUNXI_KEYRING] $SUNXI_MIRROR $s main"
    done
    echo "deb [arch=$arch signed-by=$SUNXI_KEYRING] $SUNXI_SECURITY_MIRROR bookworm-security main"
  )
  if [ "$(cat "$d/etc/sources.list" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" >"$d/etc/sources.list"
    rm -f "$d/lists/"*_Packages* "$d/lists/"*Release* 2>/dev/null || true
  fi
  SUNXI_APT_DIR=$d
  SUNXI_APT=(
    -q -oAPT::Architecture="$arch" -oAPT::Architectures::="$arch"
    -oDir::Etc::SourceList="$d/etc/sources.list" -oDir::Etc::SourceParts="$d/etc/empty.d"
    -oDir::Etc::Preferences="$d/etc/preferences" -oDir::Etc::PreferencesParts="$d/etc/empty.d"
    -oDir::State::Lists="$d/lists" -oDir::State::Status="$d/status"
    -oDir::State::extended_states="$d/extended_states" -oDir::Cache="$d/cache"
    -oDebug::NoLocking=1 -oAcquire::Languages=none
    -oAcquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false -oAPT::Sandbox::User=root
  )
}

# bookworm-security is the one suite nothing in CI needs (make-sd's u-boot-sunxi and QEMU 10 resolve
# from bookworm/-backports; only boot-demo's pinned point-release kernels may live there), and it is
# the index seen half-synced on the mirror: when, after the retries, it is the only one that failed
# and the other suites' lists are in, carry on with a warning instead of failing the build.
sunxi_apt_update() {
  local logf=$SUNXI_APT_DIR/update.log
  log "fetching $SUNXI_APT_DIR package lists (bookworm, -updates, -backports, -security)"
  # Three tries (45 s), not five: the suite that has stayed broken for hours (CI, 2026-12-05) is the optional one.
  if ! DOZEN_APT_TRIES=${DOZEN_APT_TRIES:-3} apt_update_retrying "$logf" "${SUNXI_APT[@]}"; then
    if grep -q 'Failed to fetch' "$logf" && ! grep 'Failed to fetch' "$logf" | grep -vq 'debian-security' &&
      compgen -G "$SUNXI_APT_DIR/lists/*_bookworm_main_binary-*_Packages*" >/dev/null &&
      compgen -G "$SUNXI_APT_DIR/lists/*_bookworm-backports_main_binary-*_Packages*" >/dev/null; then
      log "WARNING: bookworm-security's index is inconsistent on the mirror (see below); going on without it"
      grep -m3 -E '^(E|Err):' "$logf" >&2 || true
    else
      cat "$logf" >&2
      die "apt-get update failed (mirror unreachable?)"
    fi
  fi
  SUNXI_LISTS_FRESH=1
}

# sunxi_fetch ARCH SPEC: prints the absolute path of the cached .deb for SPEC (PKG or PKG=VERSION;
# a bare PKG resolves to apt's candidate, which prefers bookworm/-updates/-security over backports).
# Downloads only when the .deb is missing or its SHA256 does not match the lists.
sunxi_fetch() {
  local arch=$1 spec=$2 uri file size hash try
  sunxi_apt "$arch"
  exec 7>"$SUNXI_APT_DIR/.lock"
  flock -w 600 7 || die "timed out waiting for $SUNXI_APT_DIR/.lock"
  SUNXI_LISTS_FRESH=0
  if [ "${DOZEN_APT_REFRESH:-0}" = 1 ] || ! compgen -G "$SUNXI_APT_DIR/lists/*_Packages*" >/dev/null; then
    sunxi_apt_update
  fi
  for try in 1 2; do
    if read -r uri file size hash < <(apt-get "${SUNXI_APT[@]}" download --print-uris "$spec" 2>/dev/null | head -1); then
      hash=${hash#SHA256:}
      if [ -f "$SUNXI_APT_DIR/debs/$file" ] && [ "$(sha256sum <"$SUNXI_APT_DIR/debs/$file" | cut -c1-64)" = "$hash" ]; then
        exec 7>&-
        echo "$SUNXI_APT_DIR/debs/$file"
        return 0
      fi
      log "downloading $file ($((size / 1024)) KiB)"
      if (cd "$SUNXI_APT_DIR/debs" && apt-get "${SUNXI_APT[@]}" download "$spec" >/dev/null 2>"$SUNXI_APT_DIR/download.err") &&
        [ -f "$SUNXI_APT_DIR/debs/$file" ]; then
        exec 7>&-
        echo "$SUNXI_APT_DIR/debs/$file"
        return 0
      fi
      cat "$SUNXI_APT_DIR/download.err" >&2
    fi
    [ "$try" = 1 ] && [ "$SUNXI_LISTS_FRESH" = 0 ] || break
    log "'$spec' not in the cached $arch lists or gone from the mirror: refreshing them once"
    sunxi_apt_update
  done
  exec 7>&-
  die "cannot fetch $arch package '$spec' (see above; list versions with: apt-cache ${SUNXI_APT[*]} policy ${spec%%=*})"
}

# sunxi_unpack DEB: unpacks DEB once into $SUNXI_CACHE/unpacked/<deb name> and prints that directory.
sunxi_unpack() {
  local deb=$1 dir
  dir=$SUNXI_CACHE/unpacked/$(basename "$deb" .deb)
  if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir" || die "cannot unpack $deb"
    : >"$dir/.done"
  fi
  echo "$dir"
}

# sunxi_mtools: puts mtools (mformat, mcopy, mdir) on PATH: the system's, or bookworm's amd64 .deb
# unpacked into the cache (it needs only libc6) — nothing is installed system-wide.
sunxi_mtools() {
  command -v mcopy >/dev/null 2>&1 && command -v mformat >/dev/null 2>&1 && return 0
  [ "$(dpkg --print-architecture)" = amd64 ] || die "mtools is missing: apt-get install mtools"
  local dir
  dir=$(sunxi_unpack "$(sunxi_fetch amd64 mtools)")
  PATH=$dir/usr/bin:$PATH
  command -v mcopy >/dev/null 2>&1 || die "mtools from $dir does not run"
}

# sunxi_check_mac MAC: lower-cased, validated unicast MAC on stdout.
sunxi_check_mac() {
  local mac
  mac=$(echo "$1" | tr 'A-F' 'a-f')
  [[ "$mac" =~ ^[0-9a-f]{2}(:[0-9a-f]{2}){5}$ ]] || die "not a MAC address: '$1' (want xx:xx:xx:xx:xx:xx)"
  (((0x${mac:0:2} & 1) == 0)) || die "$mac is a multicast address; a board needs a unicast MAC"
  echo "$mac"
}
