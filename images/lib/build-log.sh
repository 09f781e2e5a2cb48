# Shared by the image builders: timestamped progress lines, errors, and tool checks that say which
# package brings a missing tool. Set BUILD_NAME before sourcing.
START_MS=$(date +%s%3N)
log() { printf '[%s] %6.1fs %s\n' "$BUILD_NAME" "$(( $(date +%s%3N) - START_MS ))e-3" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$BUILD_NAME" "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing tool '$1' — install it with: apt-get install $2"; }
