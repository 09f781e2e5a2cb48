#!/usr/bin/env bash
# Unpacks QEMU 10 from Debian's bookworm-backports into /opt/dozen-qemu10 (DOZEN_QEMU10_DIR), beside
# the system's QEMU 7.2, which stays installed and untouched (dpkg never hears of this copy).
#
# Usage: scripts/lab-sunxi/get-qemu10.sh [--print]
#   --print   only print the binary's path (after making sure it is there)
#
# Idempotent: the three .debs (qemu-system-arm, -common, -data at the backports version) are cached
# under .cache/lab-sunxi/apt-amd64/debs and unpacked again only when that version changes
# (<dir>/.version). Checks with ldd that the binary runs against bookworm's libraries and names any
# missing library package (install it with apt-get: bookworm's own libraries are additive).
# Environment: DOZEN_QEMU10_DIR, DOZEN_QEMU10_VERSION (pin a version; default: the backports one).
set -euo pipefail
SUNXI_NAME=get-qemu10
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PRINT=0
case "${1:-}" in
  --print) PRINT=1 ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  '') ;;
  *) die "unknown argument $1 (try --help)" ;;
esac
need dpkg-deb dpkg
need ldd libc-bin

sunxi_apt amd64
compgen -G "$SUNXI_APT_DIR/lists/*_Packages*" >/dev/null || sunxi_apt_update
VERSION=${DOZEN_QEMU10_VERSION:-$(apt-cache "${SUNXI_APT[@]}" madison qemu-system-arm | awk -F' *\\| *' '/bookworm-backports/ { print $2; exit }')}
[ -n "$VERSION" ] || die "no qemu-system-arm in bookworm-backports (lists in $SUNXI_APT_DIR; DOZEN_APT_REFRESH=1 to refresh)"

if [ "$(cat "$QEMU10_DIR/.version" 2>/dev/null)" != "$VERSION" ] || [ ! -x "$QEMU10_BIN" ]; then
  DEBS=()
  for p in qemu-system-arm qemu-system-common qemu-system-data; do DEBS+=("$(sunxi_fetch amd64 "$p=$VERSION")"); done
  log "unpacking QEMU $VERSION into $QEMU10_DIR"
  rm -rf "$QEMU10_DIR.new"
  mkdir -p "$QEMU10_DIR.new"
  for d in "${DEBS[@]}"; do dpkg-deb -x "$d" "$QEMU10_DIR.new"; done
  echo "$VERSION" >"$QEMU10_DIR.new/.version"
  rm -rf "$QEMU10_DIR"
  mv "$QEMU10_DIR.new" "$QEMU10_DIR"
fi

missing=$(ldd "$QEMU10_BIN" | awk '/not found/ { print $1 }')
[ -z "$missing" ] || die "$QEMU10_BIN needs libraries this host lacks: $missing (find the bookworm package with: apt-file search <lib>, then apt-get install it)"
"$QEMU10_BIN" -M help | grep -q '^bpim2u ' || die "$QEMU10_BIN has no -M bpim2u"
if [ "$PRINT" = 1 ]; then echo "$QEMU10_BIN"; else log "ok: $("$QEMU10_BIN" --version | head -1) at $QEMU10_BIN"; fi
