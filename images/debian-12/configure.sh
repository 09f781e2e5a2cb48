#!/bin/sh
# Runs INSIDE the image's root (chroot; armhf or arm64 binaries under qemu-arm / qemu-aarch64) after
# build.sh has copied images/debian-12/rootfs over it: enables our units and strips what must differ
# per board. (The initramfs was built by base.sh, with rootfs/'s initramfs configuration.)
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

systemctl enable systemd-networkd.service systemd-resolved.service dozen-firstboot.service

# Per-board identity must not be baked in: host keys and the machine id are made on first boot,
# the initiator name comes from the kernel command line (dozen-firstboot).
rm -f /etc/ssh/ssh_host_*
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id

# Root is locked: tenants log in with their SSH keys (or as root on the console once they set a password).
passwd -l root >/dev/null

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/*.log /var/log/apt/* /tmp/* /var/tmp/*
