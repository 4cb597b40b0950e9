#!/usr/bin/env bash
# Sets up the machine, builds quadc with warnings as errors and runs every
# test through ctest. QUADC_SANITIZE=1 runs the suite under ASan and UBSan
# in build-asan/.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
"$root/scripts/setup.sh"
if [ "${QUADC_SANITIZE:-0}" = 1 ]; then
  export QUADC_BUILD_DIR=$root/build-asan QUADC_BUILD_TYPE=Debug
  "$root/scripts/build.sh" -DQUADC_WERROR=ON -DQUADC_SANITIZE=ON
else
  export QUADC_BUILD_DIR=$root/build
  "$root/scripts/build.sh" -DQUADC_WERROR=ON
fi
cd "$QUADC_BUILD_DIR"
ctest --output-on-failure -j "$(nproc)"
