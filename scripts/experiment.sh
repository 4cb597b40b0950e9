#!/usr/bin/env bash
# Compares quantization methods on a GPT-2 model in the setting of the
# Quadapter paper (Park et al., "Quadapter: Adapter for GPT-2 Quantization",
# Findings of EMNLP 2022). The quantization fine-tuning data is WikiText-2
# validation text, which pretraining never saw. Every model is scored
# in-domain on WikiText-2 test and out of domain on text held out from the
# pretraining data.
#
#   scripts/experiment.sh [--weights FILE] [--quick] [options]
#
# Rows: FP32, PTQ, SmoothQuant, QAT, Quadapter phase 1 only, phase 2 only
# and both phases. Columns: perplexity on WikiText-2 test, on the held-out
# Shakespeare and Bible text, and LAMBADA last-word accuracy, at W8A8 and at
# the harder of W8A6 and W4A8 (the one where PTQ loses more WikiText-2
# perplexity). At the harder setting, QAT and Quadapter also run on 1% and
# 10% of the fine-tuning text. The script writes the table, the commands,
# the seed, the machine and the run time to docs/results.md (--results).
#
# --weights takes any GPT-2 safetensors file that examples/gpt2.qd accepts:
# the embedded default model (the default), or Hugging Face GPT-2 small.
# The default budget is about 19 minutes of CPU time for the default model
# (4 layers of 256 channels), an estimate from single runs of each step on
# a loaded 2-core machine, so 20-30 minutes of wall-clock time on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    cat <<EOF
usage: scripts/experiment.sh [options]

  --weights FILE        float GPT-2 weights, safetensors
                        (default: models/default/model.safetensors)
  --quadc FILE          the quadc binary (default: \$QUADC or build/quadc)
  --out DIR             models, logs and reports (default: a new directory
                        under \${TMPDIR:-/tmp})
  --results FILE        the Markdown results (default: docs/results.md)
  --bits-hard wBaB      the harder setting; default: w8a6 or w4a8, whichever
                        costs PTQ more WikiText-2 perplexity
  --quick               a small budget to check that the script runs; its
                        numbers mean little
  --threads N           threads of every quadc command (default 0: all cores)
  --help                print this help
EOF
}

log() {
    printf '[%4ds] %s\n' $((SECONDS - start_seconds)) "$*" >&2
}

# Runs a command, records it in $commands and keeps its standard error in
# the log file $1, which is printed when the command fails.
run() {
    local logfile=$1
    shift
    printf '%s\n' "$*" >> "$commands"
    if ! "$@" 2> "$logfile"; then
        cat "$logfile" >&2
        echo "experiment.sh: error: command failed: $*" >&2
        exit 1
    fi
}

# Writes the held-out texts and the fine-tuning subsets into $out.
prepare_data() {
    # quadc train --val-frac 0.05 holds out the last 5% of each text's
    # tokens. The last 4% of its bytes lies inside that span (as in
    # scripts/train_default.sh), so these files contain held-out text only.
    local f size pct
    for f in tinyshakespeare kjv_bible; do
        size=$(stat -c %s "$root/data/train/$f.txt")
        tail -c $((size * 4 / 100)) "$root/data/train/$f.txt" > "$out/heldout-$f.txt"
    done
    # The first 1% and 10% of the fine-tuning text, cut at a line end.
    size=$(stat -c %s "$calib")
    for pct in 1 10; do
        head -c $((size * pct / 100)) "$calib" | sed '$d' > "$out/calib-$pct.txt"
    done
}

# Prints column $2 of the scores of model $1, or "-" when it has none.
score() {
    local file=$out/$1.scores column=$2
    if [[ -f $file ]]; then
        awk -v c="$column" '{ print $c }' "$file"
    else
        echo "-"
    fi
}

# Scores the weights $1 as model $2: writes the perplexities of WikiText-2,
# Shakespeare and Bible, the LAMBADA accuracy and the LAMBADA perplexity to
# $out/$2.scores.
evaluate() {
    local weights_file=$1 name=$2
    log "evaluating $name"
    run "$out/$name.eval.log" "$quadc" eval "$model" --weights "$weights_file" --threads "$threads" \
        --cache-dir "$cache" --ctx "$SEQ" --data "$wiki" --max-tokens "$EVAL_TOKENS" > "$out/$name.wiki.txt"
    run "$out/$name.eval.log" "$quadc" eval "$model" --weights "$weights_file" --threads "$threads" \
        --cache-dir "$cache" --ctx "$SEQ" --max-tokens "$OOD_TOKENS" \
        --data "$out/heldout-tinyshakespeare.txt" --data "$out/heldout-kjv_bible.txt" \
        --lambada "$lambada" --max-examples "$LAMBADA_EXAMPLES" > "$out/$name.ood.txt"
    local wiki_ppl shakespeare_ppl bible_ppl accuracy lambada_ppl
    wiki_ppl=$(sed -n 's/.* perplexity \([0-9.]*\),.*/\1/p' "$out/$name.wiki.txt")
    shakespeare_ppl=$(grep heldout-tinyshakespeare "$out/$name.ood.txt" | sed -n 's/.* perplexity \([0-9.]*\),.*/\1/p')
    bible_ppl=$(grep heldout-kjv_bible "$out/$name.ood.txt" | sed -n 's/.* perplexity \([0-9.]*\),.*/\1/p')
    accuracy=$(grep lambada "$out/$name.ood.txt" | sed -n 's/.* accuracy \([0-9.]*\) .*/\1/p')
    lambada_ppl=$(grep lambada "$out/$name.ood.txt" | sed -n 's/.* perplexity \([0-9.]*\),.*/\1/p')
    echo "$wiki_ppl $shakespeare_ppl $bible_ppl $accuracy $lambada_ppl" > "$out/$name.scores"
    log "$name: WikiText-2 $wiki_ppl, Shakespeare $shakespeare_ppl, Bible $bible_ppl," \
        "LAMBADA accuracy $accuracy, perplexity $lambada_ppl"
}

# Quantizes with method $2 at bits $3 on calibration text $4 and scores
# the result as model $1. Extra quadc quantize options follow.
quantize() {
    local name=$1 method=$2 bits=$3 text=$4
    shift 4
    log "quantizing $name"
    run "$out/$name.quantize.log" "$quadc" quantize "$model" --weights "$weights" --method "$method" \
        --bits "$bits" --calib "$text" --calib-seqs "$CALIB_SEQS" --data-frac 1 --seq "$SEQ" \
        --seed "$SEED" --threads "$threads" --cache-dir "$cache" \
        --out "$out/$name.safetensors" --report "$out/$name.report.md" "$@" > /dev/null
    evaluate "$out/$name.safetensors" "$name"
    rm -f "$out/$name.safetensors"
}

# Runs the methods $4... at bits $1 on calibration text $2 as the models
# METHOD-BITS$3.
quantize_methods() {
    local bits=$1 text=$2 suffix=$3 method
    shift 3
    for method in "$@"; do
        case $method in
        ptq | smoothquant) quantize "$method-$bits$suffix" "$method" "$bits" "$text" ;;
        qat) quantize "qat-$bits$suffix" qat "$bits" "$text" --phase2-steps "$STEPS2" --lr "$LR_QAT" ;;
        phase1) quantize "phase1-$bits$suffix" quadapter "$bits" "$text" --phase1-steps "$STEPS1" \
                    --phase2-steps 0 --lr "$LR_QUADAPTER" ;;
        phase2) quantize "phase2-$bits$suffix" quadapter "$bits" "$text" --phase1-steps 0 \
                    --phase2-steps "$STEPS2" --lr "$LR_QUADAPTER" ;;
        quadapter) quantize "quadapter-$bits$suffix" quadapter "$bits" "$text" --phase1-steps "$STEPS1" \
                       --phase2-steps "$STEPS2" --lr "$LR_QUADAPTER" ;;
        esac
    done
}

# Prints the five scores of model $1 as Markdown table cells.
cells() {
    printf '%s | %s | %s | %s | %s' "$(score "$1" 1)" "$(score "$1" 2)" "$(score "$1" 3)" "$(score "$1" 4)" \
        "$(score "$1" 5)"
}

header="WikiText-2 test ppl | Shakespeare held-out ppl | Bible held-out ppl | LAMBADA accuracy | LAMBADA ppl"

row() {
    printf '| %s | %s |\n' "$1" "$(cells "$2")"
}

table() {
    local bits=$1
    echo "| method | $header |"
    echo "|---|---|---|---|---|---|"
    row "FP32" fp32
    row "PTQ" "ptq-$bits"
    row "SmoothQuant" "smoothquant-$bits"
    row "QAT" "qat-$bits"
    row "Quadapter phase 1 only" "phase1-$bits"
    row "Quadapter phase 2 only" "phase2-$bits"
    row "Quadapter (both phases)" "quadapter-$bits"
}

ablation_table() {
    local method label pct name
    echo "| method | data | $header |"
    echo "|---|---|---|---|---|---|---|"
    for method in qat quadapter; do
        label=QAT
        [[ $method == quadapter ]] && label=Quadapter
        for pct in 1 10 100; do
            name=$method-$bits_hard-data$pct
            [[ $pct == 100 ]] && name=$method-$bits_hard
            printf '| %s | %s%% | %s |\n' "$label" "$pct" "$(cells "$name")"
        done
    done
}

# Writes the Markdown results of a run of $1 seconds to $results.
write_results() {
    local seconds=$1 other_hard=w8a6 cpu
    [[ $bits_hard == w8a6 ]] && other_hard=w4a8
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    {
        echo "# Quantization results"
        echo
        echo "Written by \`scripts/experiment.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') from quadc commit"
        echo "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)."
        echo "Weights: \`$weights\` (sha256 $(sha256sum "$weights" | cut -c1-16)...)."
        echo "Machine: $cpu, $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB memory, threads"
        echo "$threads (0 = one per core); load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
        echo "Run time: $((seconds / 60)) min $((seconds % 60)) s$([[ $quick == 1 ]] && echo ", with --quick")."
        echo
        echo "## Setting"
        echo
        echo "- Quantization fine-tuning and calibration: \`data/eval/wikitext2-v1.valid.tokens\`,"
        echo "  $CALIB_SEQS sequences of $SEQ + 1 tokens at offsets drawn with seed $SEED."
        echo "- Quadapter: $STEPS1 phase 1 steps per block, $STEPS2 phase 2 steps, lr $LR_QUADAPTER."
        echo "  QAT: $STEPS2 steps, lr $LR_QAT, every model weight trained. One sequence per step,"
        echo "  AdamW, min-max ranges, activations per tensor and weights per output channel."
        echo "- In-domain: perplexity of the first $EVAL_TOKENS tokens of \`data/eval/wiki.test.raw\`."
        echo "- Out of domain: perplexity of the first $OOD_TOKENS tokens of the last 4% of"
        echo "  \`data/train/tinyshakespeare.txt\` and of \`data/train/kjv_bible.txt\` (text that"
        echo "  \`quadc train --val-frac 0.05\` held out), and last-word accuracy and perplexity"
        echo "  per word on the first $LAMBADA_EXAMPLES examples of \`data/eval/lambada_test.jsonl\`."
        echo "- Perplexity uses windows of $SEQ tokens that move by $((SEQ / 2))."
        echo "- Harder setting: $bits_hard. PTQ WikiText-2 perplexity: W8A8 $(score ptq-w8a8 1),"
        echo "  $bits_hard $(score "ptq-$bits_hard" 1), $other_hard $(score "ptq-$other_hard" 1)."
        echo
        echo "## W8A8"
        echo
        table w8a8
        echo
        echo "## $bits_hard"
        echo
        table "$bits_hard"
        echo
        echo "## Limited fine-tuning data ($bits_hard)"
        echo
        echo "The same number of sequences and steps, drawn from the first 1% or 10% of the"
        echo "fine-tuning text instead of all of it."
        echo
        ablation_table
        echo
        echo "## Commands"
        echo
        echo '```'
        sed -e "s|$out|\$OUT|g" -e "s|$root/||g" "$commands"
        echo '```'
    } > "$results"
}

main() {
    weights=$root/models/default/model.safetensors
    quadc=${QUADC:-$root/build/quadc}
    out=""
    results=$root/docs/results.md
    bits_hard=""
    quick=0
    threads=0
    while [[ $# -gt 0 ]]; do
        case $1 in
        --weights) weights=$2; shift 2 ;;
        --quadc) quadc=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        --bits-hard) bits_hard=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        --threads) threads=$2; shift 2 ;;
        --help | -h) usage; exit 0 ;;
        *) echo "experiment.sh: error: unknown option '$1'; see --help" >&2; exit 2 ;;
        esac
    done
    if [[ ! -f $weights ]]; then
        echo "experiment.sh: error: weights file '$weights' not found; train it with" \
            "scripts/train_default.sh or pass --weights FILE" >&2
        exit 1
    fi
    if [[ ! -x $quadc ]]; then
        echo "experiment.sh: error: quadc binary '$quadc' not found; build it with scripts/build.sh" \
            "or pass --quadc FILE" >&2
        exit 1
    fi
    if [[ -n $bits_hard && ! $bits_hard =~ ^w[2-8]a[2-8]$ ]]; then
        echo "experiment.sh: error: invalid --bits-hard '$bits_hard': expected w<2-8>a<2-8>, for example w4a8" >&2
        exit 2
    fi
    out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/quadc-experiment.XXXXXX")}
    mkdir -p "$out"

    # The budget. Quadapter trains phase 1 for STEPS1 steps per block and
    # phase 2 for STEPS2 steps, QAT for STEPS2 steps, each step on one
    # sequence of SEQ tokens drawn from CALIB_SEQS calibration sequences.
    # Each model is scored on the first EVAL_TOKENS tokens of WikiText-2
    # test, OOD_TOKENS of each held-out text and LAMBADA_EXAMPLES examples.
    SEED=1
    SEQ=128
    CALIB_SEQS=32
    STEPS1=50
    STEPS2=100
    LR_QUADAPTER=1e-3
    LR_QAT=1e-4
    EVAL_TOKENS=16384
    OOD_TOKENS=4096
    LAMBADA_EXAMPLES=200
    if [[ $quick == 1 ]]; then
        CALIB_SEQS=8
        STEPS1=2
        STEPS2=4
        EVAL_TOKENS=512
        OOD_TOKENS=256
        LAMBADA_EXAMPLES=20
    fi

    model=$root/examples/gpt2.qd
    calib=$root/data/eval/wikitext2-v1.valid.tokens
    wiki=$root/data/eval/wiki.test.raw
    lambada=$root/data/eval/lambada_test.jsonl
    cache=$out/cache
    commands=$out/commands.txt
    : > "$commands"
    start_seconds=$SECONDS

    log "writing models and logs to $out"
    prepare_data
    evaluate "$weights" fp32
    quantize_methods w8a8 "$calib" "" ptq
    # The harder setting is the one of W8A6 and W4A8 where PTQ loses more
    # WikiText-2 perplexity, because at W8A8 every method stays close to
    # FP32.
    if [[ -z $bits_hard ]]; then
        quantize_methods w8a6 "$calib" "" ptq
        quantize_methods w4a8 "$calib" "" ptq
        bits_hard=$(awk -v w8a6="$(score ptq-w8a6 1)" -v w4a8="$(score ptq-w4a8 1)" \
            'BEGIN { print (w4a8 + 0 > w8a6 + 0) ? "w4a8" : "w8a6" }')
        log "harder setting: $bits_hard"
    else
        quantize_methods "$bits_hard" "$calib" "" ptq
    fi
    quantize_methods w8a8 "$calib" "" smoothquant qat phase1 phase2 quadapter
    quantize_methods "$bits_hard" "$calib" "" smoothquant qat phase1 phase2 quadapter
    local pct
    for pct in 1 10; do
        quantize_methods "$bits_hard" "$out/calib-$pct.txt" "-data$pct" qat quadapter
    done

    local seconds=$((SECONDS - start_seconds))
    log "done in $((seconds / 60)) min $((seconds % 60)) s"
    write_results "$seconds"
    log "wrote $results"
}

main "$@"
