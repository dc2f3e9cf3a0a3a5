#!/usr/bin/env bash
# Rebuilds the demo model from scratch, deterministically (docs/demo-model.md): a byte-level BPE
# tokenizer trained on the ELTeC French + English training novels, configs/demo-v3.json (a small
# DeepSeek-V3: MLA, shared + routed experts with noaux_tc routing, one MTP layer) pre-trained
# with fixed seed and hyper-parameters, then a full chat fine-tune (dseek finetune) on
# conversations cut from the same training novels ("here is the start of a paragraph" -> its
# continuation), the held-out perplexity of each language's validation file for both models,
# and samples; all written to OUT/REPORT.md. --install copies the chat model to models/demo, the
# project's default model.
#
# Usage: scripts/train_demo.sh [--steps N | --minutes N] [--out DIR] [--resume] [--ppl-max-tokens N] [--install]
#   --steps N       pre-training optimizer steps (default 2500: about 1 hour at ~1.4k tokens/s on 2 cores)
#   --minutes N     steps for about N minutes at $DEMO_TOKENS_PER_SECOND (default 1400) tokens/s
#   --out DIR       output directory (default .deps/demo-train)
#   --resume        continue pre-training from the newest OUT/step-N (same options, bit-identical result)
#   --ppl-max-tokens N  score only the first N tokens of each validation file (0: all, default)
#   --install       copy the chat model into models/demo (the default model of dseek run/chat/serve)
# Stages whose output exists are skipped (OUT/final: pre-training, OUT/chat: fine-tuning), so a
# finished run only re-evaluates. Environment: DSEEK (the binary, default build/dseek), CORPORA
# (default ../shared/corpora), THREADS (default: all cores). The run is a function of the
# options, not of the thread count.
set -euo pipefail
cd "$(dirname "$0")/.."

DSEEK=${DSEEK:-build/dseek}
CORPORA=${CORPORA:-../shared/corpora}
OUT=.deps/demo-train
STEPS=2500
RESUME=0
PPL_MAX=0
INSTALL=0
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
CHAT_PER_LANGUAGE=1500  # conversations cut from each training file for the chat fine-tune
CHAT_LR=3e-4            # full fine-tune, one pass, 16 conversations per step, 10 warm-up steps, cosine
CHAT_BATCH=16           # one conversation per step (batch 1) raised the loss: 4.64 -> 4.79

die() { echo "train_demo.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS=${2:?--steps needs a number}; shift 2 ;;
    --minutes) STEPS=$(( ${2:?--minutes needs a number} * 60 * ${DEMO_TOKENS_PER_SECOND:-1400} / (BATCH * SEQ_LEN) )); shift 2 ;;
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --resume) RESUME=1; shift ;;
    --ppl-max-tokens) PPL_MAX=${2:?--ppl-max-tokens needs a number}; shift 2 ;;
    --install) INSTALL=1; shift ;;
    -h|--help) sed -n 2,23p "$0"; exit 0 ;;
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
elif [ -f "$OUT/final/model.safetensors" ]; then
  echo "train_demo.sh: $OUT/final exists: pre-training done, skipping it"
else
  "$DSEEK" train --config configs/demo-v3.json --batch "$BATCH" --seq-len "$SEQ_LEN" --lr "$LR" --min-lr "$MIN_LR" \
    --warmup "$WARMUP" --mtp-weight "$MTP_WEIGHT" --bias-update-speed "$BIAS_SPEED" --seed "$SEED" "${TRAIN_ARGS[@]}" 2>&1 | tee "$LOG" || die "dseek train failed (see $LOG)"
fi

# 3. Chat fine-tune: conversations cut from the training novels (tools/demo/make_chat_data.mjs),
# loss on the assistant turns only, in the model's chat format (DeepSeek-V3's).
CHAT="$OUT/chat"
if [ ! -f "$CHAT/model.safetensors" ]; then
  command -v node > /dev/null || die "node: not found (scripts/setup.sh installs it)"
  node tools/demo/make_chat_data.mjs "$OUT/chat.jsonl" "$CORPORA/eltec-en-train.txt" "$CORPORA/eltec-fr-train.txt" \
    --per-file "$CHAT_PER_LANGUAGE" --seed "$SEED"
  "$DSEEK" finetune -m "$OUT/final" --data "$OUT/chat.jsonl" -o "$CHAT" --epochs 1 --batch "$CHAT_BATCH" --warmup 10 \
    --lr "$CHAT_LR" --seed "$SEED" \
    "${THREADS_FLAG[@]}" 2>&1 | tee "$OUT/finetune.log" || die "dseek finetune failed (see $OUT/finetune.log)"
  # Sampling defaults for dseek run/chat/serve: greedy decoding of a model this small loops.
  printf '{\n  "do_sample": true,\n  "temperature": 0.7,\n  "top_p": 0.9,\n  "repetition_penalty": 1.1\n}\n' \
    > "$CHAT/generation_config.json"
fi

# 4. Held-out perplexity per language (other novels than the training ones), both models.
declare -A PPL
for model in final chat; do
  for lang in en fr; do
    PPL[$model-$lang]=$("$DSEEK" perplexity -m "$OUT/$model" --file "$CORPORA/eltec-$lang-valid.txt" --ctx "$SEQ_LEN" \
      --max-tokens "$PPL_MAX" "${THREADS_FLAG[@]}")
    echo "$model: ${PPL[$model-$lang]}"
  done
done

# 5. Samples: raw continuations of the pre-trained model, chat answers of the fine-tuned one.
PROMPTS=("It was a dark and stormy night, and" "She looked at him and said:" "The old house stood"
         "Il était une fois" "Le lendemain matin, elle" "Monsieur, dit-il,")
RAW_SAMPLES=""
CHAT_SAMPLES=""
for p in "${PROMPTS[@]}"; do
  text=$("$DSEEK" run -m "$OUT/final" --raw -p "$p" -n 60 --temp 0.8 --top-p 0.95 --seed 7 "${THREADS_FLAG[@]}" 2>/dev/null)
  RAW_SAMPLES+="- **${p}** ${text//$'\n'/ }"$'\n'
  text=$("$DSEEK" run -m "$CHAT" -p "$p" -n 80 --seed 7 "${THREADS_FLAG[@]}" 2>/dev/null)
  CHAT_SAMPLES+="- **${p}** → ${text//$'\n'/ }"$'\n'
done

# 6. The report.
{
  echo "# Demo model report"
  echo
  echo "Made by \`scripts/train_demo.sh --steps $STEPS\` on $(date -u +%Y-%m-%d) ($(nproc) cores); models: \`$OUT/final\` (pre-trained), \`$CHAT\` (chat)."
  echo
  echo "## Pre-training"
  echo
  echo '```'
  grep -E "parameters|held-out|steps, " "$LOG" | tail -40
  echo '```'
  echo
  echo "## Chat fine-tune"
  echo
  echo '```'
  tr '\r' '\n' < "$OUT/finetune.log" | grep -E "conversations|assistant turns|wrote" | tail -5
  echo '```'
  echo
  echo "## Held-out perplexity (dseek perplexity, ctx $SEQ_LEN, non-overlapping windows)"
  echo
  echo "| model | language | result |"
  echo "|---|---|---|"
  for model in final chat; do
    echo "| $model | English | ${PPL[$model-en]} |"
    echo "| $model | French | ${PPL[$model-fr]} |"
  done
  echo
  echo "## Pre-trained model: raw continuations (temperature 0.8, top-p 0.95, seed 7, 60 tokens)"
  echo
  printf '%s' "$RAW_SAMPLES"
  echo
  echo "## Chat model: answers in the chat format (its generation_config: temperature 0.7, top-p 0.9, repetition penalty 1.1; seed 7, 80 tokens)"
  echo
  printf '%s' "$CHAT_SAMPLES"
} > "$OUT/REPORT.md"
echo "train_demo.sh: wrote $OUT/REPORT.md"

# 7. Install as the project's default model.
if [ "$INSTALL" = 1 ]; then
  mkdir -p models/demo
  for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json; do
    cp "$CHAT/$f" models/demo/
  done
  cp "$OUT/REPORT.md" models/demo/REPORT.md
  echo "train_demo.sh: installed $CHAT as models/demo"
fi
