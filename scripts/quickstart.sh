#!/usr/bin/env bash
# `npm start`: prepare this machine (packages, modules, images), then serve with the embedded
# default: state under ./data and a virtual lab of 2 emulated ARMv7 boards. Extra args go to `dozen serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare.sh
printf '\n\033[1m==> starting DozenCloud\033[0m\n'
exec bin/dozen serve --config config/lab.json "$@"
