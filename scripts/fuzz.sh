#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.c) into build-fuzz/ with
# clang-19, ASan and UBSan, and runs each for a bounded time.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET defaults to 60. Without TARGETs every fuzz_* target
#   runs. Each target starts from build-fuzz/corpus/TARGET, which is kept
#   between runs, from tests/fuzz/corpus/TARGET if it exists, and from the
#   seeds that tests/fuzz/make_seeds.py writes for it.
#   tests/fuzz/NAME.dict, if it exists, is the dictionary of fuzz_NAME.
#   Crash inputs go to build-fuzz/crashes/. QUADC_FUZZ_BUILD_DIR overrides
#   the build directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QUADC_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${1:-60}
if [ $# -gt 0 ]; then
  shift
fi
case $seconds in
  '' | *[!0-9]*) echo "fuzz.sh: error: SECONDS_PER_TARGET must be a whole number, got '$seconds'" >&2; exit 2 ;;
esac

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for src in "$root"/tests/fuzz/fuzz_*.c; do
    targets+=("$(basename "$src" .c)")
  done
fi

# -fsanitize=fuzzer-no-link instruments quadc_core as well, so coverage
# guides the fuzzer inside the library and not only in the target file.
cmake -S "$root" -B "$build" -DQUADC_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-19 -DCMAKE_CXX_COMPILER=clang++-19 \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" >/dev/null
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

if [ -x "$root/tests/fuzz/make_seeds.py" ]; then
  python3 "$root/tests/fuzz/make_seeds.py" "$build/seeds" >/dev/null
fi

mkdir -p "$build/crashes"
failed=()
for target in "${targets[@]}"; do
  name=${target#fuzz_}
  corpus=("$build/corpus/$target")
  mkdir -p "${corpus[0]}"
  for seeds in "$root/tests/fuzz/corpus/$target" "$build/seeds/$name"; do
    if [ -d "$seeds" ]; then
      corpus+=("$seeds")
    fi
  done
  options=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096
           -artifact_prefix="$build/crashes/$target-" -print_final_stats=1)
  if [ -f "$root/tests/fuzz/$name.dict" ]; then
    options+=(-dict="$root/tests/fuzz/$name.dict")
  fi
  echo "fuzz.sh: running $target for ${seconds}s"
  if ! "$build/tests/$target" "${options[@]}" "${corpus[@]}" 2>"$build/$target.log"; then
    failed+=("$target")
    tail -n 40 "$build/$target.log" >&2
  else
    grep -E "^stat::number_of_executed_units|^Done" "$build/$target.log" || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]}; the inputs are in $build/crashes/" >&2
  exit 1
fi
echo "fuzz.sh: all ${#targets[@]} targets ran ${seconds}s without a failure"
