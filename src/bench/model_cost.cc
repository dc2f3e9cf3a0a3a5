#include "bench/model_cost.h"

#include <algorithm>

#include "model/tensor_table.h"

namespace dseek::bench {

using model::TensorGroup;
using model::TensorKind;
using model::Usage;

ActiveBytes active_weight_bytes_per_token(const model::ModelConfig& c, const io::Checkpoint& ckpt) {
  ActiveBytes b;
  uint64_t routed_all = 0;  // every routed expert's bytes; a token reads k / E of them
  uint64_t routed_scales_all = 0;
  for (const model::TensorSpec& spec : model::build_tensor_table(c)) {
    if (spec.group != TensorGroup::kMain) continue;
    const io::TensorView* t = ckpt.find(spec.name);
    if (t == nullptr) continue;  // an optional tensor the checkpoint does not have
    // FP8 block scales or q8/q4 group scales (F16 [out, in / group_size]); q4 codes are half a
    // byte per weight already in t->nbytes.
    const io::TensorView* s = t->dtype == DType::kF8E4M3                              ? ckpt.find(spec.name + "_scale_inv")
                              : (t->dtype == DType::kI8 || t->dtype == DType::kU8) ? ckpt.find(model::group_scale_name(spec.name))
                                                                                   : nullptr;
    const uint64_t scale = s ? s->nbytes : 0;
    const uint64_t bytes = t->nbytes + scale;
    if (spec.kind == TensorKind::kEmbedding) {
      b.embedding_row += bytes / static_cast<uint64_t>(c.vocab_size);
      if (c.tie_word_embeddings) b.non_expert += bytes;  // also the output head, read in full
    } else if (spec.usage == Usage::kRoutedExpert) {
      routed_all += bytes;
      routed_scales_all += scale;
    } else {
      b.non_expert += bytes;
      b.scales += scale;
    }
  }
  if (c.n_routed_experts > 0) {
    const auto k = static_cast<uint64_t>(c.num_experts_per_tok), e = static_cast<uint64_t>(c.n_routed_experts);
    b.routed = routed_all * k / e;
    b.scales += routed_scales_all * k / e;
  }
  return b;
}

PrefillFlops prefill_flops(const model::ModelConfig& c, int64_t prompt, int64_t context) {
  PrefillFlops f;
  double routed = 0, dense = 0;
  for (const model::TensorSpec& spec : model::build_tensor_table(c)) {
    if (spec.group != TensorGroup::kMain || spec.kind != TensorKind::kLinear) continue;
    if (spec.name == "lm_head.weight") continue;  // counted once, below
    double n = 1;
    for (int64_t d : spec.shape) n *= static_cast<double>(d);
    (spec.usage == Usage::kRoutedExpert ? routed : dense) += n;
  }
  f.matmul_params_per_token = dense;
  if (c.n_routed_experts > 0)
    f.matmul_params_per_token += routed * static_cast<double>(c.num_experts_per_tok) / static_cast<double>(c.n_routed_experts);
  const double P = static_cast<double>(prompt);
  f.matmul = P * 2.0 * f.matmul_params_per_token;
  f.lm_head = prompt > 0 ? 2.0 * static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size) : 0.0;

  const double L = static_cast<double>(c.num_hidden_layers), H = static_cast<double>(c.num_attention_heads);
  const double per_key = 2.0 * H * static_cast<double>(c.qk_head_dim() + c.v_head_dim);
  if (!c.has_indexer()) {
    const double keys = P * static_cast<double>(context) + P * (P + 1.0) / 2.0;
    f.attention = L * per_key * keys;
  } else {
    const double ih = static_cast<double>(c.index_n_heads), id = static_cast<double>(c.index_head_dim);
    const double per_index_key = 2.0 * ih * id + 2.0 * ih;
    double attended = 0, scored = 0;
    for (int64_t i = 0; i < prompt; ++i) {
      const int64_t k = context + i + 1;
      attended += static_cast<double>(std::min(k, c.index_topk));
      scored += static_cast<double>(k);
    }
    f.attention = L * (per_key * attended + per_index_key * scored);
  }
  return f;
}

}  // namespace dseek::bench
