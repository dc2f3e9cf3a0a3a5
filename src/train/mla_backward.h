// Multi-head Latent Attention for training: a forward over one whole sequence (positions
// [0, T), causal) that keeps what the backward needs, and that backward. The un-absorbed
// ("naive", MHA) form of DeepSeek's reference, with the mscale^2-scaled softmax
// (ModelConfig::softmax_scale); it mirrors model/mla.cc step for step:
//   c_q = RMSNorm(W_DQ x), q = W_UQ c_q (or q = W_Q x)      q rope part rotated
//   [c_kv' | k_r'] = W_DKV x, c_kv = RMSNorm(c_kv'), k_r = RoPE(k_r') (shared by all heads)
//   [k_nope | v] = W_UKV c_kv per head, k = [k_nope | k_r], softmax attention, out = W_O o
// V3.2 (DeepSeek Sparse Attention): in the sparse stage each query attends only to the keys
// the lightning indexer selects, chosen by inference's own code (model::indexer_select) so that
// training and `dseek run` attend to the same keys; the backward follows the same selection.
// The indexer's own loss and backward are train/indexer_backward.h.
//
// Legend: T = tokens, D = hidden_size, H = num_attention_heads, r = kv_lora_rank,
// r_q = q_lora_rank, d_n/d_r/d_v = qk_nope/qk_rope/v head dims, d_qk = d_n + d_r.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/indexer.h"
#include "model/weights.h"
#include "train/linear_hook.h"
#include "train/ops_backward.h"

namespace dseek::train {

// d loss / d each attention weight, float32 buffers of the weights' shapes (row-major, HF
// layout); null for a tensor this config does not have.
struct AttentionGrads {
  float* q_a_proj = nullptr;            // [r_q, D]
  float* q_a_layernorm = nullptr;       // [r_q]
  float* q_b_proj = nullptr;            // [H * d_qk, r_q]
  float* q_proj = nullptr;              // [H * d_qk, D]
  float* kv_a_proj_with_mqa = nullptr;  // [r + d_r, D]
  float* kv_a_layernorm = nullptr;      // [r]
  float* kv_b_proj = nullptr;           // [H * (d_n + d_v), r]
  float* o_proj = nullptr;              // [D, H * d_v]
};

// What the backward reads, saved by the forward.
struct MlaActivations {
  std::vector<float> q_a;        // [T, r_q] q_a_proj output, before q_a_layernorm (q LoRA only)
  std::vector<float> q_latent;   // [T, r_q] after q_a_layernorm (q LoRA only)
  std::vector<float> q;          // [T, H, d_qk] queries, rope part rotated
  std::vector<float> kv_a;       // [T, r + d_r] kv_a_proj_with_mqa output, before norm and RoPE
  std::vector<float> kv_latent;  // [T, r] c_kv, after kv_a_layernorm
  std::vector<float> k;          // [T, H, d_qk] keys [k_nope | rotated k_r]
  std::vector<float> v;          // [T, H, d_v]
  std::vector<float> o;          // [T, H * d_v] attention output, o_proj's input
  std::vector<float> lse;        // [H, T] log-sum-exp of each softmax row
  model::KeySelection selection; // [T] the keys each query attended to (V3.2 sparse); empty: causal
};

// V3.2 only (ignored by a model without an indexer): the dense warm-up attends to every
// earlier key; the sparse stage, like inference, to the indexer's top-k.
enum class AttentionStage { kDense, kSparse };

// x: [T, D] (after input_layernorm); out: [T, D]. In the sparse stage of a layer with an
// indexer, the selection is computed here from x and c_q and saved in act->selection.
void mla_train_forward(const model::ModelConfig& c, const model::AttentionWeights& w, const RopeAngles& rope,
                       const float* x, int64_t T, MlaActivations* act, float* out,
                       LinearHook* hook = nullptr, AttentionStage stage = AttentionStage::kSparse);
// The same with the keys of each query given ([T] sorted rows, positions <= t; null: causal),
// e.g. held fixed while a test perturbs the weights.
void mla_train_forward_with_keys(const model::ModelConfig& c, const model::AttentionWeights& w,
                                 const RopeAngles& rope, const float* x, int64_t T,
                                 const model::KeySelection* keys, MlaActivations* act, float* out,
                                 LinearHook* hook = nullptr);

// dout: [T, D]; dx [T, D] += d loss / d x; parameter grads += into g (null buffers: frozen).
// The attention follows act.selection (the indexer's tensors get nothing from this loss).
// hook: an extra path beside the linears (LoRA), or null.
void mla_backward(const model::ModelConfig& c, const model::AttentionWeights& w, const RopeAngles& rope,
                  const float* x, int64_t T, const MlaActivations& act, const float* dout, float* dx,
                  const AttentionGrads& g, LinearHook* hook = nullptr);

}  // namespace dseek::train
