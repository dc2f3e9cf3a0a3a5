#include "model/model_info.h"

#include <nlohmann/json.hpp>

#include "model/tensor_table.h"

namespace dseek::model {

ModelInfo compute_model_info(const Weights& w) {
  const ModelConfig& c = w.config();
  ModelInfo info;
  info.architecture = c.architecture;
  info.model_type = c.model_type;
  info.layers = c.num_hidden_layers;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) (c.is_moe_layer(l) ? info.moe_layers : info.dense_layers)++;
  info.mtp_layers = static_cast<int64_t>(w.mtp.size());

  for (const TensorSpec& spec : build_tensor_table(c)) {
    int64_t n = 1;
    for (int64_t d : spec.shape) n *= d;
    if (spec.group == TensorGroup::kMtp) {
      if (w.checkpoint().find(spec.name)) info.params_mtp += n;
      continue;
    }
    info.params_total += n;
    if (spec.usage == Usage::kRoutedExpert) info.params_active += n * c.num_experts_per_tok / c.n_routed_experts;
    else if (spec.kind == TensorKind::kEmbedding) info.params_active += c.hidden_size;  // one row looked up
    else info.params_active += n;
    if (c.tie_word_embeddings && spec.kind == TensorKind::kEmbedding) info.params_active += n;  // also the lm_head
  }
  for (const TensorSpec& spec : build_tensor_table(c)) {
    const io::TensorView* t = spec.kind == TensorKind::kLinear ? w.checkpoint().find(spec.name) : nullptr;
    if (t == nullptr) continue;
    const DType d = t->dtype;
    info.linears_by_type[d == DType::kI8 ? "q8" : d == DType::kU8 ? "q4" : std::string(dtype_name(d))]++;
  }
  if (c.int_quantization.enabled)
    info.quantization = fmt::format("dseek {}, group {}, heads {}", int_weight_type_name(c.int_quantization.weight_type),
                                    c.int_quantization.group_size,
                                    int_weight_type_name(c.int_quantization.lm_head_type));
  else if (c.quantization.enabled)
    info.quantization = fmt::format("fp8 e4m3, {}x{} blocks{}", c.quantization.block_rows, c.quantization.block_cols,
                                    c.quantization.ue8m0_scales ? ", ue8m0 scales" : "");
  for (const auto& [name, t] : w.checkpoint().tensors()) {
    info.bytes_by_dtype[std::string(dtype_name(t->dtype))] += t->nbytes;
    info.bytes_total += t->nbytes;
  }
  info.kv_values_per_layer = c.latent_cache_width();
  info.kv_bytes_per_token_bf16 = c.latent_cache_width() * 2 * c.num_hidden_layers;
  info.kv_bytes_per_token_f32 = c.latent_cache_width() * 4 * c.num_hidden_layers;
  if (c.has_indexer())
    info.indexer_bytes_per_token = (c.index_head_dim + (c.index_head_dim / 128) * 4) * c.num_hidden_layers;
  return info;
}

namespace {
std::string human(double v, const char* unit) {
  const char* prefixes[] = {"", "K", "M", "G", "T"};
  int i = 0;
  while (v >= 1000.0 && i < 4) {
    v /= 1000.0;
    ++i;
  }
  return fmt::format("{:.2f} {}{}", v, prefixes[i], unit);
}
}  // namespace

std::string format_model_info(const ModelInfo& m, const std::string& dir) {
  std::string s;
  s += fmt::format("model:            {}\n", dir);
  s += fmt::format("architecture:     {} ({})\n", m.architecture, m.model_type);
  s += fmt::format("layers:           {} ({} dense, {} MoE) + {} MTP\n", m.layers, m.dense_layers, m.moe_layers,
                   m.mtp_layers);
  s += fmt::format("parameters:       {} total, {} active per token ({} / {})\n", human(m.params_total, ""),
                   human(m.params_active, ""), m.params_total, m.params_active);
  if (m.params_mtp) s += fmt::format("MTP parameters:   {} ({})\n", human(m.params_mtp, ""), m.params_mtp);
  s += fmt::format("weights:          {} in all\n", human(static_cast<double>(m.bytes_total), "B"));
  for (const auto& [dtype, bytes] : m.bytes_by_dtype)
    s += fmt::format("  {:<8}        {} ({} bytes)\n", dtype, human(static_cast<double>(bytes), "B"), bytes);
  if (!m.quantization.empty()) {
    std::string types;
    for (const auto& [type, n] : m.linears_by_type) types += fmt::format("{}{} {}", types.empty() ? "" : ", ", n, type);
    s += fmt::format("quantization:     {} (linears: {})\n", m.quantization, types);
  }
  s += fmt::format("KV cache / token: {} latent values per layer; {} bytes at BF16, {} bytes at F32", m.kv_values_per_layer,
                   m.kv_bytes_per_token_bf16, m.kv_bytes_per_token_f32);
  if (m.indexer_bytes_per_token) s += fmt::format(", + {} bytes of indexer keys", m.indexer_bytes_per_token);
  s += "\n";
  return s;
}

std::string model_info_json(const ModelInfo& m) {
  nlohmann::json j = {{"architecture", m.architecture},
                      {"model_type", m.model_type},
                      {"layers", m.layers},
                      {"dense_layers", m.dense_layers},
                      {"moe_layers", m.moe_layers},
                      {"mtp_layers", m.mtp_layers},
                      {"params_total", m.params_total},
                      {"params_active", m.params_active},
                      {"params_mtp", m.params_mtp},
                      {"bytes_by_dtype", m.bytes_by_dtype},
                      {"quantization", m.quantization},
                      {"linears_by_type", m.linears_by_type},
                      {"bytes_total", m.bytes_total},
                      {"kv_values_per_layer", m.kv_values_per_layer},
                      {"kv_bytes_per_token_bf16", m.kv_bytes_per_token_bf16},
                      {"kv_bytes_per_token_f32", m.kv_bytes_per_token_f32},
                      {"indexer_bytes_per_token", m.indexer_bytes_per_token}};
  return j.dump(2);
}

}  // namespace dseek::model
