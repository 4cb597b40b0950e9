#!/usr/bin/env bash
# Sets up the machine, builds quadc and runs the main job on the embedded
# default model (models/default, trained by quadc itself):
#   quadc run  float perplexity, PTQ, Quadapter phases 1 and 2, folding,
#              INT8 lowering, object file, header and native executable,
#              and the executable's own perplexity
# then runs the produced executable on a prompt.
#
# Quantization data is WikiText-2 validation, which the model never saw.
# Perplexity is measured in domain (WikiText-2 test) and out of domain
# (held-out Shakespeare and King James Bible text, the pretraining domain).
# Outputs go to demo-out/ (the report is demo-out/report.md, and the IR
# after every pass is under demo-out/ir/).
#
# QUADC_DEMO_EVAL_TOKENS (default 4096) caps the tokens scored per text.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
"$root/scripts/setup.sh"
QUADC_BUILD_TARGET=quadc "$root/scripts/build.sh"   # the tests and benchmarks are not needed here
cd "$root"

out=demo-out
rm -rf "$out"
mkdir -p "$out"

# quadc train held out the last 5% of each training text's tokens; the last
# 4% of the bytes lies inside that span.
for f in tinyshakespeare kjv_bible; do
    size=$(stat -c %s "data/train/$f.txt")
    tail -c $((size * 4 / 100)) "data/train/$f.txt" > "$out/heldout-$f.txt"
done

./build/quadc run examples/gpt2.qd \
    --calib data/eval/wikitext2-v1.valid.tokens \
    --eval "data/eval/wiki.test.raw,$out/heldout-tinyshakespeare.txt,$out/heldout-kjv_bible.txt" \
    --out "$out" --seq 128 --calib-seqs 32 --phase1-steps 50 --phase2-steps 50 \
    --max-eval-tokens "${QUADC_DEMO_EVAL_TOKENS:-4096}" --print-ir-dir "$out/ir"

echo
echo "== the INT8 executable $out/gpt2, which needs neither LLVM nor quadc =="
"$out/gpt2" generate --prompt "ROMEO:" --max-new 60 --seed 1
