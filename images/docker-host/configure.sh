#!/bin/sh
# Runs INSIDE the docker-host root (chroot, armhf or arm64 binaries under qemu-user) after build.sh has
# installed the extra packages and copied images/docker-host/rootfs over it.
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

# docker.socket stays (root:docker 0660, fd:// in daemon.json): the console's `docker` CLI works.
systemctl enable containerd.service docker.service docker.socket dozen-docker-tls.service dozen-docker-fence.service
# The mount point of the data disk: empty, and never written while unmounted (RequiresMountsFor).
rm -rf /var/lib/docker
mkdir -m 710 /var/lib/docker
install -d -m 700 /etc/docker/tls

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/*.log /var/log/apt/* /tmp/* /var/tmp/*
