#!/usr/bin/env bash
# Installs the Debian packages DozenCloud and its tests need. Idempotent: installs only what is missing.
# Services shipped by these packages (tftpd-hpa, tgt, docker) are NOT started: the project starts its own.
set -euo pipefail
# shellcheck source=lib/apt-update.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt-update.sh"
PKGS=(
  qemu-system-arm u-boot-qemu u-boot-tools qemu-utils      # virtual lab: emulated ARMv7/arm64 boards with real U-Boot (QEMU 10: below)
  mtools                                                    # the lab's Banana Pi SD cards: a FAT partition holding U-Boot's environment
  iproute2 iptables                                         # netns, bridge, tap
  tftp-hpa tftpd-hpa busybox udhcpc isc-dhcp-client kea-admin curl  # real TFTP/DHCP clients + reference tftpd
  cpio xz-utils zstd                                        # image builder
  tgt libiscsi-bin btrfs-progs xfsprogs                     # iSCSI root disks: tgtd, libiscsi test tools, CoW stores
  e2fsprogs binutils                                        # root disks: mkfs.ext4 -d, debugfs, resize2fs; readelf (armhf libs)
  debootstrap qemu-user-static binfmt-support               # debian-12 image, armhf userlands on x86
  docker.io openssl openssh-server                          # containers (tests start their own dockerd), TLS certs and console password hashes; sshd: the SSH gateway tests' boards
  chromium tmux                                             # browser console test (playwright-core drives Debian's chromium)
  socat ser2net                                             # console tests: real pty pairs standing in for serial lines; a real network serial server
  nftables iputils-arping iputils-ping dnsmasq-base tcpdump # board isolation (nft bridge table) and its attack tests: ARP, rogue DHCP, sniffing
  openssh-client                                            # tenants' ssh into leased boards (e2e)
  kea-dhcp4-server                                          # benchmarks: Kea (memfile) is a DHCP reference beside ours (never started as a service)
  g++ make python3                                          # the native TFTP engine (native/tftp-pump): node-gyp builds it from source
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# QEMU 10 from bookworm-backports: Debian 12's QEMU 7.2 has no Banana Pi M2 Ultra (-M bpim2u). Only the
# three system-emulator packages come from backports; qemu-utils and qemu-user-static stay bookworm's.
BACKPORTS=/etc/apt/sources.list.d/dozen-backports.sources
QEMU_BPO=(qemu-system-arm/bookworm-backports qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports)
qemu_major=$( (dpkg-query -W -f='${Version}' qemu-system-arm 2>/dev/null || true) | sed -E 's/^[0-9]+://; s/[^0-9].*//')  # not installed: empty
need_qemu10=0
[ "${qemu_major:-0}" -ge 10 ] || need_qemu10=1
if [ $need_qemu10 = 1 ]; then # installed from backports below, not from bookworm first
  for i in "${!missing[@]}"; do [ "${missing[$i]}" = qemu-system-arm ] && unset 'missing[i]'; done
  missing=("${missing[@]}")
fi
if [ ${#missing[@]} -eq 0 ] && [ $need_qemu10 = 0 ]; then echo "setup-host: all ${#PKGS[@]} packages present (QEMU $qemu_major)"; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then echo "setup-host: need root to install: ${missing[*]} $([ $need_qemu10 = 1 ] && echo 'QEMU 10 from bookworm-backports')" >&2; exit 1; fi
echo "setup-host: installing ${missing[*]:-}$([ $need_qemu10 = 1 ] && echo ' QEMU 10 (bookworm-backports)')"
# Keep package maintainer scripts from starting daemons (tftpd-hpa would grab port 69).
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
fi
trap '[ $created_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
# Refresh package lists when they are missing or older than a day.
fresh_lists=0
if [ ! -f "$BACKPORTS" ]; then
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' >"$BACKPORTS"
  fresh_lists=1
fi
if [ $fresh_lists = 1 ] || [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
  # Retried (a mirror mid-sync serves inconsistent indexes for minutes). If it still fails, the install
  # below runs on whatever lists apt kept and fails loudly itself when a package cannot be resolved.
  upd_log=$(mktemp)
  apt_update_retrying "$upd_log" -q || { cat "$upd_log" >&2; echo "setup-host: WARNING: apt-get update failed; installing from the lists apt has" >&2; }
  rm -f "$upd_log"
fi
[ ${#missing[@]} -eq 0 ] || apt-get install -y -q --no-install-recommends "${missing[@]}"
[ $need_qemu10 = 0 ] || apt-get install -y -q --no-install-recommends "${QEMU_BPO[@]}"
qemu-system-arm -M help | grep -q '^bpim2u ' || { echo "setup-host: qemu-system-arm has no -M bpim2u after the install" >&2; exit 1; }
echo "setup-host: done"
