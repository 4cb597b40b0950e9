#!/usr/bin/env bash
# Sets up the machine, builds quadc and runs the main job on the embedded
# default configuration: compile examples/gpt2.qd and print the IR after
# every pass of the default pipeline.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$root"
# The embedded default's shape: 4 layers of width 256, 4 heads, a 128-token
# context, one sequence of 64 tokens.
./build/quadc compile examples/gpt2.qd \
  -D n_layer=4 -D n_embd=256 -D n_head=4 -D n_ctx=128 -D B=1 -D T=64 \
  --verify-each --print-ir-after-all
