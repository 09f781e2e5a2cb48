#!/usr/bin/env bash
# Installs the Debian packages DozenCloud and its tests need. Idempotent: installs only what is missing.
# Services shipped by these packages (tftpd-hpa, tgt, docker) are NOT started: the project starts its own.
set -euo pipefail
PKGS=(
  qemu-system-arm u-boot-qemu u-boot-tools qemu-utils      # virtual lab: emulated ARMv7 boards with real U-Boot
  iproute2 iptables                                         # netns, bridge, tap
  tftp-hpa tftpd-hpa busybox udhcpc isc-dhcp-client kea-admin curl  # real TFTP/DHCP clients + reference tftpd
  cpio xz-utils zstd                                        # image builder
  tgt libiscsi-bin btrfs-progs xfsprogs                     # iSCSI root disks: tgtd, libiscsi test tools, CoW stores
  e2fsprogs binutils                                        # root disks: mkfs.ext4 -d, debugfs, resize2fs; readelf (armhf libs)
  debootstrap qemu-user-static binfmt-support               # debian-12 image, armhf userlands on x86
  docker.io openssl                                         # container fallback (tests start their own dockerd; openssl: its TLS certs)
  chromium tmux                                             # browser console test (playwright-core drives Debian's chromium)
  socat ser2net                                             # console tests: real pty pairs standing in for serial lines; a real network serial server
  nftables iputils-arping iputils-ping dnsmasq-base tcpdump # board isolation (nft bridge table) and its attack tests: ARP, rogue DHCP, sniffing
  openssh-client                                            # tenants' ssh into leased boards (e2e)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then echo "setup-host: all ${#PKGS[@]} packages present"; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then echo "setup-host: need root to install: ${missing[*]}" >&2; exit 1; fi
echo "setup-host: installing ${missing[*]}"
# Keep package maintainer scripts from starting daemons (tftpd-hpa would grab port 69).
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
fi
trap '[ $created_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
# Refresh package lists when they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
  apt-get update -q
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup-host: done"
