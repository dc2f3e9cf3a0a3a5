#!/usr/bin/env bash
# Training throughput of `dseek train` on a small but DeepSeek-V3-shaped model (MLA with q
# LoRA, 1 dense + 3 MoE layers of 16 routed experts top-4 in 4 groups + a shared expert, one
# MTP layer, 4096-id BPE tokenizer learned from the repository's docs): tokens/s and the
# fraction of this machine's measured peak FP32 FMA throughput (dseek train --flops: training
# FLOPs/token = 3 x the forward's, bench/model_cost.h; peak from bench/machine.h).
#
#   bench/train_bench.sh [STEPS (default 6)] [extra dseek train flags, e.g. -t 2 --dtype bf16]
#
# Environment: DSEEK (the binary, default build/dseek), BENCH_DIR (default .deps/bench/train).
# Report: bench/results/train-<UTC time>.txt (ignored by git).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dseek="${DSEEK:-$root/build/dseek}"
work="${BENCH_DIR:-$root/.deps/bench/train}"
steps="${1:-6}"
[[ $# -gt 0 ]] && shift
mkdir -p "$work" "$root/bench/results"

if [[ ! -f "$work/corpus.txt" ]]; then  # documents separated by blank lines, as train expects
  cat "$root"/README.md "$root"/DEVELOPERS.md "$root"/docs/*.md > "$work/corpus.txt" 2>/dev/null || true
fi
if [[ ! -f "$work/tok/tokenizer.json" ]]; then
  "$dseek" tokenizer-train "$work/corpus.txt" --vocab 4096 -o "$work/tok" >&2
fi
cat > "$work/config.json" <<'JSON'
{"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 4096,
 "hidden_size": 256, "intermediate_size": 768, "moe_intermediate_size": 128, "num_hidden_layers": 4,
 "num_nextn_predict_layers": 1, "first_k_dense_replace": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
 "q_lora_rank": 128, "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
 "n_routed_experts": 16, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "n_shared_experts": 1,
 "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "topk_method": "noaux_tc", "norm_topk_prob": true,
 "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 10000, "max_position_embeddings": 4096,
 "tie_word_embeddings": false, "initializer_range": 0.006, "bos_token_id": 0, "eos_token_id": 1}
JSON
report="$root/bench/results/train-$(date -u +%Y%m%dT%H%M%SZ).txt"
rm -rf "$work/out"
"$dseek" train --config "$work/config.json" --tokenizer "$work/tok" --data "$work/corpus.txt" -o "$work/out" \
  --steps "$steps" --batch 4 --seq-len 256 --warmup 2 --lr 1e-3 --flops "$@" 2>&1 | tee "$report"
echo "report: $report" >&2
