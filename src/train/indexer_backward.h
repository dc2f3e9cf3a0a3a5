// Training V3.2's lightning indexer (DeepSeek Sparse Attention), as in the V3.2 paper §2.1:
// the indexer learns to predict where the main attention looks. Per layer and query t over its
// key set K_t (every s <= t in the dense warm-up; the selected keys in the sparse stage):
//   I[t,s]  = sum_j w[t,j] * ReLU(qI[t,j] . kI[s])           indexer scores, float32
//   p_t     = sum_h P_h[t,.] / sum over K_t                   the main attention's probabilities
//   L_I     = mean over layers and queries of KL(p_t || softmax(I[t, K_t]))
// with qI = RoPE_half(W_qb c_q), kI = RoPE_half(LayerNorm(W_k x)), w = weights_proj(x) H_I^-0.5
// d_I^-0.5 (model/indexer.h). Inference also applies a Hadamard transform and FP8 quantization;
// both are left out here: the Hadamard transform is orthonormal (it preserves the dot products)
// and FP8 is a serving device, not part of the function being learned.
//
// Gradients: the indexer's inputs x and c_q are detached and p_t is a constant, so L_I reaches
// only wq_b, wk, k_norm (weight and bias) and weights_proj; the LM loss never reaches them (the
// top-k selection has no gradient).
//
// Legend: T = tokens, D = hidden_size, r_q = q_lora_rank, H_I = index_n_heads,
// d_I = index_head_dim, H = num_attention_heads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/indexer.h"
#include "model/weights.h"
#include "train/mla_backward.h"
#include "train/model_grad.h"
#include "train/ops_backward.h"

namespace dseek::train {

// What inference selects (model::indexer_select, FP8 and Hadamard included, so a trained
// model attends in `dseek run` exactly where it attended in training) for queries at
// positions [0, T). x: [T, D] attention input; q_latent: [T, r_q] after q_a_layernorm.
model::KeySelection indexer_selection(const model::ModelConfig& c, const model::IndexerWeights& w, const float* x,
                                      const float* q_latent, int64_t T);

// d L_I / d each indexer tensor (row-major, HF layout); null buffers are skipped.
struct IndexerGrads {
  float* wq_b = nullptr;           // [H_I * d_I, r_q]
  float* wk = nullptr;             // [d_I, D]
  float* k_norm_weight = nullptr;  // [d_I]
  float* k_norm_bias = nullptr;    // [d_I]
  float* weights_proj = nullptr;   // [H_I, D]
};

// The float32 indexer forward, kept for the backward.
struct IndexerActivations {
  std::vector<float> k_proj;  // [T, d_I] W_k x, before k_norm
  std::vector<float> k;       // [T, d_I] keys after k_norm and RoPE
  std::vector<float> q;       // [T, H_I, d_I] queries, rope part rotated
  std::vector<float> w;       // [T, H_I] head weights, H_I^-0.5 d_I^-0.5 folded in
};

void indexer_train_forward(const model::ModelConfig& c, const model::IndexerWeights& w, const RopeAngles& rope,
                           const float* x, const float* q_latent, int64_t T, IndexerActivations* a);

// The key set of each query: selection[t] when a selection is given, else [0, t].
struct KeySets {
  const model::KeySelection* selection = nullptr;
  int64_t count(int64_t t) const { return selection ? static_cast<int64_t>((*selection)[t].size()) : t + 1; }
  int64_t key(int64_t t, int64_t i) const { return selection ? (*selection)[t][i] : i; }
};

// p_t over K_t ([T] rows of count(t) values): the main attention's probabilities (from the
// saved q, k and log-sum-exp) summed over heads and L1-normalised.
std::vector<std::vector<float>> attention_target(const model::ModelConfig& c, const MlaActivations& a, int64_t T,
                                                 KeySets keys);

// Mean over queries of KL(p_t || softmax(I[t, K_t])). With g non-null, adds
// grad_scale * d(that mean) / d each indexer tensor into g. x, q_latent as for the forward.
double indexer_loss_and_backward(const model::ModelConfig& c, const model::IndexerWeights& w, const RopeAngles& rope,
                                 const float* x, const float* q_latent, int64_t T,
                                 const std::vector<std::vector<float>>& target, KeySets keys, float grad_scale,
                                 const IndexerGrads* g);

// The gradient buffers of layer `prefix`'s indexer in g (all null when g is null or frozen).
IndexerGrads indexer_grads(Gradients* g, const std::string& prefix);

// L_I of the whole model for a forward already run (each layer's key sets as its attention
// ran: its selection in the sparse stage, causal in the dense one). With grads non-null, adds
// weight * d L_I / d each indexer tensor. 0 for a model without an indexer.
double model_indexer_loss(const model::Weights& w, const Activations& act, float weight, Gradients* grads);

}  // namespace dseek::train
