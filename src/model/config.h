// ModelConfig: a DeepSeek config.json, validated. Field names are the Hugging Face keys
// verbatim (so this file and modeling_deepseek.py grep 1:1); derived quantities follow them.
// Covers DeepseekV2ForCausalLM (V2, V2-Lite), DeepseekV3ForCausalLM (V3, R1, V3.1) and
// DeepseekV32ForCausalLM (V3.2 with DeepSeek Sparse Attention). Anything the engine does not
// implement is rejected here with the key and the value, never silently mis-computed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace dseek::model {

enum class Arch { kDeepseekV2, kDeepseekV3, kDeepseekV32 };
enum class ScoringFunc { kSoftmax, kSigmoid };
enum class TopkMethod { kGreedy, kGroupLimitedGreedy, kNoauxTc };

struct YarnScaling {
  bool enabled = false;  // false: plain RoPE ("rope_scaling": null)
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

struct Fp8Quantization {
  bool enabled = false;  // quantization_config.quant_method == "fp8"
  int64_t block_rows = 128, block_cols = 128;  // weight_block_size
  bool ue8m0_scales = false;                   // scale_fmt == "ue8m0" (V3.1 / V3.2)
};

// Group-quantized integer weights written by `dseek quantize` (docs/quantization.md):
// quantization_config {"quant_method": "dseek", "weight_type": "q8"|"q4", "group_size": 32, ...}.
// The dtype stored in the file decides per tensor (I8 = q8, U8 = q4, float = kept), so e.g.
// lm_head may be q8 in a q4 model; weight_type is what most linears use.
enum class IntWeightType { kQ8, kQ4 };

struct IntQuantization {
  bool enabled = false;  // quantization_config.quant_method == "dseek"
  IntWeightType weight_type = IntWeightType::kQ4;
  IntWeightType lm_head_type = IntWeightType::kQ8;  // the output heads (lm_head, MTP shared_head.head)
  int64_t group_size = 32;  // consecutive inputs of a row sharing one F16 scale; positive, even
};

const char* int_weight_type_name(IntWeightType t);  // "q8", "q4"

struct ModelConfig {
  Arch arch = Arch::kDeepseekV3;
  std::string architecture;  // "DeepseekV3ForCausalLM"
  std::string model_type;    // "deepseek_v3"

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t moe_intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_nextn_predict_layers = 0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;

  int64_t num_attention_heads = 0;
  int64_t q_lora_rank = 0;  // 0: no q LoRA, the layer has q_proj (V2-Lite)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;

  int64_t n_routed_experts = 0;  // 0: every layer dense
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t n_shared_experts = 0;
  double routed_scaling_factor = 1.0;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  TopkMethod topk_method = TopkMethod::kGreedy;
  bool norm_topk_prob = false;

  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  YarnScaling rope_scaling;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  // DeepSeek Sparse Attention (V3.2): lightning indexer.
  int64_t index_n_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;

  Fp8Quantization quantization;
  IntQuantization int_quantization;  // exclusive with `quantization` (one quantization_config)
  double initializer_range = 0.02;  // std of the normal init when training from scratch

  // Derived.
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool has_q_lora() const { return q_lora_rank > 0; }
  bool has_indexer() const { return arch == Arch::kDeepseekV32; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  int64_t experts_per_group() const { return n_routed_experts / n_group; }
  // Per token per layer in the latent cache: normalized c_kv then the rotated rope key.
  int64_t latent_cache_width() const { return kv_lora_rank + qk_rope_head_dim; }
  // Attention logit scale: qk_head_dim^-0.5, times YaRN's m^2 when rope_scaling is on.
  double softmax_scale() const;
};

// Parses and validates; `source` (the file path) prefixes every error.
Expected<ModelConfig> parse_model_config(const std::string& json_text, const std::string& source);
Expected<ModelConfig> load_model_config(const std::string& model_dir);

const char* arch_name(Arch arch);

}  // namespace dseek::model
