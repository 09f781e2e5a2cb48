#!/usr/bin/env bash
# Prove the suite on a machine in the state a new one has, as CI meets it:
#   1. remove everything the suite and scripts/prepare.sh leave outside the clone (test Docker engines
#      and their data roots, test netns and links, tgtd daemons, loop devices and mounts, the storage
#      loop file, /tmp folders made by tests), then check that nothing of it remains;
#   2. clone HEAD into a new 0700 `mktemp -d` folder (as CI's clone folder may be) and run
#      `CI=true bash .ci/run` there, timed, keeping its log;
#   3. print the wall time, the closing line and the ten slowest test files.
# Repeat with --runs N (each run starts from a fresh clean-up: no run depends on the one before).
#
#   sudo bash scripts/ci-fresh.sh [--runs N] [--keep-cache]
#
# --keep-cache points DOZEN_CACHE at /var/cache/dozen-ci so the debootstrap base of images/debian-12
# (about 10 minutes cold) is built once and reused; without it every run builds it from scratch, as a
# new CI machine does. Logs go to /var/log/dozen-ci-fresh/.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=1 KEEP_CACHE=0
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --keep-cache) KEEP_CACHE=1; shift ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "ci-fresh: needs root" >&2; exit 1; }
LOGS=/var/log/dozen-ci-fresh
mkdir -p "$LOGS"
say() { printf '\n\033[1m[ci-fresh] %s\033[0m\n' "$*"; }

# What the suite may leave behind, by the names it uses.
engine_pids() { pgrep -f 'dockerd --host unix:///run/(dozen-test-docker|dzt-[a-z0-9-]+)\.sock' || true; }
test_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(dz[a-z]-[0-9a-f]{6,8}|dzt-[a-z0-9-]+|dozen-lab)$' || true; }
test_links() { ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(dz[a-z]-[0-9a-f]{4,8}-h|dzh[0-9a-f]{4,}|dzh-[a-z0-9-]+|dozen-lab-h)$' || true; }
# Not dozen-test.lock: this script runs under it (deleting the file frees the lock for everyone else).
test_tmp() { find /tmp /var/tmp -maxdepth 1 \( -name 'dozen-*' -o -name 'dz?-*' -o -name 'ci-summary-*' -o -name 'preflight-*' -o -name 'tgt-*' -o -name 'iscsi-*' \) ! -name 'dozen-test.lock' 2>/dev/null || true; }
test_mounts() { findmnt -rno TARGET | grep -E '^(/tmp/|/var/tmp/|/var/lib/dozen|/var/lib/dzt-|/var/lib/dozen-test-)' || true; }
test_loops() { losetup -nO NAME,BACK-FILE 2>/dev/null | grep -E ' (/tmp/|/var/tmp/|/var/lib/dozen|/var/lib/dozen-test-)' | awk '{print $1}' || true; }
test_tgtd() { pgrep -x tgtd || true; }
# The controller input filters of labs (src/network: `inet dozencloud_ctl_<lab veth>`), left fail-closed by a killed server.
test_nft() { nft list tables inet 2>/dev/null | awk '{print $3}' | grep -E '^dozencloud_ctl_(dz[a-z]_[0-9a-f]+_h|dozen_lab_h)$' || true; }
test_dirs() { ls -d /var/lib/dozen-test-engines /var/lib/dozen-test-docker /var/lib/dzt-* /var/lib/dozen /run/dz-* /run/dozen-test-docker.sock /run/dzt-*.sock /var/run/tgtd 2>/dev/null || true; }

clean() {
  local p
  for p in $(engine_pids); do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 60); do [ -z "$(engine_pids)" ] && break; sleep 0.5; done
  for p in $(engine_pids); do kill -KILL "$p" 2>/dev/null || true; done
  pkill -f 'containerd --config /run/dz-' 2>/dev/null || true
  pkill -x qemu-system-arm 2>/dev/null || true
  pkill -x qemu-system-aarch64 2>/dev/null || true
  # tgtd ignores SIGTERM while it has targets
  for p in $(test_tgtd); do kill -KILL "$p" 2>/dev/null || true; done
  for n in $(test_netns); do ip netns pids "$n" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true; ip netns delete "$n" 2>/dev/null || true; done
  for l in $(test_links); do ip link delete "$l" 2>/dev/null || true; done
  for t in $(test_nft); do nft delete table inet "$t" 2>/dev/null || true; done
  for m in $(test_mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  for d in $(test_loops); do losetup -d "$d" 2>/dev/null || true; done
  test_tmp | xargs -r rm -rf
  test_dirs | xargs -r rm -rf
  rm -f /run/dozen-test-run.lock
}

check_clean() {
  local left
  left=$( { engine_pids | sed 's/^/dockerd pid /'; test_netns | sed 's/^/netns /'; test_links | sed 's/^/link /';
            test_nft | sed 's/^/nft table /'; test_mounts | sed 's/^/mount /'; test_loops | sed 's/^/loop /'; test_tgtd | sed 's/^/tgtd pid /';
            test_tmp | sed 's/^/tmp /'; test_dirs | sed 's/^/dir /'; } )
  if [ -n "$left" ]; then echo "ci-fresh: still here after the clean-up:" >&2; echo "$left" >&2; exit 1; fi
  echo "nothing of an earlier run remains"
}

for run in $(seq 1 "$RUNS"); do
  say "run $run/$RUNS: clean-up"
  clean
  check_clean
  work=$(mktemp -d /tmp/ci-fresh-XXXXXX) # 0700, as a CI runner's folder may be
  git clone -q "$REPO" "$work/clone"
  git -C "$work/clone" log --oneline -1
  log=$LOGS/run-$(date +%Y%m%d-%H%M%S)-$run.log
  say "run $run/$RUNS: CI=true bash .ci/run in $work/clone (log: $log)"
  t0=$(date +%s)
  status=0
  (cd "$work/clone" && if [ "$KEEP_CACHE" = 1 ]; then export DOZEN_CACHE=/var/cache/dozen-ci; fi && CI=true bash .ci/run) >"$log" 2>&1 || status=$?
  secs=$(( $(date +%s) - t0 ))
  cp "$work/clone/test-artifacts/vitest.json" "${log%.log}.json" 2>/dev/null || true
  say "run $run/$RUNS: exit $status after $((secs / 60)) min $((secs % 60)) s — $(tail -1 "$log")"
  if [ -f "${log%.log}.json" ]; then
    node -e '
      const r = require(process.argv[1]);
      const rows = r.testResults.map((f) => [((f.endTime - f.startTime) / 1000).toFixed(0).padStart(5), f.name.replace(/.*\/clone\//, "")]);
      rows.sort((a, b) => b[0] - a[0]);
      console.log("slowest files (s):"); for (const [s, n] of rows.slice(0, 10)) console.log(`  ${s}  ${n}`);' "${log%.log}.json"
  fi
  grep -E '^FAILED' "$log" || true
  rm -rf "$work"
  [ "$status" = 0 ] || exit "$status"
done
