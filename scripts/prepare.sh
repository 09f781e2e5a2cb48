#!/usr/bin/env bash
# Everything the server and the tests need on this machine, idempotently and with progress:
# Debian packages, node modules (only when package-lock.json changed), the built-in images.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Debian packages"
bash scripts/setup-host.sh

step "node modules"
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.dozen-lock 2>/dev/null)" != "$lock_sum" ]; then
  npm ci --no-audit --no-fund
  echo "$lock_sum" > node_modules/.dozen-lock
else
  echo "node_modules match package-lock.json"
fi

step "native TFTP engine"
bash scripts/build-native.sh

step "images"
bash images/test/build.sh                 # busybox test image (seconds)
bash images/container-armhf/build.sh      # armhf userland for container leases (seconds)
bash images/debian-12/build.sh            # Debian 12 armhf with an iSCSI root (about 8 minutes the first time, cached after)
bash images/docker-host/build.sh --no-base  # Debian 12 + Docker for shared boards, on debian-12's root (about 3 minutes the first time, cached after)

step "lab firmware"
bash scripts/lab-sunxi/make-sd.sh .cache/lab-sunxi/sd/prepare-check.img 02:00:00:00:00:01   # fetches u-boot-sunxi once: the Banana Pi boards' SD cards

step "storage"
bash scripts/setup-storage.sh
