#!/usr/bin/env bash
# Builds the native TFTP data engine (native/tftp-pump, src/boot/tftp/pump.ts) with the node-gyp that
# npm ships, against the headers the nodejs package installs: nothing is downloaded. Idempotent: builds
# again only when its sources or Node's ABI changed.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=native/tftp-pump
out=$dir/build/Release/tftp_pump.node
sum="$(cat $dir/pump.c $dir/binding.gyp | sha256sum | cut -d' ' -f1) abi $(node -p process.versions.modules)"
if [ -f "$out" ] && [ "$(cat $dir/build/.dozen-sum 2>/dev/null)" = "$sum" ]; then
  echo "native: tftp-pump up to date"
  exit 0
fi
gyp="$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js"
[ -f "$gyp" ] || { echo "build-native: node-gyp not found at $gyp (it ships with npm)" >&2; exit 1; }
# node-gyp downloads headers unless told where they are: next to the node binary's prefix (/usr/include/node).
prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
[ -f "$prefix/include/node/node_api.h" ] || { echo "build-native: no Node headers under $prefix/include/node (the nodejs package installs them)" >&2; exit 1; }
for t in cc make python3; do command -v $t >/dev/null || { echo "build-native: $t is missing (scripts/setup-host.sh installs it)" >&2; exit 1; }; done
log=$(mktemp)
if ! (cd $dir && node "$gyp" rebuild --nodedir="$prefix") >"$log" 2>&1; then
  cat "$log" >&2; rm -f "$log"
  echo "build-native: tftp-pump failed to build" >&2
  exit 1
fi
rm -f "$log"
echo "$sum" > $dir/build/.dozen-sum
echo "native: tftp-pump built ($out)"
