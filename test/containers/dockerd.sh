#!/usr/bin/env bash
# Real Docker engines for the container-lease tests and the benchmark. No mocks: each one is a
# `dockerd` (Debian's docker.io) with its own socket, data root and exec root, so it never touches a
# system engine. Every command is idempotent and safe to run from parallel test files (flock).
#
#   dockerd.sh start [NAME]
#       The shared local engine (default NAME=dozen-test-docker): host network namespace,
#       unix:///run/NAME.sock, data root /var/lib/NAME, iptables on, no default bridge. Started if
#       it doesn't answer, then LEFT RUNNING for the next test file / run. Prints the socket path.
#   dockerd.sh start-remote NAME [--btrfs|--ext4] [--userns]
#       A "remote shared board": an engine in its own network namespace NAME, reached like a real
#       board over TCP + TLS on <ip>:2376 through a veth pair (host side .1, engine side .2 of a free
#       10.199.X.0/24), with a client certificate; tenants' SSH ports are published on <ip>.
#       --userns runs it with --userns-remap default (a user namespace for every container).
#       --btrfs puts its data root on a 2 GiB loop-mounted btrfs (storage driver btrfs: per-container
#       disk quotas); --ext4 on a 2 GiB loop-mounted ext4 (overlay2 on extfs: no quotas), so that what
#       the engine can do never depends on the host's own file system. Prints the path of a JSON file {name, socket, host, port, ca, cert, key, sshHost}.
#       Run again after `stop` to restart the same engine with its containers.
#   dockerd.sh stop NAME      SIGTERM the engine (its containers stop with it), keep its data.
#   dockerd.sh destroy NAME   stop, then remove its data, namespace, veth and loop file.
#
# Every command first makes sure qemu-user binfmt handlers for ARM are registered with the F flag
# (the interpreter is opened at registration, so it works inside containers' mount namespaces).
#
# CI: nothing to do — test/containers/engines.ts runs `start` in each test file's setup. To keep the
# shared engine warm across runs (or inspect it), run `sudo bash test/containers/dockerd.sh start`;
# `docker -H unix:///run/dozen-test-docker.sock ps` talks to it. Needs root, docker.io,
# qemu-user-static, binfmt-support, iproute2, openssl, curl, btrfs-progs (scripts/setup-host.sh).
set -euo pipefail

die() { echo "[dockerd.sh] ERROR: $*" >&2; exit 1; }
log() { echo "[dockerd.sh] $*" >&2; }
[ "$(id -u)" = 0 ] || die "needs root"
for t in dockerd curl ip nsenter openssl flock update-binfmts; do
  command -v "$t" >/dev/null || die "missing tool $t — run: sudo bash scripts/setup-host.sh"
done

STATE=/var/lib/dozen-test-engines

# Every command takes its lock under $STATE: make the folder first, so a machine that never ran the
# suite (or one whose clean-up removed it) works the same as a warm one.
lock() { # lock NAME
  mkdir -p "$STATE"
  exec 7>"$STATE/$1.lock"
  flock -w 180 7 || die "timed out waiting for $STATE/$1.lock"
}

ensure_binfmt() {
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
  fi
  for a in qemu-arm qemu-aarch64; do
    [ -e "/proc/sys/fs/binfmt_misc/$a" ] || update-binfmts --enable "$a" >/dev/null 2>&1 || true
  done
  [ -e /proc/sys/fs/binfmt_misc/qemu-arm ] || die "qemu-arm binfmt handler not registered (apt-get install qemu-user-static binfmt-support)"
  grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-arm || echo 1 >/proc/sys/fs/binfmt_misc/qemu-arm
  grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-arm ||
    die "qemu-arm binfmt handler lacks the F (fix-binary) flag: armhf binaries won't run inside containers"
}

ping_sock() { curl -s -m 2 --unix-socket "$1" http://docker/_ping 2>/dev/null | grep -q OK; }

# Engines outlive the test run that started them: they must not keep that run's temporary folder
# (TMPDIR points into it, and it is removed when the run ends; containerd then fails to start tasks).
export TMPDIR=/tmp

# An engine left by an older run whose TMPDIR is gone cannot start containers: restart it.
engine_healthy() { # engine_healthy NAME
  local pidf=/run/dz-$1/dockerd.pid pid tmp
  pid=$(cat "$pidf" 2>/dev/null) || return 0
  tmp=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^TMPDIR=//p')
  [ -z "$tmp" ] || [ -d "$tmp" ]
}

# run_dockerd NAME SOCKET LOG PIDFILE [NETNS] -- DOCKERD-ARGS...
run_dockerd() {
  local name=$1 sock=$2 logf=$3 pidf=$4 netns=$5
  shift 6
  local pre=()
  [ -n "$netns" ] && pre=(nsenter "--net=/run/netns/$netns")
  # fd 7 is our flock: the daemon must not inherit (and hold) it.
  setsid "${pre[@]}" dockerd --host "unix://$sock" --pidfile "$pidf" "$@" >>"$logf" 2>&1 </dev/null 7>&- &
  local i
  for i in $(seq 1 120); do
    ping_sock "$sock" && return 0
    if [ "$i" -gt 4 ] && ! pgrep -F "$pidf" >/dev/null 2>&1 && ! kill -0 $! 2>/dev/null; then break; fi
    sleep 0.5
  done
  tail -20 "$logf" >&2
  die "dockerd $name did not answer on $sock (log: $logf)"
}

stop_engine() {
  local name=$1 pidf=/run/dz-$1/dockerd.pid pid i
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid"
    for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "dockerd $name ignored SIGTERM for 30 s, killing it"; kill -KILL "$pid"; }
  fi
  rm -f "$pidf"
}

cmd_start() {
  local name=${1:-dozen-test-docker}
  local sock=/run/$name.sock exec=/run/dz-$name
  mkdir -p "$exec"
  lock "$name"
  ensure_binfmt
  if ping_sock "$sock" && ! engine_healthy "$name"; then
    log "dockerd $name runs with a TMPDIR that is gone: restarting it"
    stop_engine "$name"
  fi
  if ! ping_sock "$sock"; then
    log "starting dockerd $name on $sock"
    mkdir -p "/var/lib/$name"
    run_dockerd "$name" "$sock" "$STATE/$name.log" "$exec/dockerd.pid" "" -- \
      --data-root "/var/lib/$name" --exec-root "$exec" --iptables=true --bridge=none
  fi
  echo "$sock"
}

free_prefix() {
  local routes p i
  routes=$(ip -4 route show table all)
  for i in $(seq 1 200); do
    p=10.199.$((RANDOM % 256))
    grep -q "$p\." <<<"$routes" || { echo "$p"; return 0; }
  done
  die "no free 10.199.X.0/24"
}

make_tls() { # make_tls DIR IP
  local d=$1 ip=$2
  [ -f "$d/key.pem" ] && return 0
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
      -subj "/CN=dozen-test-ca" -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$ip" \
      -keyout server-key.pem -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$ip" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
      -extfile server.ext -out server.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=dozen-control" \
      -keyout key.pem -out client.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
      -extfile client.ext -out cert.pem 2>/dev/null
    chmod 600 ./*key.pem
  )
}

cmd_start_remote() {
  local name=${1:?start-remote needs a NAME}
  [[ $name =~ ^[a-z0-9-]{1,10}$ ]] || die "remote engine names are [a-z0-9-]{1,10} (they name a veth)"
  local fs=host userns=()
  shift
  for opt in "$@"; do
    case "$opt" in
      --btrfs) fs=btrfs ;;
      --ext4) fs=ext4 ;;
      --userns) userns=(--userns-remap default) ;; # containers' root is an unprivileged uid on the host (dockerd makes the dockremap user)
      *) die "start-remote: unknown option $opt" ;;
    esac
  done
  local dir=$STATE/$name sock=/run/$name.sock exec=/run/dz-$name
  mkdir -p "$dir" "$exec"
  lock "$name"
  ensure_binfmt
  local prefix
  if [ -f "$dir/prefix" ]; then prefix=$(cat "$dir/prefix"); else prefix=$(free_prefix); echo "$prefix" >"$dir/prefix"; fi
  local ip=$prefix.2 hostif=dzh-$name nsif=dzn-$name
  # Network: namespace + veth (re-created if a reboot or cleanup removed them).
  [ -e "/run/netns/$name" ] || ip netns add "$name"
  ip -n "$name" link set lo up
  if ! ip link show "$hostif" >/dev/null 2>&1; then
    ip link add "$hostif" type veth peer name "$nsif" netns "$name"
    ip addr add "$prefix.1/24" dev "$hostif"
    ip -n "$name" addr add "$ip/24" dev "$nsif"
    ip link set "$hostif" up
    ip -n "$name" link set "$nsif" up
    ip -n "$name" route add default via "$prefix.1" 2>/dev/null || true
  fi
  # Storage.
  local root=/var/lib/$name driver=overlay2
  mkdir -p "$root"
  if [ "$fs" != host ]; then
    command -v "mkfs.$fs" >/dev/null || die "missing mkfs.$fs — run: sudo bash scripts/setup-host.sh"
    [ "$fs" = btrfs ] && driver=btrfs
    if ! mountpoint -q "$root"; then
      [ -f "$dir/disk.img" ] || { truncate -s 2G "$dir/disk.img"; "mkfs.$fs" -q "$dir/disk.img" >/dev/null; }
      mount -o loop "$dir/disk.img" "$root"
    fi
  fi
  make_tls "$dir/tls" "$ip"
  if ping_sock "$sock" && ! engine_healthy "$name"; then
    log "dockerd $name runs with a TMPDIR that is gone: restarting it"
    stop_engine "$name"
  fi
  if ! ping_sock "$sock"; then
    log "starting dockerd $name in netns $name (tcp://$ip:2376, TLS, $driver)"
    run_dockerd "$name" "$sock" "$dir/dockerd.log" "$exec/dockerd.pid" "$name" -- \
      --host "tcp://$ip:2376" --tlsverify --tlscacert "$dir/tls/ca.pem" \
      --tlscert "$dir/tls/server.pem" --tlskey "$dir/tls/server-key.pem" \
      --data-root "$root" --exec-root "$exec" --storage-driver "$driver" --iptables=true --bridge=none "${userns[@]}"
  fi
  printf '{"name":"%s","socket":"%s","host":"%s","port":2376,"ca":"%s","cert":"%s","key":"%s","sshHost":"%s","storageDriver":"%s"}\n' \
    "$name" "$sock" "$ip" "$dir/tls/ca.pem" "$dir/tls/cert.pem" "$dir/tls/key.pem" "$ip" "$driver" >"$dir/engine.json"
  echo "$dir/engine.json"
}

cmd_stop() {
  local name=${1:?stop needs a NAME}
  lock "$name"
  stop_engine "$name"
}

cmd_destroy() {
  local name=${1:?destroy needs a NAME}
  [[ $name =~ ^[a-z0-9-]{1,20}$ ]] || die "bad engine name $name"
  cmd_stop "$name"
  local root=/var/lib/$name
  mountpoint -q "$root" && umount "$root"
  rm -rf "${root:?}" "/run/dz-$name" "/run/$name.sock"
  ip link del "dzh-$name" 2>/dev/null || true
  [ -e "/run/netns/$name" ] && ip netns del "$name"
  rm -rf "${STATE:?}/$name"
}

case "${1:-start}" in
  start) shift || true; cmd_start "$@" ;;
  start-remote) shift; cmd_start_remote "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  destroy) shift; cmd_destroy "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
