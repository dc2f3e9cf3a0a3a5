#include "model/config.h"

#include <cmath>
#include <filesystem>
#include <optional>

#include "io/json_file.h"
#include "io/mapped_file.h"

namespace dseek::model {

using io::Json;

namespace {

// Largest integer any config field may hold. Sizes are multiplied together (H * head_dim,
// vocab * hidden), so this keeps every product a config implies inside int64.
constexpr int64_t kMaxConfigInt = int64_t{1} << 31;
// Most tensors a config may imply. DeepSeek-V3 has about 92k; the bound keeps a corrupt
// num_hidden_layers or n_routed_experts from building a table of billions of rows.
constexpr double kMaxTableTensors = 1 << 20;

// Typed reads of one key; every error names the file and the key.
class Reader {
 public:
  Reader(const Json& j, std::string source) : j_(j), source_(std::move(source)) {}

  Status error(const std::string& key, const std::string& why) const {
    return Status::errorf("{}: '{}' {}", source_, key, why);
  }
  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  Status get_int(const std::string& key, int64_t* out, std::optional<int64_t> fallback = std::nullopt,
                 int64_t min_value = 0) const {
    if (!has(key)) {
      if (fallback) {
        *out = *fallback;
        return {};
      }
      return error(key, "is missing");
    }
    const Json& v = j_.at(key);
    if (!v.is_number_integer() && !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()))
      return error(key, "must be an integer, got " + io::brief(v));
    // Range-check before converting: a double or uint64 beyond int64 would not convert.
    const double approx = v.get<double>();
    if (approx > static_cast<double>(kMaxConfigInt) ||
        (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(kMaxConfigInt)))
      return error(key, fmt::format("is implausibly large ({}), expected at most {}", io::brief(v), kMaxConfigInt));
    if (approx < static_cast<double>(min_value))
      return error(key, fmt::format("must be >= {}, got {}", min_value, io::brief(v)));
    const int64_t x = v.is_number_integer() ? v.get<int64_t>() : static_cast<int64_t>(approx);
    if (x < min_value) return error(key, fmt::format("must be >= {}, got {}", min_value, x));
    *out = x;
    return {};
  }
  Status get_double(const std::string& key, double* out, std::optional<double> fallback = std::nullopt) const {
    if (!has(key)) {
      if (fallback) {
        *out = *fallback;
        return {};
      }
      return error(key, "is missing");
    }
    const Json& v = j_.at(key);
    if (!v.is_number() || !std::isfinite(v.get<double>())) return error(key, "must be a finite number, got " + io::brief(v));
    *out = v.get<double>();
    return {};
  }
  Status get_bool(const std::string& key, bool* out, bool fallback) const {
    if (!has(key)) {
      *out = fallback;
      return {};
    }
    if (!j_.at(key).is_boolean()) return error(key, "must be true or false, got " + io::brief(j_.at(key)));
    *out = j_.at(key).get<bool>();
    return {};
  }
  Status get_string(const std::string& key, std::string* out, std::optional<std::string> fallback = std::nullopt) const {
    if (!has(key)) {
      if (fallback) {
        *out = *fallback;
        return {};
      }
      return error(key, "is missing");
    }
    if (!j_.at(key).is_string()) return error(key, "must be a string, got " + io::brief(j_.at(key)));
    *out = j_.at(key).get<std::string>();
    return {};
  }

 private:
  const Json& j_;
  std::string source_;
};

Status parse_architecture(const Json& j, const std::string& source, ModelConfig* c) {
  Reader r(j, source);
  std::string model_type;
  DSEEK_RETURN_IF_ERROR(r.get_string("model_type", &model_type, std::string()));
  std::string architecture;
  if (r.has("architectures")) {
    const Json& a = j.at("architectures");
    if (!a.is_array() || a.empty() || !a[0].is_string())
      return r.error("architectures", "must be a non-empty list of names");
    architecture = a[0].get<std::string>();
  }
  struct Known {
    const char* architecture;
    const char* model_type;
    Arch arch;
  };
  static const Known kKnown[] = {{"DeepseekV2ForCausalLM", "deepseek_v2", Arch::kDeepseekV2},
                                 {"DeepseekV3ForCausalLM", "deepseek_v3", Arch::kDeepseekV3},
                                 {"DeepseekV32ForCausalLM", "deepseek_v32", Arch::kDeepseekV32}};
  for (const auto& k : kKnown) {
    const bool arch_matches = architecture == k.architecture;
    const bool type_matches = model_type == k.model_type;
    if ((arch_matches && (model_type.empty() || type_matches)) || (architecture.empty() && type_matches)) {
      c->arch = k.arch;
      c->architecture = k.architecture;
      c->model_type = k.model_type;
      return {};
    }
  }
  return Status::errorf(
      "{}: unknown architecture '{}' (model_type '{}'); expected DeepseekV2ForCausalLM/deepseek_v2, "
      "DeepseekV3ForCausalLM/deepseek_v3 or DeepseekV32ForCausalLM/deepseek_v32",
      source, io::printable(architecture, 80), io::printable(model_type, 80));
}

Status parse_rope_scaling(const Json& j, const std::string& source, ModelConfig* c) {
  if (!j.contains("rope_scaling") || j.at("rope_scaling").is_null()) return {};
  const Json& rs = j.at("rope_scaling");
  if (!rs.is_object()) return Status::errorf("{}: 'rope_scaling' must be an object or null", source);
  Reader r(rs, source + ": rope_scaling");
  std::string type;
  DSEEK_RETURN_IF_ERROR(r.get_string("type", &type, std::string()));
  if (type.empty()) DSEEK_RETURN_IF_ERROR(r.get_string("rope_type", &type, std::string()));
  if (type == "default") return {};
  if (type != "yarn")
    return Status::errorf("{}: 'rope_scaling.type' = '{}' is not supported (DeepSeek models use 'yarn')", source,
                          io::printable(type, 80));
  YarnScaling& y = c->rope_scaling;
  y.enabled = true;
  DSEEK_RETURN_IF_ERROR(r.get_double("factor", &y.factor));
  if (y.factor < 1.0) return r.error("factor", fmt::format("must be >= 1, got {}", y.factor));
  DSEEK_RETURN_IF_ERROR(r.get_int("original_max_position_embeddings", &y.original_max_position_embeddings,
                                  std::nullopt, 1));
  DSEEK_RETURN_IF_ERROR(r.get_double("beta_fast", &y.beta_fast, 32.0));
  DSEEK_RETURN_IF_ERROR(r.get_double("beta_slow", &y.beta_slow, 1.0));
  DSEEK_RETURN_IF_ERROR(r.get_double("mscale", &y.mscale, 1.0));
  DSEEK_RETURN_IF_ERROR(r.get_double("mscale_all_dim", &y.mscale_all_dim, 0.0));
  if (y.beta_fast <= 0 || y.beta_slow <= 0)
    return Status::errorf("{}: rope_scaling beta_fast/beta_slow must be positive", source);
  return {};
}

// Largest group accepted: far beyond any useful one, it keeps scale-shape arithmetic obvious.
constexpr int64_t kMaxGroupSize = 1 << 16;

Status parse_int_weight_type(const Json& q, const std::string& source, const std::string& key,
                             std::optional<IntWeightType> fallback, IntWeightType* out) {
  Reader r(q, source + ": quantization_config");
  std::string name;
  DSEEK_RETURN_IF_ERROR(r.get_string(key, &name, fallback ? std::optional<std::string>(int_weight_type_name(*fallback))
                                                          : std::nullopt));
  if (name == "q8") *out = IntWeightType::kQ8;
  else if (name == "q4") *out = IntWeightType::kQ4;
  else
    return Status::errorf("{}: 'quantization_config.{}' = '{}' is not supported (expected 'q8' or 'q4')", source, key,
                          io::printable(name, 80));
  return {};
}

Status parse_int_quantization(const Json& q, const std::string& source, ModelConfig* c) {
  Reader r(q, source + ": quantization_config");
  IntQuantization& iq = c->int_quantization;
  DSEEK_RETURN_IF_ERROR(parse_int_weight_type(q, source, "weight_type", std::nullopt, &iq.weight_type));
  DSEEK_RETURN_IF_ERROR(parse_int_weight_type(q, source, "lm_head_type", IntWeightType::kQ8, &iq.lm_head_type));
  DSEEK_RETURN_IF_ERROR(r.get_int("group_size", &iq.group_size, 32, 1));
  if (iq.group_size % 2 != 0 || iq.group_size > kMaxGroupSize)
    return Status::errorf("{}: 'quantization_config.group_size' must be an even number in [2, {}], got {}", source,
                          kMaxGroupSize, iq.group_size);
  if (q.contains("modules_to_not_convert")) {  // informational: what the quantizer kept in float
    const Json& m = q.at("modules_to_not_convert");
    bool ok = m.is_array() || m.is_null();
    if (m.is_array())
      for (const Json& x : m) ok = ok && x.is_string();
    if (!ok)
      return Status::errorf("{}: 'quantization_config.modules_to_not_convert' must be a list of names, got {}", source,
                            io::brief(m));
  }
  iq.enabled = true;
  return {};
}

Status parse_quantization(const Json& j, const std::string& source, ModelConfig* c) {
  if (!j.contains("quantization_config") || j.at("quantization_config").is_null()) return {};
  const Json& q = j.at("quantization_config");
  if (!q.is_object()) return Status::errorf("{}: 'quantization_config' must be an object", source);
  Reader r(q, source + ": quantization_config");
  std::string method, fmt_name, scale_fmt, activation;
  DSEEK_RETURN_IF_ERROR(r.get_string("quant_method", &method));
  if (method == "dseek") return parse_int_quantization(q, source, c);
  if (method != "fp8")
    return Status::errorf("{}: 'quantization_config.quant_method' = '{}' is not supported (expected 'fp8' or 'dseek')",
                          source, io::printable(method, 80));
  DSEEK_RETURN_IF_ERROR(r.get_string("fmt", &fmt_name, std::string("e4m3")));
  if (fmt_name != "e4m3")
    return Status::errorf("{}: 'quantization_config.fmt' = '{}' is not supported (expected 'e4m3')", source,
                          io::printable(fmt_name, 80));
  DSEEK_RETURN_IF_ERROR(r.get_string("scale_fmt", &scale_fmt, std::string()));
  if (!scale_fmt.empty() && scale_fmt != "ue8m0")
    return Status::errorf("{}: 'quantization_config.scale_fmt' = '{}' is not supported (expected 'ue8m0')", source,
                          io::printable(scale_fmt, 80));
  DSEEK_RETURN_IF_ERROR(r.get_string("activation_scheme", &activation, std::string("dynamic")));
  if (activation != "dynamic")
    return Status::errorf("{}: 'quantization_config.activation_scheme' = '{}' is not supported (expected 'dynamic')",
                          source, io::printable(activation, 80));
  Fp8Quantization& f = c->quantization;
  f.enabled = true;
  f.ue8m0_scales = scale_fmt == "ue8m0";
  if (q.contains("weight_block_size")) {
    const Json& b = q.at("weight_block_size");
    if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() ||
        b[0].get<int64_t>() <= 0 || b[1].get<int64_t>() <= 0)
      return Status::errorf("{}: 'quantization_config.weight_block_size' must be [rows, cols], got {}", source,
                            io::brief(b));
    f.block_rows = b[0].get<int64_t>();
    f.block_cols = b[1].get<int64_t>();
  }
  return {};
}

Status validate(const ModelConfig& c, const std::string& source) {
  auto bad = [&](const std::string& key, const std::string& why) {
    return Status::errorf("{}: '{}' {}", source, key, why);
  };
  for (auto [key, v] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                        {"num_hidden_layers", c.num_hidden_layers}, {"num_attention_heads", c.num_attention_heads},
                        {"kv_lora_rank", c.kv_lora_rank}, {"qk_nope_head_dim", c.qk_nope_head_dim},
                        {"qk_rope_head_dim", c.qk_rope_head_dim}, {"v_head_dim", c.v_head_dim}})
    if (v <= 0) return bad(key, fmt::format("must be positive, got {}", v));
  if (c.qk_rope_head_dim % 2 != 0) return bad("qk_rope_head_dim", "must be even (RoPE rotates pairs)");
  if (c.qk_rope_head_dim > 512) return bad("qk_rope_head_dim", fmt::format("must be <= 512, got {}", c.qk_rope_head_dim));
  const bool any_dense = c.first_k_dense_replace > 0 || c.n_routed_experts == 0 || c.moe_layer_freq > 1;
  if (any_dense && c.intermediate_size <= 0) return bad("intermediate_size", "must be positive for dense layers");
  if (c.n_routed_experts > 0) {
    if (c.moe_intermediate_size <= 0) return bad("moe_intermediate_size", "must be positive");
    if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.n_routed_experts)
      return bad("num_experts_per_tok", fmt::format("must be in [1, n_routed_experts={}], got {}", c.n_routed_experts,
                                                    c.num_experts_per_tok));
    if (c.n_group <= 0 || c.n_routed_experts % c.n_group != 0)
      return bad("n_group", fmt::format("must divide n_routed_experts={}, got {}", c.n_routed_experts, c.n_group));
    if (c.topk_group <= 0 || c.topk_group > c.n_group)
      return bad("topk_group", fmt::format("must be in [1, n_group={}], got {}", c.n_group, c.topk_group));
    if (c.topk_method != TopkMethod::kGreedy && c.num_experts_per_tok > c.topk_group * c.experts_per_group())
      return bad("num_experts_per_tok", fmt::format("exceeds the {} experts of the topk_group={} kept groups",
                                                    c.topk_group * c.experts_per_group(), c.topk_group));
    if (c.topk_method == TopkMethod::kNoauxTc && c.experts_per_group() < 2)
      return bad("n_group", "noaux_tc scores a group by its two best experts, so each group needs >= 2 experts");
    if (c.moe_layer_freq <= 0) return bad("moe_layer_freq", "must be positive");
  }
  if (c.has_indexer()) {
    if (c.index_n_heads <= 0) return bad("index_n_heads", "must be positive for DeepseekV32ForCausalLM");
    if (c.index_head_dim <= 0 || c.index_head_dim % 128 != 0 || (c.index_head_dim & (c.index_head_dim - 1)) != 0)
      return bad("index_head_dim", fmt::format("must be a power of two multiple of 128 (FP8 blocks, Hadamard), got {}",
                                               c.index_head_dim));
    if (c.index_head_dim < c.qk_rope_head_dim || c.index_head_dim > 1024)
      return bad("index_head_dim", fmt::format("must be in [qk_rope_head_dim, 1024], got {}", c.index_head_dim));
    if (c.index_topk <= 0) return bad("index_topk", "must be positive");
    if (!c.has_q_lora()) return bad("q_lora_rank", "must be set: the V3.2 indexer reads the q latent");
  }
  // The tensor table has about 16 rows per block plus 3 per routed expert.
  const double blocks = static_cast<double>(c.num_hidden_layers + c.num_nextn_predict_layers);
  const double tensors = blocks * (16.0 + 3.0 * static_cast<double>(c.n_routed_experts));
  if (tensors > kMaxTableTensors)
    return Status::errorf(
        "{}: 'num_hidden_layers' and 'n_routed_experts' imply about {:.0f} tensors ({} layers x {} experts), "
        "more than the {:.0f} dseek accepts",
        source, tensors, c.num_hidden_layers + c.num_nextn_predict_layers, c.n_routed_experts, kMaxTableTensors);
  if (c.rope_scaling.enabled && c.rope_scaling.original_max_position_embeddings <= 0)
    return bad("rope_scaling.original_max_position_embeddings", "must be positive");
  return {};
}

}  // namespace

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling.enabled && rope_scaling.factor > 1.0 && rope_scaling.mscale_all_dim != 0.0) {
    const double m = 0.1 * rope_scaling.mscale_all_dim * std::log(rope_scaling.factor) + 1.0;
    scale *= m * m;
  }
  return scale;
}

const char* int_weight_type_name(IntWeightType t) { return t == IntWeightType::kQ8 ? "q8" : "q4"; }

const char* arch_name(Arch arch) {
  switch (arch) {
    case Arch::kDeepseekV2: return "DeepseekV2ForCausalLM";
    case Arch::kDeepseekV3: return "DeepseekV3ForCausalLM";
    case Arch::kDeepseekV32: return "DeepseekV32ForCausalLM";
  }
  return "?";
}

Expected<ModelConfig> parse_model_config(const std::string& json_text, const std::string& source) {
  DSEEK_ASSIGN_OR_RETURN(Json j, io::parse_json(json_text, source));
  if (!j.is_object()) return Status::errorf("{}: expected a JSON object", source);
  ModelConfig c;
  DSEEK_RETURN_IF_ERROR(parse_architecture(j, source, &c));
  Reader r(j, source);

  DSEEK_RETURN_IF_ERROR(r.get_int("vocab_size", &c.vocab_size, std::nullopt, 1));
  DSEEK_RETURN_IF_ERROR(r.get_int("hidden_size", &c.hidden_size, std::nullopt, 1));
  DSEEK_RETURN_IF_ERROR(r.get_int("intermediate_size", &c.intermediate_size, 0));
  DSEEK_RETURN_IF_ERROR(r.get_int("moe_intermediate_size", &c.moe_intermediate_size, 0));
  DSEEK_RETURN_IF_ERROR(r.get_int("num_hidden_layers", &c.num_hidden_layers, std::nullopt, 1));
  DSEEK_RETURN_IF_ERROR(r.get_int("num_nextn_predict_layers", &c.num_nextn_predict_layers, 0));
  DSEEK_RETURN_IF_ERROR(r.get_int("first_k_dense_replace", &c.first_k_dense_replace, 0));
  DSEEK_RETURN_IF_ERROR(r.get_int("moe_layer_freq", &c.moe_layer_freq, 1, 1));
  DSEEK_RETURN_IF_ERROR(r.get_int("num_attention_heads", &c.num_attention_heads, std::nullopt, 1));
  DSEEK_RETURN_IF_ERROR(r.get_int("q_lora_rank", &c.q_lora_rank, 0));
  DSEEK_RETURN_IF_ERROR(r.get_int("kv_lora_rank", &c.kv_lora_rank, std::nullopt, 1));
  DSEEK_RETURN_IF_ERROR(r.get_int("qk_nope_head_dim", &c.qk_nope_head_dim, std::nullopt, 1));
  DSEEK_RETURN_IF_ERROR(r.get_int("qk_rope_head_dim", &c.qk_rope_head_dim, std::nullopt, 1));
  DSEEK_RETURN_IF_ERROR(r.get_int("v_head_dim", &c.v_head_dim, std::nullopt, 1));
  int64_t kv_heads = c.num_attention_heads;
  DSEEK_RETURN_IF_ERROR(r.get_int("num_key_value_heads", &kv_heads, c.num_attention_heads, 1));
  if (kv_heads != c.num_attention_heads)
    return r.error("num_key_value_heads",
                   fmt::format("must equal num_attention_heads={} (MLA has no grouped KV heads), got {}",
                               c.num_attention_heads, kv_heads));

  DSEEK_RETURN_IF_ERROR(r.get_int("n_routed_experts", &c.n_routed_experts, 0));
  DSEEK_RETURN_IF_ERROR(r.get_int("num_experts_per_tok", &c.num_experts_per_tok, 0));
  DSEEK_RETURN_IF_ERROR(r.get_int("n_group", &c.n_group, 1, 1));
  DSEEK_RETURN_IF_ERROR(r.get_int("topk_group", &c.topk_group, 1, 1));
  DSEEK_RETURN_IF_ERROR(r.get_int("n_shared_experts", &c.n_shared_experts, 0));
  DSEEK_RETURN_IF_ERROR(r.get_double("routed_scaling_factor", &c.routed_scaling_factor, 1.0));

  std::string scoring, topk_method;
  DSEEK_RETURN_IF_ERROR(r.get_string("scoring_func", &scoring, std::string("softmax")));
  if (scoring == "softmax") c.scoring_func = ScoringFunc::kSoftmax;
  else if (scoring == "sigmoid") c.scoring_func = ScoringFunc::kSigmoid;
  else return r.error("scoring_func", "= '" + io::printable(scoring, 80) + "' is not supported (expected 'softmax' or 'sigmoid')");
  DSEEK_RETURN_IF_ERROR(r.get_string("topk_method", &topk_method,
                                     std::string(c.arch == Arch::kDeepseekV2 ? "greedy" : "noaux_tc")));
  if (topk_method == "greedy") c.topk_method = TopkMethod::kGreedy;
  else if (topk_method == "group_limited_greedy") c.topk_method = TopkMethod::kGroupLimitedGreedy;
  else if (topk_method == "noaux_tc") c.topk_method = TopkMethod::kNoauxTc;
  else return r.error("topk_method", "= '" + io::printable(topk_method, 80) + "' is not supported (expected 'greedy', "
                                     "'group_limited_greedy' or 'noaux_tc')");
  DSEEK_RETURN_IF_ERROR(r.get_bool("norm_topk_prob", &c.norm_topk_prob, false));

  std::string act;
  DSEEK_RETURN_IF_ERROR(r.get_string("hidden_act", &act, std::string("silu")));
  if (act != "silu") return r.error("hidden_act", "= '" + io::printable(act, 80) + "' is not supported (expected 'silu')");
  bool attention_bias = false;
  DSEEK_RETURN_IF_ERROR(r.get_bool("attention_bias", &attention_bias, false));
  if (attention_bias) return r.error("attention_bias", "= true is not supported (DeepSeek projections have no bias)");
  DSEEK_RETURN_IF_ERROR(r.get_bool("tie_word_embeddings", &c.tie_word_embeddings, false));

  DSEEK_RETURN_IF_ERROR(r.get_double("rms_norm_eps", &c.rms_norm_eps, 1e-6));
  if (c.rms_norm_eps <= 0) return r.error("rms_norm_eps", "must be positive");
  DSEEK_RETURN_IF_ERROR(r.get_double("rope_theta", &c.rope_theta, 10000.0));
  if (c.rope_theta <= 1.0) return r.error("rope_theta", "must be > 1");
  DSEEK_RETURN_IF_ERROR(r.get_int("max_position_embeddings", &c.max_position_embeddings, 4096, 1));
  DSEEK_RETURN_IF_ERROR(parse_rope_scaling(j, source, &c));

  DSEEK_RETURN_IF_ERROR(r.get_int("bos_token_id", &c.bos_token_id, -1, -1));
  if (r.has("eos_token_id")) {
    const Json& e = j.at("eos_token_id");
    if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<int64_t>());
    else if (e.is_array()) {
      for (const auto& x : e) {
        if (!x.is_number_integer()) return r.error("eos_token_id", "must be an integer or a list of integers");
        c.eos_token_ids.push_back(x.get<int64_t>());
      }
    } else return r.error("eos_token_id", "must be an integer or a list of integers");
  }

  if (c.arch == Arch::kDeepseekV32) {
    DSEEK_RETURN_IF_ERROR(r.get_int("index_n_heads", &c.index_n_heads, std::nullopt, 1));
    DSEEK_RETURN_IF_ERROR(r.get_int("index_head_dim", &c.index_head_dim, std::nullopt, 1));
    DSEEK_RETURN_IF_ERROR(r.get_int("index_topk", &c.index_topk, std::nullopt, 1));
  }
  DSEEK_RETURN_IF_ERROR(r.get_double("initializer_range", &c.initializer_range, 0.02));
  DSEEK_RETURN_IF_ERROR(parse_quantization(j, source, &c));
  DSEEK_RETURN_IF_ERROR(validate(c, source));
  return c;
}

Expected<ModelConfig> load_model_config(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  DSEEK_ASSIGN_OR_RETURN(std::string text, io::read_text_file(path));
  return parse_model_config(text, path);
}

}  // namespace dseek::model
