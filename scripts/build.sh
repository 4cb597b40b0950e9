#!/usr/bin/env bash
# Configures and builds quadc into build/ (or $QUADC_BUILD_DIR): every
# target, or only $QUADC_BUILD_TARGET (e.g. quadc) when it is set.
# Extra arguments go to cmake's configure step, e.g. -DQUADC_SANITIZE=ON.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QUADC_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=${QUADC_BUILD_TYPE:-Release} "$@" >/dev/null
cmake --build "$build" -j "$(nproc)" ${QUADC_BUILD_TARGET:+--target "$QUADC_BUILD_TARGET"}
