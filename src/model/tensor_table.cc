#include "model/tensor_table.h"

#include <fmt/format.h>

namespace dseek::model {

std::string layer_prefix(int64_t layer) { return fmt::format("model.layers.{}.", layer); }

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class TableBuilder {
 public:
  explicit TableBuilder(std::vector<TensorSpec>* out) : out_(out) {}
  TableBuilder& group(TensorGroup g) {
    group_ = g;
    return *this;
  }
  void add(std::string name, std::vector<int64_t> shape, TensorKind kind, Usage usage = Usage::kAlways,
           bool optional = false) {
    const bool quantizable = kind == TensorKind::kLinear && !ends_with(name, ".mlp.gate.weight") &&
                             !ends_with(name, ".indexer.weights_proj.weight");
    const bool head = name == "lm_head.weight" || ends_with(name, ".shared_head.head.weight");
    out_->push_back({std::move(name), std::move(shape), kind, group_, usage, optional, quantizable, head});
  }

 private:
  std::vector<TensorSpec>* out_;
  TensorGroup group_ = TensorGroup::kMain;
};

// One decoder block: attention (MLA, + the V3.2 indexer) and its FFN (dense or MoE).
void add_decoder_block(const ModelConfig& c, int64_t layer, bool indexer_optional, TableBuilder& t) {
  const std::string p = layer_prefix(layer);
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  using K = TensorKind;
  t.add(p + "input_layernorm.weight", {D}, K::kNorm);
  t.add(p + "post_attention_layernorm.weight", {D}, K::kNorm);

  const std::string a = p + "self_attn.";
  if (c.has_q_lora()) {
    t.add(a + "q_a_proj.weight", {c.q_lora_rank, D}, K::kLinear);
    t.add(a + "q_a_layernorm.weight", {c.q_lora_rank}, K::kNorm);
    t.add(a + "q_b_proj.weight", {H * c.qk_head_dim(), c.q_lora_rank}, K::kLinear);
  } else {
    t.add(a + "q_proj.weight", {H * c.qk_head_dim(), D}, K::kLinear);
  }
  t.add(a + "kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, D}, K::kLinear);
  t.add(a + "kv_a_layernorm.weight", {c.kv_lora_rank}, K::kNorm);
  t.add(a + "kv_b_proj.weight", {H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}, K::kLinear);
  t.add(a + "o_proj.weight", {D, H * c.v_head_dim}, K::kLinear);
  if (c.has_indexer()) {
    const std::string ix = a + "indexer.";
    const bool opt = indexer_optional;
    t.add(ix + "wq_b.weight", {c.index_n_heads * c.index_head_dim, c.q_lora_rank}, K::kLinear, Usage::kAlways, opt);
    t.add(ix + "wk.weight", {c.index_head_dim, D}, K::kLinear, Usage::kAlways, opt);
    t.add(ix + "k_norm.weight", {c.index_head_dim}, K::kNorm, Usage::kAlways, opt);
    t.add(ix + "k_norm.bias", {c.index_head_dim}, K::kNorm, Usage::kAlways, opt);
    t.add(ix + "weights_proj.weight", {c.index_n_heads, D}, K::kLinear, Usage::kAlways, opt);
  }

  const std::string m = p + "mlp.";
  if (!c.is_moe_layer(layer)) {
    t.add(m + "gate_proj.weight", {c.intermediate_size, D}, K::kLinear);
    t.add(m + "up_proj.weight", {c.intermediate_size, D}, K::kLinear);
    t.add(m + "down_proj.weight", {D, c.intermediate_size}, K::kLinear);
    return;
  }
  const int64_t E = c.n_routed_experts, F = c.moe_intermediate_size;
  t.add(m + "gate.weight", {E, D}, K::kLinear);
  if (c.topk_method == TopkMethod::kNoauxTc) t.add(m + "gate.e_score_correction_bias", {E}, K::kBias);
  for (int64_t e = 0; e < E; ++e) {
    const std::string x = fmt::format("{}experts.{}.", m, e);
    t.add(x + "gate_proj.weight", {F, D}, K::kLinear, Usage::kRoutedExpert);
    t.add(x + "up_proj.weight", {F, D}, K::kLinear, Usage::kRoutedExpert);
    t.add(x + "down_proj.weight", {D, F}, K::kLinear, Usage::kRoutedExpert);
  }
  if (c.n_shared_experts > 0) {
    const int64_t S = F * c.n_shared_experts;
    t.add(m + "shared_experts.gate_proj.weight", {S, D}, K::kLinear);
    t.add(m + "shared_experts.up_proj.weight", {S, D}, K::kLinear);
    t.add(m + "shared_experts.down_proj.weight", {D, S}, K::kLinear);
  }
}

}  // namespace

std::vector<TensorSpec> build_tensor_table(const ModelConfig& c) {
  std::vector<TensorSpec> table;
  TableBuilder t(&table);
  const int64_t D = c.hidden_size, V = c.vocab_size;
  t.add("model.embed_tokens.weight", {V, D}, TensorKind::kEmbedding);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) add_decoder_block(c, l, /*indexer_optional=*/false, t);
  t.add("model.norm.weight", {D}, TensorKind::kNorm);
  if (!c.tie_word_embeddings) t.add("lm_head.weight", {V, D}, TensorKind::kLinear);

  // Multi-token prediction: a full decoder block plus its input mixing and output head.
  t.group(TensorGroup::kMtp);
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    const int64_t layer = c.num_hidden_layers + k;
    const std::string p = layer_prefix(layer);
    t.add(p + "enorm.weight", {D}, TensorKind::kNorm);
    t.add(p + "hnorm.weight", {D}, TensorKind::kNorm);
    t.add(p + "eh_proj.weight", {D, 2 * D}, TensorKind::kLinear);
    // The MTP embedding and head are copies of the main ones; some exports drop them.
    t.add(p + "embed_tokens.weight", {V, D}, TensorKind::kEmbedding, Usage::kAlways, /*optional=*/true);
    t.add(p + "shared_head.norm.weight", {D}, TensorKind::kNorm);
    t.add(p + "shared_head.head.weight", {V, D}, TensorKind::kLinear, Usage::kAlways, /*optional=*/true);
    add_decoder_block(c, layer, /*indexer_optional=*/true, t);
  }
  return table;
}

bool dtype_allowed(TensorKind kind, DType dtype) {
  const bool float_type = dtype == DType::kBF16 || dtype == DType::kF16 || dtype == DType::kF32;
  switch (kind) {
    case TensorKind::kLinear: return float_type || dtype == DType::kF8E4M3;
    case TensorKind::kEmbedding:
    case TensorKind::kNorm:
    case TensorKind::kBias: return float_type;
  }
  return false;
}

const char* allowed_dtypes(TensorKind kind) {
  return kind == TensorKind::kLinear ? "BF16, F16, F32 or F8_E4M3" : "BF16, F16 or F32";
}

std::string group_scale_name(const std::string& weight_name) { return weight_name + "_scale"; }

}  // namespace dseek::model
