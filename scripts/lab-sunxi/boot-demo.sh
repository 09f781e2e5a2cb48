#!/usr/bin/env bash
# Bounded demo: emulated Banana Pi M2 Ultra boards (QEMU 10 `-M bpim2u`, Allwinner R40) boot from their
# SD card's u-boot-sunxi over the GMAC, through pxelinux, into Debian's armmp kernel and the test
# image's initrd, get a DHCP lease from the kernel and reach `login:`. Measures each step, lists the
# files U-Boot asked for over TFTP, pings each board and types into its console, then cleans up.
#
# Usage: scripts/lab-sunxi/boot-demo.sh [--kernel PKG[=VERSION]] [--boards N] [--timeout S]
#                                        [--targets "pxe dhcp"] [--uboot-set VAR=VALUE]...
#                                        [--cpus all] [--stock-timer] [--shared-l2]
#                                        [--kernel-args "..."] [--pcap] [--no-unwedge] [--out DIR]
#   --kernel   armhf kernel package (default linux-image-6.1.0-54-armmp; linux-image-6.1.0-57-armmp,
#              6.1.192-3, oopses in sun8i_dwmac_dma_interrupt on the GMAC's first interrupt)
#   --boards   how many boards, booted at once (1-4, default 2): each gets its own SD card and MAC
#   --timeout  seconds before the boot is called failed (default 150, at most 240; QEMU itself is
#              killed by timeout(1) 30 s later, so no boot outlives 270 s)
#   --targets  U-Boot boot_targets written into the SD card's uboot.env (default "pxe dhcp";
#              "default" keeps the build's own "fel mmc_auto scsi0 usb0 pxe dhcp")
#   --uboot-set  another uboot.env variable (make-sd.sh --set), e.g. bootdelay=0 or preboot=
#   --cpus all leave all four vCPUs to the kernel (default: maxcpus=1, see /work/shared/BOARD-FACTS.md)
#   --stock-timer  leave QEMU's generic-timer frequency at its default (62.5 MHz). By default the demo
#              passes -global driver=cortex-a7-arm-cpu,property=cntfrq,value=24000000: U-Boot programs
#              CNTFRQ as 24 MHz (the R40's real counter) while QEMU's counter ticks at 62.5 MHz, so
#              without it Linux's clock runs 2.6 times faster than the wall clock
#   --shared-l2  plain bridge: boards hear each other's broadcasts and the server's ARP requests. By
#              default each tap is an isolated bridge port (boards reach only the server) and the server
#              has a permanent neighbour entry per board (no ARP broadcasts), because of the RX wedge
#              below; --shared-l2 shows it with 2+ boards
#   --kernel-args  appended to the kernel command line (e.g. initcall_debug)
#   --no-unwedge  by default, when U-Boot's third BOOTP broadcast goes unanswered, the demo pauses and
#              resumes that board over QMP (stop, cont): on stop QEMU purges the frames queued for the
#              NIC and reads the tap again, which undoes the RX wedge below (once per boot)
#   --pcap     also record every tap with tcpdump (OUT/bpi-N.pcap; passive)
#   --out DIR  where the logs go (default .cache/lab-sunxi/runs/<time>-<kernel>)
# Exit status 0 only when every board reached login: with a lease from its kernel and answered ping.
#
# The RX wedge (QEMU 10.0.2, hw/net/allwinner-sun8i-emac.c): a frame that reaches a board while its
# receiver is off (U-Boot not yet in a network command, or between two) is queued by QEMU, which then
# stops reading the tap; the model flushes that queue only on an RX_CTL1 write made while RX_EN is
# already set, and U-Boot's sun8i_emac sets RX_CTL1 before RX_CTL0.RX_EN, so U-Boot never receives
# again (BOOTP broadcast 1..17, "Retry time exceeded"; seen with the bridge's IPv6 router solicitation
# and with another board's DHCP broadcast). Linux's dwmac-sun8i sets RX_EN before starting RX DMA, so
# it should not stay wedged (not tested). So nothing may reach a board's tap unasked: no IPv6 on the
# bridge (router solicitations, MLD), no other board's broadcasts (isolated ports), no ARP requests
# from the server (permanent neighbour entries); and a QMP stop + cont undoes a wedge (--no-unwedge).
#
# What it sets up, all torn down on exit: netns dzbp-demo holding bridge dzbp-br0 (10.88.0.1/24),
# taps dzbp-tap<N>, dnsmasq (DHCP + TFTP, no DNS) on the bridge, one QEMU per board. Nothing leaves
# the namespace. Every QEMU runs under `flock /tmp/dozen-test.lock` (shared with the test suite) and
# `timeout`. Needs root, QEMU 10 from scripts/lab-sunxi/get-qemu10.sh, dnsmasq, and the test image
# (images/test/build.sh is run when its initrd is missing).
#
# Boards: board i has MAC 52:54:00:58:00:0i (the lab's scheme: 52:54:00, then the subnet's 2nd and 3rd
# octets, then the board number), reserved IP 10.88.0.10i; the MAC is set in the card's U-Boot
# environment (make-sd.sh), which U-Boot also passes to Linux in the device tree.
# The initrd is the test image's, with an appended cpio that carries the chosen kernel's R40 network
# modules (i2c-mv64xxx, axp20x-regulator, dwmac-sun8i and dependencies; the test image has none) and
# the iSCSI ones, and a /etc/dozen/modules.load for them: the test image itself is not modified.
set -euo pipefail
SUNXI_NAME=boot-demo
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
KSPEC=linux-image-6.1.0-54-armmp BOARDS=2 TIMEOUT=150 TARGETS="pxe dhcp" CPUS=1 OUT=
USETS=() STOCK_TIMER=0 SHARED_L2=0 KARGS= PCAP=0 UNWEDGE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) KSPEC=${2:?}; shift ;;
    --boards) BOARDS=${2:?}; shift ;;
    --timeout) TIMEOUT=${2:?}; shift ;;
    --targets) TARGETS=${2:?}; shift ;;
    --uboot-set) USETS+=("${2:?}"); shift ;;
    --stock-timer) STOCK_TIMER=1 ;;
    --shared-l2) SHARED_L2=1 ;;
    --pcap) PCAP=1 ;;
    --no-unwedge) UNWEDGE=0 ;;
    --kernel-args) KARGS=${2:?}; shift ;;
    --cpus) [ "${2:-}" = all ] || die "--cpus takes 'all'"; CPUS=all; shift ;;
    --out) OUT=${2:?}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
  shift
done
[[ "$BOARDS" =~ ^[1-4]$ ]] || die "--boards must be 1..4"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -ge 30 ] && [ "$TIMEOUT" -le 240 ] || die "--timeout must be 30..240 seconds"
[[ "$KSPEC" =~ ^linux-image-[A-Za-z0-9.+~-]+(=[A-Za-z0-9.+~:-]+)?$ ]] || die "--kernel: not a kernel package: $KSPEC"
[ "$(id -u)" = 0 ] || die "needs root (network namespace, bridge, taps)"
need ip iproute2
need dnsmasq dnsmasq-base
need ping iputils-ping
need cpio cpio
need xz xz-utils
need flock util-linux
need timeout coreutils

NS=dzbp-demo BR=dzbp-br0 NET=10.88.0 SERVER=10.88.0.1
QEMU=$(bash "$SUNXI_LIB_DIR/get-qemu10.sh" --print)
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$SUNXI_CACHE/runs/$STAMP-${KSPEC#linux-image-}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log "logs in $OUT"

# --- 1. kernel, device tree, initrd ------------------------------------------------------------
KDEB=$(sunxi_fetch armhf "$KSPEC")
KDIR=$(sunxi_unpack "$KDEB")
KVER=$(ls "$KDIR/lib/modules")
[ "$(echo "$KVER" | wc -l)" = 1 ] || die "expected one kernel in $KDEB"
KMOD=$KDIR/lib/modules/$KVER
DTB=$(find "$KDIR/usr/lib/linux-image-$KVER" -name sun8i-r40-bananapi-m2-ultra.dtb -print -quit)
[ -n "$DTB" ] || die "$(basename "$KDEB") has no sun8i-r40-bananapi-m2-ultra.dtb"
BASE_INITRD=$SUNXI_REPO/images/test/build/initrd.img
if [ ! -f "$BASE_INITRD" ]; then
  log "building the test image (images/test/build.sh)"
  bash "$SUNXI_REPO/images/test/build.sh" >&2
fi

TFTP=$OUT/tftp
IMG=images/test-r40
mkdir -p "$TFTP/$IMG/dtbs" "$TFTP/pxelinux.cfg"
cp "$KDIR/boot/vmlinuz-$KVER" "$TFTP/$IMG/vmlinuz"
cp "$DTB" "$TFTP/$IMG/dtbs/"

# The overlay cpio: modules (with their modinfo dependencies, dependencies first) + modules.load.
R40_MODULES="i2c-mv64xxx axp20x-regulator dwmac-sun8i"
ISCSI_MODULES="crc32c_generic crct10dif_generic iscsi_tcp sd_mod ext4"
O=$OUT/overlay
rm -rf "$O"
mkdir -p "$O/etc/dozen"
declare -A KO=() BUILTIN=()
while read -r p; do n=${p##*/}; n=${n%.xz}; n=${n%.ko}; KO[${n//-/_}]=$p; done < <(cd "$KMOD" && find kernel -name '*.ko' -o -name '*.ko.xz')
while read -r p; do n=${p##*/}; n=${n%.ko}; BUILTIN[${n//-/_}]=1; done <"$KMOD/modules.builtin"
ORDER=()
modfile() { # the module's .ko in the overlay (decompressed), copied on first use
  local src=$KMOD/${KO[$1]} dst=$O/lib/modules/$KVER/${KO[$1]%.xz}
  if [ ! -f "$dst" ]; then
    mkdir -p "$(dirname "$dst")"
    case "$src" in *.xz) xz -dc "$src" >"$dst" ;; *) cp "$src" "$dst" ;; esac
  fi
  echo "$dst"
}
resolve() {
  local n=${1//-/_} d deps
  [ -n "${BUILTIN[$n]:-}" ] && return
  [ -n "${KO[$n]:-}" ] || die "module $1 is neither built into nor shipped with $KVER"
  for d in "${ORDER[@]}"; do [ "$d" = "$n" ] && return; done
  deps=$(tr '\0' '\n' <"$(modfile "$n")" | sed -n 's/^depends=//p' | head -1)
  for d in ${deps//,/ }; do resolve "$d"; done
  ORDER+=("$n")
}
{
  echo "# R40 (Banana Pi M2 Ultra) network + iSCSI modules for $KVER (scripts/lab-sunxi/boot-demo.sh overlay)"
  for set in "allwinner,sun8i-r40:$R40_MODULES" "iscsi:$ISCSI_MODULES"; do
    ORDER=()
    for m in ${set#*:}; do resolve "$m"; done
    for n in "${ORDER[@]}"; do echo "${set%%:*} ${KO[$n]%.xz}"; done
  done
} >"$O/etc/dozen/modules.load"
log "overlay modules for $KVER: $(grep -c '^allwinner' "$O/etc/dozen/modules.load") R40 network, $(grep -c '^iscsi' "$O/etc/dozen/modules.load") iSCSI"
find "$O" -exec touch -h -d @0 {} +
(cd "$O" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
  gzip -n -9 >"$OUT/overlay.cpio.gz"
cat "$BASE_INITRD" "$OUT/overlay.cpio.gz" >"$TFTP/$IMG/initrd.img"

CMDLINE="console=ttyS0,115200 dozen.net=dhcp"
[ "$CPUS" = 1 ] && CMDLINE="$CMDLINE maxcpus=1"
[[ "$KARGS" =~ ^[A-Za-z0-9_.,=:/\ +-]*$ ]] || die "--kernel-args: unexpected characters"
CMDLINE="$CMDLINE${KARGS:+ $KARGS}"

# --- 2. boards: SD cards and pxelinux configs ---------------------------------------------------
MACS=() IPS=()
[ "$TARGETS" = default ] && TARGETS="fel mmc_auto scsi0 usb0 pxe dhcp"
SD_ARGS=(--targets "$TARGETS")
for s in "${USETS[@]}"; do SD_ARGS+=(--set "$s"); done
for i in $(seq 1 "$BOARDS"); do
  MACS[i]=52:54:00:58:00:0$i
  IPS[i]=$NET.10$i
  bash "$SUNXI_LIB_DIR/make-sd.sh" "$SUNXI_CACHE/sd/bpi-$i.img" "${MACS[i]}" "${SD_ARGS[@]}"
  cp --sparse=always "$SUNXI_CACHE/sd/bpi-$i.img" "$OUT/bpi-$i.sd.img" # the board may write its card
  cat >"$TFTP/pxelinux.cfg/01-${MACS[i]//:/-}" <<EOF
## pxelinux.cfg for bpi-$i (${MACS[i]}), as pxe/pxelinux.cfg.tmpl renders it
default dozen
prompt 0
timeout 1
label dozen
	menu label test-r40 on bpi-$i
	kernel $IMG/vmlinuz
	initrd $IMG/initrd.img
	fdt $IMG/dtbs/$(basename "$DTB")
	append $CMDLINE
EOF
done

# --- 3. the shared lock, then network namespace, bridge, taps, dnsmasq -------------------------
# The lock first: dnsmasq's and QEMU's timeouts must not run out while another boot holds it.
log "waiting for $DOZEN_TEST_LOCK"
exec 9>"$DOZEN_TEST_LOCK"
flock -w 900 9 || die "could not get $DOZEN_TEST_LOCK within 15 minutes"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
}
if ip netns list | grep -qw "$NS"; then
  [ -z "$(ip netns pids "$NS")" ] || die "netns $NS is in use (another boot-demo?): processes $(ip netns pids "$NS" | tr '\n' ' ')"
  log "removing a stale netns $NS"
  ip netns del "$NS"
fi
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$NS"
ip -n "$NS" link set lo up
# No IPv6 on the bridge: its router solicitations and MLD reports would wedge U-Boot's receiver (above).
ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n "$NS" link add "$BR" type bridge
ip -n "$NS" addr add "$SERVER/24" dev "$BR"
ip -n "$NS" link set "$BR" up
for i in $(seq 1 "$BOARDS"); do
  ip -n "$NS" tuntap add "dzbp-tap$i" mode tap
  ip -n "$NS" link set "dzbp-tap$i" master "$BR" up
  if [ "$SHARED_L2" = 0 ]; then
    ip netns exec "$NS" bridge link set dev "dzbp-tap$i" isolated on
    ip -n "$NS" neigh replace "${IPS[i]}" lladdr "${MACS[i]}" dev "$BR" nud permanent
  fi
done
{
  echo "port=0"
  echo "interface=$BR"
  echo "bind-interfaces"
  echo "no-resolv"
  echo "no-hosts"
  echo "dhcp-authoritative"
  echo "dhcp-range=$NET.100,$NET.199,255.255.255.0,10m"
  for i in $(seq 1 "$BOARDS"); do echo "dhcp-host=${MACS[i]},${IPS[i]},bpi-$i"; done
  echo "dhcp-boot=boot.scr.uimg"      # what DozenCloud's DHCP gives every board (src/boot/spec.ts)
  echo "dhcp-leasefile=$OUT/dnsmasq.leases"
  echo "enable-tftp"
  echo "tftp-root=$TFTP"
  echo "log-dhcp"
  echo "log-facility=$OUT/dnsmasq.log"
  echo "user=root"
} >"$OUT/dnsmasq.conf"
: >"$OUT/dnsmasq.log"
timeout $((TIMEOUT + 120)) ip netns exec "$NS" dnsmasq -k -C "$OUT/dnsmasq.conf" 2>"$OUT/dnsmasq.err" &
PIDS+=($!)
sleep 0.5
kill -0 "${PIDS[0]}" 2>/dev/null || die "dnsmasq did not start: $(cat "$OUT/dnsmasq.err")"

# --- 4. boot (still under the lock) ------------------------------------------------------------
# Each board starts paused (-S), as the lab's boards do; a reader stamps every serial line with the
# seconds since the QMP `cont` that powers the board on (t=0). Nothing polls the guest.
STAMPER='use Time::HiRes qw(time); $| = 1; my ($t0, $bol) = ($ENV{T0}, 1);
  open(my $in, "<", $ARGV[0]) or die "$ARGV[0]: $!"; binmode $in; binmode STDOUT;
  while (sysread($in, my $buf, 4096)) { $buf =~ s/\r//g;
    for my $l (split /(?<=\n)/, $buf) { printf "%8.3f ", time - $t0 if $bol; print $l; $bol = ($l =~ /\n\z/); } }'
QMP_STOP_CONT='use IO::Socket::UNIX; my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "qmp $ARGV[0]: $!"; <$s>;
  for my $c ("qmp_capabilities", "stop", "cont") { print $s "{\"execute\":\"$c\"}\n"; while (my $l = <$s>) { last if $l =~ /"return"|"error"/ } }'
QMP_CONT='use IO::Socket::UNIX; use Time::HiRes qw(time);
  my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "qmp $ARGV[0]: $!"; <$s>;
  print $s "{\"execute\":\"qmp_capabilities\"}\n"; <$s>;
  printf "%.6f\n", time; print $s "{\"execute\":\"cont\"}\n"; while (my $l = <$s>) { last if $l =~ /"return"|"error"/ }'
QPID=() T0=()
if [ "$PCAP" = 1 ]; then
  need tcpdump tcpdump
  for i in $(seq 1 "$BOARDS"); do
    ip netns exec "$NS" tcpdump -q -n -U -i "dzbp-tap$i" -w "$OUT/bpi-$i.pcap" 2>"$OUT/bpi-$i.tcpdump.err" &
    PIDS+=($!)
  done
  sleep 1
fi
for i in $(seq 1 "$BOARDS"); do
  # prettier-ignore
  QARGS=(-M bpim2u -L "$QEMU10_DATA" -display none -monitor none -nodefaults -S
    -qmp "unix:$OUT/bpi-$i.qmp,server=on,wait=off"
    -chardev "pty,id=s0,logfile=$OUT/bpi-$i.serial.raw" -serial chardev:s0
    -drive "if=sd,format=raw,file=$OUT/bpi-$i.sd.img"
    -nic "tap,ifname=dzbp-tap$i,script=no,downscript=no,model=gmac,mac=${MACS[i]}"
    -name "dzbp-bpi-$i")
  [ "$STOCK_TIMER" = 1 ] || QARGS+=(-global driver=cortex-a7-arm-cpu,property=cntfrq,value=24000000)
  echo "ip netns exec $NS $QEMU ${QARGS[*]}" >"$OUT/bpi-$i.cmdline"
  timeout $((TIMEOUT + 30)) ip netns exec "$NS" "$QEMU" "${QARGS[@]}" >"$OUT/bpi-$i.qemu.out" 2>&1 &
  QPID[i]=$!
  PIDS+=("${QPID[i]}")
done
for i in $(seq 1 "$BOARDS"); do
  pty=
  for _ in $(seq 1 50); do
    pty=$(grep -o '/dev/pts/[0-9]*' "$OUT/bpi-$i.qemu.out" 2>/dev/null | head -1 || true)
    [ -n "$pty" ] && [ -S "$OUT/bpi-$i.qmp" ] && break
    sleep 0.1
  done
  [ -n "$pty" ] || die "bpi-$i: QEMU did not start: $(cat "$OUT/bpi-$i.qemu.out")"
  PTY[i]=$pty
done
for i in $(seq 1 "$BOARDS"); do
  T0[i]=$(perl -e "$QMP_CONT" "$OUT/bpi-$i.qmp")    # power on
  T0="${T0[i]}" perl -e "$STAMPER" "${PTY[i]}" >"$OUT/bpi-$i.serial" &
  PIDS+=($!)
done
log "${BOARDS} board(s) powered on; waiting up to ${TIMEOUT}s for login:"

# The kernel's lease as the server saw it: the DHCPACK of a transaction whose vendor class is
# udhcp's (U-Boot's is "U-Boot.armv7"). Prints the ACK line.
kernel_ack() { # kernel_ack MAC
  awk -v mac="$1" '
    / vendor class: / { split($0, a, "]: "); split(a[2], b, " "); v = $0; sub(/.* vendor class: /, "", v); vc[b[1]] = v }
    /DHCPACK\(/ && index($0, " " mac) { split($0, a, "]: "); split(a[2], b, " "); if (vc[b[1]] ~ /^udhcp/) { print; exit } }
  ' "$OUT/dnsmasq.log"
}
UNWEDGED=()
deadline=$(($(date +%s) + TIMEOUT))
while [ "$(date +%s)" -lt "$deadline" ]; do
  pending=0
  for i in $(seq 1 "$BOARDS"); do
    kill -0 "${QPID[i]}" 2>/dev/null || continue
    grep -aqE 'Unable to handle kernel|Kernel panic' "$OUT/bpi-$i.serial" && continue
    grep -aq ' login: ' "$OUT/bpi-$i.serial" && [ -n "$(kernel_ack "${MACS[i]}")" ] && continue
    pending=1
    if [ "$UNWEDGE" = 1 ] && [ -z "${UNWEDGED[i]:-}" ] && grep -aq 'BOOTP broadcast 3$' "$OUT/bpi-$i.serial" &&
      ! grep -aq 'DHCP client bound' "$OUT/bpi-$i.serial"; then
      perl -e "$QMP_STOP_CONT" "$OUT/bpi-$i.qmp"
      UNWEDGED[i]=1
      log "bpi-$i: U-Boot's DHCP unanswered after 3 broadcasts: QMP stop + cont"
    fi
  done
  [ "$pending" = 0 ] && break
  sleep 0.5
done

# --- 5. prove the link both ways: ping from the server side, type into the console -------------
declare -A R=()
for i in $(seq 1 "$BOARDS"); do
  grep -aq ' login: ' "$OUT/bpi-$i.serial" || continue
  if ip netns exec "$NS" ping -c 3 -i 0.3 -W 2 "${IPS[i]}" >"$OUT/bpi-$i.ping" 2>&1; then R[$i.ping]=ok; else R[$i.ping]=FAILED; fi
  kill -0 "${QPID[i]}" 2>/dev/null || continue
  printf 'root\r' >"${PTY[i]}" || true
  sleep 1
  printf 'echo DZBP-$((6*7)) $(cat /sys/class/net/eth0/address) $(ip -4 -o addr show eth0 | tr -s " " | cut -d" " -f4)\r' >"${PTY[i]}" || true
  for _ in $(seq 1 50); do grep -aq 'DZBP-42 ' "$OUT/bpi-$i.serial" && break; sleep 0.1; done
  R[$i.console]=$(grep -a -m1 -o 'DZBP-42 [^[:cntrl:]]*' "$OUT/bpi-$i.serial" || echo FAILED)
done
declare -A TAPSTAT=()
for i in $(seq 1 "$BOARDS"); do # tap "TX" = frames QEMU read from the tap, "dropped" = frames it never read
  TAPSTAT[$i]=$(ip -n "$NS" -s -j link show "dzbp-tap$i" |
    perl -MJSON::PP -e 'my $l = decode_json(join "", <STDIN>)->[0]{stats64}; printf "from the board %d, to the board %d read by QEMU + %d dropped", $l->{rx}{packets}, $l->{tx}{packets}, $l->{tx}{dropped}' 2>/dev/null || echo '?')
done
for i in $(seq 1 "$BOARDS"); do kill "${QPID[i]}" 2>/dev/null || true; done
wait "${QPID[@]}" 2>/dev/null || true
exec 9>&- # the lock goes with the last QEMU

# --- 6. report ---------------------------------------------------------------------------------
MARKS=(
  "uboot|^ *[0-9.]+ U-Boot 2"
  "bootp|BOOTP broadcast 1\$"
  "uboot_lease|DHCP client bound"
  "pxecfg|Retrieving file: pxelinux.cfg/01-"
  "initrd|Retrieving file: $IMG/initrd"
  "starting|Starting kernel"
  "linux|Booting Linux on physical CPU"
  "init|Run /init as init process"
  "link|eth0: Link is Up"
  "lease|dozen: eth0 [0-9]"
  "login| login: "
)
first() { grep -a -m1 -E "$2" "$OUT/bpi-$1.serial" | awk '{ print $1 }' || true; }
ok=1
{
  echo "kernel: $(basename "$KDEB" .deb) ($KVER), cmdline: $CMDLINE"
  echo "qemu:   $("$QEMU" --version | head -1)$([ "$STOCK_TIMER" = 1 ] && echo ', stock 62.5 MHz timer' || echo ', cntfrq=24 MHz')$([ "$SHARED_L2" = 1 ] && echo ', shared L2' || echo ', isolated ports + static neighbours')"
  echo "u-boot: $(basename "$(sunxi_fetch armhf u-boot-sunxi)" .deb) Bananapi_M2_Ultra, boot_targets: $TARGETS${USETS:+, ${USETS[*]}}"
  printf '%-6s %-17s' board mac
  for m in "${MARKS[@]}"; do printf ' %8s' "${m%%|*}"; done
  echo "   (seconds after power-on)"
  for i in $(seq 1 "$BOARDS"); do
    printf '%-6s %-17s' "bpi-$i" "${MACS[i]}"
    for m in "${MARKS[@]}"; do t=$(first "$i" "${m#*|}"); printf ' %8s' "${t:--}"; done
    echo
    ack=$(kernel_ack "${MACS[i]}")
    echo "  U-Boot: $(grep -a -m1 -oE 'DHCP client bound to address [0-9.]+' "$OUT/bpi-$i.serial" || echo 'no lease');" \
      "pxelinux: $(grep -a -m1 -oE 'Retrieving file: pxelinux.cfg/01-[0-9a-f-]+' "$OUT/bpi-$i.serial" | sed 's/Retrieving file: //' || echo none)"
    echo "  Linux: $(grep -a -m1 -oE 'eth0: Link is Up[^[:cntrl:]]*' "$OUT/bpi-$i.serial" || echo 'no link');" \
      "$(grep -a -m1 -oE 'dozen: eth0 [^[:cntrl:]]*' "$OUT/bpi-$i.serial" || echo 'no lease line')"
    echo "  server: kernel lease: $(if [ -n "$ack" ]; then echo "$ack" | grep -oE 'DHCPACK.*'; else echo NONE; fi)"
    echo "  TFTP, in order: $(grep -aE "dnsmasq-tftp.*(sent|not found|error).* ${IPS[i]//./\\.}\$" "$OUT/dnsmasq.log" |
      sed -E "s|.*dnsmasq-tftp\[[0-9]+\]: ||; s|$TFTP/||; s| to ${IPS[i]}\$||; s| for ${IPS[i]}\$||" | paste -sd',' - | sed 's/,/, /g')"
    echo "  ping from the server: ${R[$i.ping]:-not tried}; console input: ${R[$i.console]:-not tried}"
    echo "  tap frames: ${TAPSTAT[$i]:-?}${UNWEDGED[i]:+; QMP stop + cont after the 3rd unanswered BOOTP}"
    if grep -aqE 'Unable to handle kernel|Internal error: Oops' "$OUT/bpi-$i.serial"; then
      echo "  OOPS: $(grep -a -m1 -E 'Unable to handle kernel|Internal error: Oops' "$OUT/bpi-$i.serial")"
      echo "        $(grep -a -m1 -E 'PC is at|pc : ' "$OUT/bpi-$i.serial")"
      echo "        $(grep -a -m1 -E 'Kernel panic' "$OUT/bpi-$i.serial")"
    fi
    if [ -z "$(first "$i" ' login: ')" ] || [ -z "$ack" ] || [ "${R[$i.ping]:-}" != ok ] || [ "${R[$i.console]:-FAILED}" = FAILED ]; then
      echo "  FAILED: bpi-$i did not reach login: with a lease from its kernel, ping and console input (serial log: $OUT/bpi-$i.serial)"
      ok=0
    fi
  done
} | tee "$OUT/summary.txt"
grep -q FAILED "$OUT/summary.txt" && ok=0
if [ "$ok" = 1 ]; then log "PASS: every board reached login: with a lease from its own kernel"; else log "FAIL (see $OUT)"; fi
[ "$ok" = 1 ]
