#!/usr/bin/env bash
# Fetches Debian armhf .debs on any Debian host (amd64 included) WITHOUT touching the system's apt
# configuration: a private apt state (sources, lists, cache) lives under
#   ${DOZEN_CACHE:-<repo>/.cache}/apt-armhf/
# and every apt call gets it through -o options. The system's sources.list, lists and dpkg
# status are never read or written (Dir::Etc::* and Dir::State::* all point into the cache).
#
# Use it as a command:
#   images/lib/fetch-armhf-debs.sh [--refresh] PKG...     prints one absolute .deb path per PKG
#   images/lib/fetch-armhf-debs.sh --depends PKG          prints PKG's Depends (package names)
# or source it and call the armhf_* functions (images/test/build.sh does).
#
# Caching and reproducibility: package lists are fetched once and then reused until --refresh
# (or DOZEN_APT_REFRESH=1), so the same cache always resolves the same versions. A .deb already in
# the cache with the archive's SHA256 is never downloaded again; a fully warm cache works offline.
# If the archive has moved on and a cached list names a .deb that is gone (404), the lists are
# refreshed once and the download retried.
#
# Environment:
#   DOZEN_CACHE            cache root (default: <repo>/.cache)
#   DOZEN_DEBIAN_MIRROR    default http://deb.debian.org/debian
#   DOZEN_DEBIAN_SUITES    default "bookworm bookworm-updates" (Debian 12; main component only).
#                          bookworm-security is left out on purpose: its armhf index has been seen
#                          half-synced on the mirror ("File has unexpected size"), which would make
#                          resolution flaky. Add it here when you want security-suite kernels.
#   DOZEN_DEBIAN_KEYRING   default /usr/share/keyrings/debian-archive-keyring.gpg
set -euo pipefail

ARMHF_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARMHF_REPO=$(cd "$ARMHF_LIB_DIR/../.." && pwd)
ARMHF_CACHE=${DOZEN_CACHE:-$ARMHF_REPO/.cache}/apt-armhf
ARMHF_MIRROR=${DOZEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ARMHF_SUITES=${DOZEN_DEBIAN_SUITES:-bookworm bookworm-updates}
ARMHF_KEYRING=${DOZEN_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
ARMHF_DEBS=$ARMHF_CACHE/debs
ARMHF_LISTS_FRESH=0   # set once this process has run `apt-get update`

armhf_log() { echo "[armhf-debs] $*" >&2; }
armhf_die() { echo "[armhf-debs] ERROR: $*" >&2; exit 1; }

# armhf_require_tool TOOL DEBIAN-PACKAGE
armhf_require_tool() {
  command -v "$1" >/dev/null 2>&1 || armhf_die "missing tool '$1' — install it with: apt-get install $2"
}

armhf_apt_opts() {
  ARMHF_APT=(
    -q
    -oAPT::Architecture=armhf
    -oAPT::Architectures::=armhf
    -oDir::Etc::SourceList="$ARMHF_CACHE/etc/sources.list"
    -oDir::Etc::SourceParts="$ARMHF_CACHE/etc/empty.d"
    -oDir::Etc::Preferences="$ARMHF_CACHE/etc/preferences"
    -oDir::Etc::PreferencesParts="$ARMHF_CACHE/etc/empty.d"
    -oDir::State::Lists="$ARMHF_CACHE/lists"
    -oDir::State::Status="$ARMHF_CACHE/status"
    -oDir::State::extended_states="$ARMHF_CACHE/extended_states"
    -oDir::Cache="$ARMHF_CACHE/cache"
    -oDebug::NoLocking=1
    -oAcquire::Languages=none
    -oAcquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
    -oAPT::Sandbox::User=root
  )
}

# Lays out the private apt tree. Rewrites sources.list only when its content changes, and then
# forces a list refresh (the old lists belong to other sources).
armhf_init() {
  armhf_require_tool apt-get apt
  armhf_require_tool dpkg-deb dpkg
  armhf_require_tool flock util-linux
  armhf_require_tool sha256sum coreutils
  [ -r "$ARMHF_KEYRING" ] || armhf_die "Debian archive keyring $ARMHF_KEYRING not found — install it with: apt-get install debian-archive-keyring"
  mkdir -p "$ARMHF_CACHE"/{etc/empty.d,lists/partial,cache/archives/partial} "$ARMHF_DEBS"
  : >>"$ARMHF_CACHE/status"
  : >>"$ARMHF_CACHE/etc/preferences"
  local want suite
  want=$(for suite in $ARMHF_SUITES; do
    echo "deb [arch=armhf signed-by=$ARMHF_KEYRING] $ARMHF_MIRROR $suite main"
  done)
  if [ "$(cat "$ARMHF_CACHE/etc/sources.list" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" >"$ARMHF_CACHE/etc/sources.list"
    rm -f "$ARMHF_CACHE/lists/"*_Packages* "$ARMHF_CACHE/lists/"*Release* 2>/dev/null || true
  fi
  armhf_apt_opts
}

# Takes/releases the cache lock on fd 8 (parallel builds share one cache; apt's own locking is off).
armhf_lock() {
  exec 8>"$ARMHF_CACHE/.lock"
  flock -w 600 8 || armhf_die "timed out waiting for the lock on $ARMHF_CACHE"
}
armhf_unlock() { exec 8>&-; }

armhf_have_lists() {
  compgen -G "$ARMHF_CACHE/lists/*_binary-armhf_Packages*" >/dev/null
}

armhf_update() {
  armhf_log "fetching armhf package lists ($ARMHF_SUITES) from $ARMHF_MIRROR"
  local log
  log=$(mktemp)
  if ! apt-get "${ARMHF_APT[@]}" --error-on=any update >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    armhf_die "apt-get update for armhf failed (mirror $ARMHF_MIRROR unreachable or inconsistent?)"
  fi
  rm -f "$log"
  ARMHF_LISTS_FRESH=1
}

# Refreshes the lists when missing, when asked to, or (force=1) unconditionally.
armhf_ensure_lists() {
  if [ "${1:-0}" = 1 ] || [ "${DOZEN_APT_REFRESH:-0}" = 1 ] || ! armhf_have_lists; then
    [ "$ARMHF_LISTS_FRESH" = 1 ] || armhf_update
  fi
}

# armhf_version PKG: the candidate version that the cached lists resolve PKG to.
armhf_version() {
  local v
  v=$(apt-cache "${ARMHF_APT[@]}" policy "$1" 2>/dev/null | sed -n 's/^  Candidate: //p')
  [ -n "$v" ] && [ "$v" != "(none)" ] || armhf_die "package '$1' not found in the armhf lists for $ARMHF_SUITES"
  echo "$v"
}

# armhf_depends PKG: package names of PKG's Depends (alternatives and version constraints dropped).
armhf_depends() {
  apt-cache "${ARMHF_APT[@]}" show "$1=$(armhf_version "$1")" 2>/dev/null |
    sed -n 's/^Depends: //p' | head -1 | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/^ +//; s/ +$//' | sed '/^$/d'
}

# armhf_fetch_one PKG: prints the cached .deb's path, downloading it if it is missing or corrupt.
# Returns 1 (with a message) when PKG is not in the lists or cannot be downloaded.
armhf_fetch_one() {
  local pkg=$1 uri file size hash
  # `--print-uris` only reads the lists: 'URI' file size SHA256:hash
  if ! read -r uri file size hash < <(apt-get "${ARMHF_APT[@]}" download --print-uris "$pkg" 2>/dev/null | head -1); then
    armhf_log "package '$pkg' is not in the armhf lists for $ARMHF_SUITES"
    return 1
  fi
  hash=${hash#SHA256:}
  if [ -f "$ARMHF_DEBS/$file" ] && [ "$(sha256sum "$ARMHF_DEBS/$file" | cut -d' ' -f1)" = "$hash" ]; then
    echo "$ARMHF_DEBS/$file"
    return 0
  fi
  armhf_log "downloading $file ($((size / 1024)) KiB)"
  rm -f "$ARMHF_DEBS/$file"
  if ! (cd "$ARMHF_DEBS" && apt-get "${ARMHF_APT[@]}" download "$pkg" >/dev/null 2>"$ARMHF_CACHE/download.err") ||
    [ ! -f "$ARMHF_DEBS/$file" ]; then
    cat "$ARMHF_CACHE/download.err" >&2
    armhf_log "could not download $pkg ($uri)"
    return 1
  fi
  echo "$ARMHF_DEBS/$file"
}

# armhf_fetch_many PKG...: like armhf_fetch_one for each PKG, but with one `apt-get --print-uris`
# for all of them (an apt call costs about a second: a warm build must stay fast). Prints the paths
# in argument order; returns 1 (with a message) when a package is not in the lists or cannot be had.
armhf_fetch_many() {
  local uris pkg line uri file size hash missing=()
  uris=$(apt-get "${ARMHF_APT[@]}" download --print-uris "$@" 2>/dev/null) || true
  local -a out=()
  for pkg in "$@"; do
    line=$(printf '%s\n' "$uris" | awk -v p="$pkg" '{ f = $2; sub(/_.*/, "", f); if (f == p) { print; exit } }')
    if [ -z "$line" ]; then
      armhf_log "package '$pkg' is not in the armhf lists for $ARMHF_SUITES"
      return 1
    fi
    read -r uri file size hash <<<"$line"
    hash=${hash#SHA256:}
    if [ -f "$ARMHF_DEBS/$file" ] && [ "$(sha256sum "$ARMHF_DEBS/$file" | cut -d' ' -f1)" = "$hash" ]; then
      out+=("$ARMHF_DEBS/$file")
    else
      out+=("$(armhf_fetch_one "$pkg")") || return 1
      [ -n "${out[-1]}" ] || return 1
    fi
  done
  printf '%s\n' "${out[@]}"
}

# armhf_fetch PKG...: paths of the cached .debs, one per line, in argument order. When a package
# cannot be had with the cached lists (the archive moved on: old .deb gone), the lists are
# refreshed once and the package tried again.
armhf_fetch() {
  local pkg
  for pkg in "$@"; do
    armhf_fetch_one "$pkg" && continue
    [ "$ARMHF_LISTS_FRESH" = 0 ] || armhf_die "could not fetch $pkg"
    armhf_log "retrying with fresh package lists (the archive may have moved on)"
    armhf_update
    armhf_fetch_one "$pkg" || armhf_die "could not fetch $pkg"
  done
}

armhf_main() {
  local refresh=0 depends=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --refresh) refresh=1 ;;
      --depends) depends=${2:?--depends needs a package}; shift ;;
      -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; return 0 ;;
      -*) armhf_die "unknown option $1" ;;
      *) break ;;
    esac
    shift
  done
  armhf_init
  [ -n "$depends" ] || [ $# -gt 0 ] || armhf_die "usage: $0 [--refresh] PKG... | --depends PKG"
  armhf_lock
  armhf_ensure_lists "$refresh"
  if [ -n "$depends" ]; then armhf_depends "$depends"; else armhf_fetch "$@"; fi
  armhf_unlock
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  armhf_main "$@"
fi
