#!/usr/bin/env bash
# Reproduces the embedded default model, models/default/model.safetensors:
# trains GPT-2 (4 layers, 256 channels, 4 heads, context 128) on the
# training texts with quadc train, stores the weights as f16 safetensors,
# plots the loss curves and measures perplexity against a unigram model.
#
#   scripts/train_default.sh [OUTDIR]     # default OUTDIR: models/default
#   QUADC_EVAL_ONLY=1 scripts/train_default.sh   # skip training, evaluate OUTDIR
#
# The training run is seeded (--seed 1337) and single-threaded, so the loss
# trajectory repeats exactly on the same machine. It took 69 minutes on one
# core of a shared 2-core machine (docs/default-model.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/models/default}
quadc=${QUADC:-$root/build/quadc}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

shakespeare=$root/data/train/tinyshakespeare.txt
bible=$root/data/train/kjv_bible.txt

if [[ -z ${QUADC_EVAL_ONLY:-} ]]; then
    "$quadc" train "$root/examples/gpt2.qd" \
        -D n_layer=4 -D n_embd=256 -D n_head=4 -D n_ctx=128 \
        --data "$shakespeare,$bible" \
        --batch 8 --seq 128 --steps 2500 --lr 1e-3 --warmup 200 --min-lr-frac 0.1 \
        --seed 1337 --threads 1 --eval-every 250 --eval-batches 16 \
        --ckpt-dir "$work/ckpt" --ckpt-every 250 \
        --out "$work/model-f32.safetensors" 2> >(tee "$out/train.log" >&2)
    "$quadc" convert "$work/model-f32.safetensors" "$out/model.safetensors" --dtype f16 \
        --meta quadc.train.seed=1337 --meta quadc.train.steps=2500 \
        --meta quadc.train.command=scripts/train_default.sh \
        --meta "quadc.train.data=tinyshakespeare.txt,kjv_bible.txt (last 5% of each held out)"
    "$quadc" plot-log "$out/train.log" -o "$out/loss.png" --smooth 50 \
        --title "quadc default model: GPT-2 4 layers x 256, Shakespeare + KJV Bible"
fi

# quadc train holds out the last 5% of each text's tokens. The last 4% of
# its bytes lies inside that span, so these files contain held-out text only.
for f in "$shakespeare" "$bible"; do
    size=$(stat -c %s "$f")
    tail -c $((size * 4 / 100)) "$f" > "$work/heldout-$(basename "$f")"
done

"$quadc" eval "$root/examples/gpt2.qd" --weights "$out/model.safetensors" \
    --data "$work/heldout-tinyshakespeare.txt" --data "$work/heldout-kjv_bible.txt" \
    --unigram "$shakespeare,$bible"
"$quadc" eval "$root/examples/gpt2.qd" --weights "$out/model.safetensors" \
    --data "$root/data/eval/wiki.test.raw" --max-tokens "${QUADC_WIKI_TOKENS:-50000}" \
    --unigram "$shakespeare,$bible"
