#!/usr/bin/env bash
# Rebuilds the demo model from scratch, deterministically (docs/demo-model.md): a byte-level BPE
# tokenizer trained on the ELTeC French + English training novels, configs/demo-v3.json (a small
# DeepSeek-V3: MLA, shared + routed experts with noaux_tc routing, one MTP layer) trained with
# fixed seed and hyper-parameters, then the held-out perplexity of each language's validation
# file and sample continuations, written to OUT/REPORT.md.
#
# Usage: scripts/train_demo.sh [--steps N | --minutes N] [--out DIR] [--resume] [--ppl-max-tokens N]
#   --steps N       optimizer steps (default 2500: about 1 hour at ~1.4k tokens/s on 2 cores)
#   --minutes N     steps for about N minutes at $DEMO_TOKENS_PER_SECOND (default 1400) tokens/s
#   --out DIR       output directory (default .deps/demo-train)
#   --resume        continue from the newest OUT/step-N (same options, bit-identical result)
#   --ppl-max-tokens N  score only the first N tokens of each validation file (0: all, default)
# Environment: DSEEK (the binary, default build/dseek), CORPORA (default ../shared/corpora),
# THREADS (default: all cores). The run is a function of the options, not of the thread count.
set -euo pipefail
cd "$(dirname "$0")/.."

DSEEK=${DSEEK:-build/dseek}
CORPORA=${CORPORA:-../shared/corpora}
OUT=.deps/demo-train
STEPS=2500
RESUME=0
PPL_MAX=0
THREADS_FLAG=()
[ -n "${THREADS:-}" ] && THREADS_FLAG=(-t "$THREADS")

# The recipe. Changing any of these changes the model; docs/demo-model.md explains the choices.
VOCAB=8192          # 8192 vs 16384: 16k ids cut tokens only 7% but double the costly output softmax
SEQ_LEN=256
BATCH=8             # 2048 tokens per step: many small steps suit a run of a few million tokens
LR=2e-3
MIN_LR=2e-4
WARMUP=100
MTP_WEIGHT=0.3      # DeepSeek-V3's lambda for the first 10T tokens
BIAS_SPEED=0.003    # DeepSeek's 0.001 is for ~10^5 steps; at 0.001 a 150-step run left max/mean load ~4
SEED=1234

die() { echo "train_demo.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS=${2:?--steps needs a number}; shift 2 ;;
    --minutes) STEPS=$(( ${2:?--minutes needs a number} * 60 * ${DEMO_TOKENS_PER_SECOND:-1400} / (BATCH * SEQ_LEN) )); shift 2 ;;
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --resume) RESUME=1; shift ;;
    --ppl-max-tokens) PPL_MAX=${2:?--ppl-max-tokens needs a number}; shift 2 ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$STEPS" =~ ^[0-9]+$ && "$STEPS" -gt 0 ]] || die "--steps/--minutes: expected a positive number of steps, got $STEPS"
[ -x "$DSEEK" ] || die "$DSEEK: no dseek binary (build it: cmake --build build --target dseek, or set DSEEK)"
for f in eltec-en-train eltec-fr-train eltec-en-valid eltec-fr-valid; do
  [ -f "$CORPORA/$f.txt" ] || die "$CORPORA/$f.txt: missing (set CORPORA to the ELTeC corpora directory)"
done
mkdir -p "$OUT"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # other programs may share the cores
LOG="$OUT/train.log"

# 1. Tokenizer (deterministic: same corpora, same merges).
if [ ! -f "$OUT/tokenizer/tokenizer.json" ]; then
  "$DSEEK" tokenizer-train "$CORPORA/eltec-en-train.txt" "$CORPORA/eltec-fr-train.txt" --vocab "$VOCAB" \
    -o "$OUT/tokenizer"
fi

# 2. Training. Checkpoints every 250 steps; --resume picks the newest.
TRAIN_ARGS=(--tokenizer "$OUT/tokenizer" --data "$CORPORA/eltec-en-train.txt" "$CORPORA/eltec-fr-train.txt"
            -o "$OUT" --steps "$STEPS" --eval-every 100 --eval-batches 8 --save-every 250 "${THREADS_FLAG[@]}")
if [ "$RESUME" = 1 ]; then
  last=$(ls -d "$OUT"/step-* 2>/dev/null | sed 's/.*step-//' | sort -n | tail -1)
  [ -n "$last" ] || die "$OUT: no step-N checkpoint to resume from"
  echo "train_demo.sh: resuming from $OUT/step-$last" | tee -a "$LOG"
  "$DSEEK" train --resume "$OUT/step-$last" "${TRAIN_ARGS[@]}" 2>&1 | tee -a "$LOG" || die "dseek train failed (see $LOG)"
else
  [ -d "$OUT/final" ] && die "$OUT/final exists: use --resume, another --out, or remove it"
  "$DSEEK" train --config configs/demo-v3.json --batch "$BATCH" --seq-len "$SEQ_LEN" --lr "$LR" --min-lr "$MIN_LR" \
    --warmup "$WARMUP" --mtp-weight "$MTP_WEIGHT" --bias-update-speed "$BIAS_SPEED" --seed "$SEED" "${TRAIN_ARGS[@]}" 2>&1 | tee "$LOG" || die "dseek train failed (see $LOG)"
fi

# 3. Held-out perplexity per language (other novels than the training ones).
declare -A PPL
for lang in en fr; do
  PPL[$lang]=$("$DSEEK" perplexity -m "$OUT/final" --file "$CORPORA/eltec-$lang-valid.txt" --ctx "$SEQ_LEN" \
    --max-tokens "$PPL_MAX" "${THREADS_FLAG[@]}")
  echo "${PPL[$lang]}"
done

# 4. Sample continuations (raw text, no chat format: the model is a plain language model).
PROMPTS=("It was a dark and stormy night, and" "She looked at him and said:" "The old house stood"
         "Il était une fois" "Le lendemain matin, elle" "Monsieur, dit-il,")
SAMPLES=""
for p in "${PROMPTS[@]}"; do
  text=$("$DSEEK" run -m "$OUT/final" --raw -p "$p" -n 60 --temp 0.8 --top-p 0.95 --seed 7 "${THREADS_FLAG[@]}" 2>/dev/null)
  SAMPLES+="- **${p}** ${text//$'\n'/ }"$'\n'
done

# 5. The report.
{
  echo "# Demo model report"
  echo
  echo "Made by \`scripts/train_demo.sh --steps $STEPS\` on $(date -u +%Y-%m-%d) ($(nproc) cores); model: \`$OUT/final\`."
  echo
  echo "## Training"
  echo
  echo '```'
  grep -E "parameters|held-out|steps, " "$LOG" | tail -40
  echo '```'
  echo
  echo "## Held-out perplexity (dseek perplexity, ctx $SEQ_LEN, non-overlapping windows)"
  echo
  echo "| language | result |"
  echo "|---|---|"
  echo "| English | ${PPL[en]} |"
  echo "| French | ${PPL[fr]} |"
  echo
  echo "## Samples (temperature 0.8, top-p 0.95, seed 7, 60 tokens)"
  echo
  printf '%s' "$SAMPLES"
} > "$OUT/REPORT.md"
echo "train_demo.sh: wrote $OUT/REPORT.md"
