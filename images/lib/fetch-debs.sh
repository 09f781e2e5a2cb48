#!/usr/bin/env bash
# Fetches Debian .debs of any architecture (armhf, arm64, ...) on any Debian host WITHOUT touching the
# system's apt configuration. A private apt state (sources, lists, cache) per architecture lives under
#   ${DOZEN_CACHE:-<repo>/.cache}/apt-<arch>/
# and every apt call gets it through -o options. The system's sources.list, lists and dpkg status are
# never read or written.
#
# Use it as a command:
#   images/lib/fetch-debs.sh --arch ARCH [--refresh] PKG...   prints one absolute .deb path per PKG
#   images/lib/fetch-debs.sh --arch ARCH --depends PKG        prints PKG's Depends (package names)
# or source it and call the debs_* functions: `debs_init ARCH` selects the architecture (and sets
# DEBS_ARCH, DEBS_CACHE, DEBS_APT, DEBS_LISTS_FRESH); the others act on the one selected last.
#
# Caching and reproducibility: package lists are fetched once per architecture and then reused until
# --refresh (or DOZEN_APT_REFRESH=1), so the same cache always resolves the same versions. A .deb already
# in the cache with the archive's SHA256 is never downloaded again; a fully warm cache works offline.
# If the archive has moved on and a cached list names a .deb that is gone (404), the lists are
# refreshed once and the download retried.
#
# Environment:
#   DOZEN_CACHE            cache root (default: <repo>/.cache)
#   DOZEN_DEBIAN_MIRROR    default http://deb.debian.org/debian
#   DOZEN_DEBIAN_SUITES    default "bookworm bookworm-updates" (Debian 12; main component only).
#                          bookworm-security is left out on purpose: its armhf index has been seen
#                          half-synced on the mirror ("File has unexpected size"), which would make
#                          resolution flaky.
#   DOZEN_DEBIAN_KEYRING   default /usr/share/keyrings/debian-archive-keyring.gpg
set -euo pipefail

DEBS_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEBS_REPO=$(cd "$DEBS_LIB_DIR/../.." && pwd)
DEBS_MIRROR=${DOZEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBS_SUITES=${DOZEN_DEBIAN_SUITES:-bookworm bookworm-updates}
DEBS_KEYRING=${DOZEN_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
DEBS_ARCH=
DEBS_CACHE=
DEBS_DIR=
DEBS_LISTS_FRESH=0 # 1 once this process has run `apt-get update` for DEBS_ARCH
declare -A DEBS_FRESH_BY_ARCH=()

# shellcheck source=../../scripts/lib/apt-update.sh
. "$DEBS_REPO/scripts/lib/apt-update.sh"

debs_log() { echo "[debs-${DEBS_ARCH:-?}] $*" >&2; }
debs_die() { echo "[debs-${DEBS_ARCH:-?}] ERROR: $*" >&2; exit 1; }

debs_require_tool() {
  command -v "$1" >/dev/null 2>&1 || debs_die "missing tool '$1' — install it with: apt-get install $2"
}

# debs_init ARCH: selects ARCH and lays out its private apt tree. Rewrites sources.list only when its
# content changes, and then drops the lists (they belong to other sources).
debs_init() {
  local arch=${1:?debs_init needs an architecture} want suite
  [[ "$arch" =~ ^[a-z0-9]+$ ]] || debs_die "not a Debian architecture: $arch"
  [ -n "$DEBS_ARCH" ] && DEBS_FRESH_BY_ARCH[$DEBS_ARCH]=$DEBS_LISTS_FRESH
  DEBS_ARCH=$arch
  DEBS_CACHE=${DOZEN_CACHE:-$DEBS_REPO/.cache}/apt-$arch
  DEBS_DIR=$DEBS_CACHE/debs
  DEBS_LISTS_FRESH=${DEBS_FRESH_BY_ARCH[$arch]:-0}
  debs_require_tool apt-get apt
  debs_require_tool dpkg-deb dpkg
  debs_require_tool flock util-linux
  debs_require_tool sha256sum coreutils
  [ -r "$DEBS_KEYRING" ] || debs_die "Debian archive keyring $DEBS_KEYRING not found — install it with: apt-get install debian-archive-keyring"
  mkdir -p "$DEBS_CACHE"/{etc/empty.d,lists/partial,cache/archives/partial} "$DEBS_DIR"
  : >>"$DEBS_CACHE/status"
  : >>"$DEBS_CACHE/etc/preferences"
  want=$(for suite in $DEBS_SUITES; do
    echo "deb [arch=$arch signed-by=$DEBS_KEYRING] $DEBS_MIRROR $suite main"
  done)
  if [ "$(cat "$DEBS_CACHE/etc/sources.list" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" >"$DEBS_CACHE/etc/sources.list"
    rm -f "$DEBS_CACHE/lists/"*_Packages* "$DEBS_CACHE/lists/"*Release* 2>/dev/null || true
  fi
  DEBS_APT=(
    -q
    -oAPT::Architecture="$arch"
    -oAPT::Architectures::="$arch"
    -oDir::Etc::SourceList="$DEBS_CACHE/etc/sources.list"
    -oDir::Etc::SourceParts="$DEBS_CACHE/etc/empty.d"
    -oDir::Etc::Preferences="$DEBS_CACHE/etc/preferences"
    -oDir::Etc::PreferencesParts="$DEBS_CACHE/etc/empty.d"
    -oDir::State::Lists="$DEBS_CACHE/lists"
    -oDir::State::Status="$DEBS_CACHE/status"
    -oDir::State::extended_states="$DEBS_CACHE/extended_states"
    -oDir::Cache="$DEBS_CACHE/cache"
    -oDebug::NoLocking=1
    -oAcquire::Languages=none
    -oAcquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
    -oAPT::Sandbox::User=root
  )
}

# The cache lock of the selected architecture on fd 8 (apt's own locking is off). One architecture at a time: unlock before selecting another.
debs_lock() {
  exec 8>"$DEBS_CACHE/.lock"
  flock -w 600 8 || debs_die "timed out waiting for the lock on $DEBS_CACHE"
}
debs_unlock() { exec 8>&-; }

debs_have_lists() {
  compgen -G "$DEBS_CACHE/lists/*_binary-${DEBS_ARCH}_Packages*" >/dev/null
}

debs_update() {
  debs_log "fetching $DEBS_ARCH package lists ($DEBS_SUITES) from $DEBS_MIRROR"
  local log
  log=$(mktemp)
  if ! apt_update_retrying "$log" "${DEBS_APT[@]}" --error-on=any; then
    cat "$log" >&2
    rm -f "$log"
    debs_die "apt-get update for $DEBS_ARCH failed (mirror $DEBS_MIRROR unreachable or inconsistent?)"
  fi
  rm -f "$log"
  DEBS_LISTS_FRESH=1
}

# debs_ensure_lists [FORCE]: fetches the lists when missing, when asked to, or (FORCE=1) anyway.
debs_ensure_lists() {
  if [ "${1:-0}" = 1 ] || [ "${DOZEN_APT_REFRESH:-0}" = 1 ] || ! debs_have_lists; then
    [ "$DEBS_LISTS_FRESH" = 1 ] || debs_update
  fi
}

# debs_version PKG: the candidate version the cached lists resolve PKG to.
debs_version() {
  local v
  v=$(apt-cache "${DEBS_APT[@]}" policy "$1" 2>/dev/null | sed -n 's/^  Candidate: //p')
  [ -n "$v" ] && [ "$v" != "(none)" ] || debs_die "package '$1' not found in the $DEBS_ARCH lists for $DEBS_SUITES"
  echo "$v"
}

# debs_depends PKG: package names of PKG's Depends (alternatives and version constraints dropped).
debs_depends() {
  apt-cache "${DEBS_APT[@]}" show "$1=$(debs_version "$1")" 2>/dev/null |
    sed -n 's/^Depends: //p' | head -1 | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/^ +//; s/ +$//' | sed '/^$/d'
}

# debs_candidate PKG: the control stanza (Package, Version, Depends, ...) of the version the cached lists
# resolve PKG to, in one apt call (debs_version + debs_depends cost two or three).
debs_candidate() {
  local out
  out=$(apt-cache "${DEBS_APT[@]}" show --no-all-versions "$1" 2>/dev/null) || true
  [ -n "$out" ] || { debs_log "package '$1' not found in the $DEBS_ARCH lists for $DEBS_SUITES"; return 1; }
  printf '%s\n' "$out"
}

# debs_stanza_depends: package names of the Depends in the stanza on stdin (as debs_depends).
debs_stanza_depends() {
  sed -n 's/^Depends: //p' | head -1 | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/^ +//; s/ +$//' | sed '/^$/d'
}

# debs_fetch_one PKG: prints the cached .deb's path, downloading it if it is missing or corrupt.
# Returns 1 (with a message) when PKG is not in the lists or cannot be downloaded.
debs_fetch_one() {
  local pkg=$1 uri file size hash
  if ! read -r uri file size hash < <(apt-get "${DEBS_APT[@]}" download --print-uris "$pkg" 2>/dev/null | head -1); then
    debs_log "package '$pkg' is not in the $DEBS_ARCH lists for $DEBS_SUITES"
    return 1
  fi
  hash=${hash#SHA256:}
  if [ -f "$DEBS_DIR/$file" ] && [ "$(sha256sum "$DEBS_DIR/$file" | cut -d' ' -f1)" = "$hash" ]; then
    echo "$DEBS_DIR/$file"
    return 0
  fi
  debs_log "downloading $file ($((size / 1024)) KiB)"
  rm -f "$DEBS_DIR/$file"
  if ! (cd "$DEBS_DIR" && apt-get "${DEBS_APT[@]}" download "$pkg" >/dev/null 2>"$DEBS_CACHE/download.err") ||
    [ ! -f "$DEBS_DIR/$file" ]; then
    cat "$DEBS_CACHE/download.err" >&2
    debs_log "could not download $pkg ($uri)"
    return 1
  fi
  echo "$DEBS_DIR/$file"
}

# debs_fetch_many PKG...: debs_fetch_one for each PKG with a single `apt-get --print-uris` (an apt
# call costs about a second: a warm build must stay fast). Paths in argument order; returns 1 (with a
# message) when a package is not in the lists or cannot be had.
debs_fetch_many() {
  local uris pkg line uri file size hash
  uris=$(apt-get "${DEBS_APT[@]}" download --print-uris "$@" 2>/dev/null) || true
  local -a out=()
  for pkg in "$@"; do
    line=$(printf '%s\n' "$uris" | awk -v p="$pkg" '{ f = $2; sub(/_.*/, "", f); if (f == p) { print; exit } }')
    if [ -z "$line" ]; then
      debs_log "package '$pkg' is not in the $DEBS_ARCH lists for $DEBS_SUITES"
      return 1
    fi
    read -r uri file size hash <<<"$line"
    hash=${hash#SHA256:}
    if [ -f "$DEBS_DIR/$file" ] && [ "$(sha256sum "$DEBS_DIR/$file" | cut -d' ' -f1)" = "$hash" ]; then
      out+=("$DEBS_DIR/$file")
    else
      out+=("$(debs_fetch_one "$pkg")") || return 1
      [ -n "${out[-1]}" ] || return 1
    fi
  done
  printf '%s\n' "${out[@]}"
}

# debs_fetch PKG...: paths of the cached .debs, one per line, in argument order; when a package
# cannot be had with the cached lists, they are refreshed once and the package tried again.
debs_fetch() {
  local pkg
  for pkg in "$@"; do
    debs_fetch_one "$pkg" && continue
    [ "$DEBS_LISTS_FRESH" = 0 ] || debs_die "could not fetch $pkg"
    debs_log "retrying with fresh package lists (the archive may have moved on)"
    debs_update
    debs_fetch_one "$pkg" || debs_die "could not fetch $pkg"
  done
}

debs_main() {
  local refresh=0 depends="" arch=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --arch) arch=${2:?--arch needs an architecture}; shift ;;
      --refresh) refresh=1 ;;
      --depends) depends=${2:?--depends needs a package}; shift ;;
      -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; return 0 ;;
      -*) debs_die "unknown option $1" ;;
      *) break ;;
    esac
    shift
  done
  [ -n "$arch" ] || debs_die "usage: $0 --arch ARCH [--refresh] PKG... | --arch ARCH --depends PKG"
  debs_init "$arch"
  [ -n "$depends" ] || [ $# -gt 0 ] || debs_die "usage: $0 --arch ARCH [--refresh] PKG... | --arch ARCH --depends PKG"
  debs_lock
  debs_ensure_lists "$refresh"
  if [ -n "$depends" ]; then debs_depends "$depends"; else debs_fetch "$@"; fi
  debs_unlock
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  debs_main "$@"
fi
