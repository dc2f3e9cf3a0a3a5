// Weights: the tensor table bound to a mapped checkpoint. Large matrices stay views into the
// mapped shards (no copy, any dtype, q8/q4 group scales too); only small vectors (norm weights,
// router bias) and FP8 block scales are decoded into aligned float32 arrays. Every mismatch between table and
// checkpoint is reported with the file, the tensor, what was found and what was expected.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/checkpoint.h"
#include "model/config.h"
#include "model/tensor_table.h"
#include "ops/linear.h"

namespace dseek::model {

using ops::LinearWeight;

struct IndexerWeights {  // V3.2 lightning indexer
  LinearWeight wq_b;          // [index_n_heads * index_head_dim, q_lora_rank]
  LinearWeight wk;            // [index_head_dim, hidden_size]
  std::vector<float> k_norm_weight, k_norm_bias;  // [index_head_dim] LayerNorm
  LinearWeight weights_proj;  // [index_n_heads, hidden_size]
  bool present() const { return !wk.empty(); }
};

struct AttentionWeights {  // MLA
  LinearWeight q_a_proj;      // [q_lora_rank, hidden_size]          (q LoRA)
  std::vector<float> q_a_layernorm;  // [q_lora_rank]
  LinearWeight q_b_proj;      // [H * qk_head_dim, q_lora_rank]
  LinearWeight q_proj;        // [H * qk_head_dim, hidden_size]      (no q LoRA)
  LinearWeight kv_a_proj_with_mqa;   // [kv_lora_rank + qk_rope_head_dim, hidden_size]
  std::vector<float> kv_a_layernorm; // [kv_lora_rank]
  LinearWeight kv_b_proj;     // [H * (qk_nope_head_dim + v_head_dim), kv_lora_rank]
  LinearWeight o_proj;        // [hidden_size, H * v_head_dim]
  IndexerWeights indexer;
};

struct FfnWeights {  // SwiGLU: down(silu(gate x) * up x)
  LinearWeight gate_proj, up_proj, down_proj;
};

struct MoeWeights {
  LinearWeight gate;                            // router [n_routed_experts, hidden_size]
  std::vector<float> e_score_correction_bias;   // [n_routed_experts] (noaux_tc only)
  std::vector<FfnWeights> experts;              // n_routed_experts
  FfnWeights shared;                            // width moe_intermediate_size * n_shared_experts
  bool has_shared = false;
};

struct LayerWeights {
  std::vector<float> input_layernorm, post_attention_layernorm;  // [hidden_size]
  AttentionWeights attn;
  bool is_moe = false;
  FfnWeights mlp;  // dense layers
  MoeWeights moe;  // MoE layers
};

struct MtpWeights {  // one multi-token-prediction module (not used by the main forward pass)
  std::vector<float> enorm, hnorm, shared_head_norm;
  LinearWeight eh_proj;          // [hidden_size, 2 * hidden_size]
  LinearWeight embed_tokens;     // may be empty: shares the main embedding
  LinearWeight shared_head_head; // may be empty: shares lm_head
  LayerWeights block;
};

class Weights {
 public:
  // Binds every row of the table; the first mismatch is returned as an error.
  static Expected<std::unique_ptr<Weights>> bind(const ModelConfig& config, std::unique_ptr<io::Checkpoint> ckpt);

  const ModelConfig& config() const { return config_; }
  const io::Checkpoint& checkpoint() const { return *ckpt_; }
  // Takes the checkpoint back, for a bind again after its tensors moved
  // (io::SafetensorsFile::copy_into_memory); the weights bound so far go with `w`.
  static std::unique_ptr<io::Checkpoint> release_checkpoint(std::unique_ptr<Weights> w) {
    return std::move(w->ckpt_);
  }

  LinearWeight embed_tokens;  // [vocab_size, hidden_size]
  std::vector<LayerWeights> layers;
  std::vector<float> norm;    // [hidden_size]
  LinearWeight lm_head;       // [vocab_size, hidden_size] (the embedding when tied)
  std::vector<MtpWeights> mtp;  // empty when the checkpoint has no MTP layer

  // Any bound linear or embedding of the table by its HF name ("lm_head.weight"), decodable
  // with ops::decode_rows whatever its stored dtype; nullptr when absent.
  const LinearWeight* find_linear(const std::string& name) const;

  // Records that every element of every bound matrix is finite (the loader read and checked
  // each one): the FP8 kernels then skip their NaN checks (cpu::WeightView::finite).
  void mark_finite();

 private:
  ModelConfig config_;
  std::unique_ptr<io::Checkpoint> ckpt_;
  std::deque<std::vector<float>> owned_scales_;  // FP8 block scales, aligned float copies
  std::map<std::string, LinearWeight> linears_;  // find_linear
};

// Loads config.json and the checkpoint of a model directory and binds them.
Expected<std::unique_ptr<Weights>> load_weights(const std::string& model_dir);

}  // namespace dseek::model
