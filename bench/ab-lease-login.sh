#!/usr/bin/env bash
# Lease → login: A/B of this checkout against an earlier commit, on the same machine in one session:
# the two alternate, ROUNDS times, each a median of BENCH_RUNS (default 3) lab boots, so the
# machine's drift over the hour falls on both sides alike.
#   bench/ab-lease-login.sh REF [ROUNDS]       e.g. bench/ab-lease-login.sh b67364c 3
# REF is checked out into a temporary worktree (its test image built there, sharing .cache and
# node_modules with this checkout) and removed at the end. Run it alone: it boots QEMU lab boards.
set -euo pipefail
REF=${1:?usage: bench/ab-lease-login.sh REF [ROUNDS]}
ROUNDS=${2:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
# The test and benchmark run lock (test/helpers/run-lock.ts), held for the whole A/B: a test run that
# starts meanwhile must not take the labs of REF's benchmark (which may predate the lock) for leftovers.
exec 9>/run/dozen-test-run.lock
flock -w 600 9 || { echo "another test or benchmark run holds /run/dozen-test-run.lock" >&2; exit 1; }
export DOZEN_RUN_LOCK_HELD=inherited
WT=$(mktemp -d /tmp/dozen-ab-XXXXXX)
cleanup() { git -C "$HERE" worktree remove --force "$WT" >/dev/null 2>&1 || rm -rf "$WT"; git -C "$HERE" worktree prune; }
trap cleanup EXIT
git -C "$HERE" worktree add --detach -f "$WT" "$REF" >/dev/null
ln -s "$HERE/node_modules" "$WT/node_modules"
[ -e "$HERE/.cache" ] && ln -s "$HERE/.cache" "$WT/.cache"
for d in "$HERE" "$WT"; do bash "$d/images/test/build.sh" >/dev/null; done
total() { (cd "$1" && BENCH_RUNS=${BENCH_RUNS:-3} timeout -k 10 900 npx tsx bench/leases.ts leaseToLogin 2>/dev/null) | tr -d '\n' | grep -o '"total": *[0-9]*' | head -1 | grep -o '[0-9]*$'; }
a=() b=()
for i in $(seq "$ROUNDS"); do
  a+=("$(total "$HERE")"); b+=("$(total "$WT")")
  echo "round $i: this checkout ${a[-1]} ms, $REF ${b[-1]} ms"
done
med() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ma=$(med "${a[@]}") mb=$(med "${b[@]}")
echo "median: this checkout $ma ms, $REF $mb ms, ratio (ref ÷ this; ≥ 1 is no worse) $(awk -v a="$ma" -v b="$mb" 'BEGIN { printf "%.2f", b / a }')"
