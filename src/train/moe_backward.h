// The feed-forward blocks for training, forward (keeping what the backward needs) and backward:
// the dense SwiGLU FFN, and DeepSeekMoE (routed experts weighted by the router + shared
// experts) as model/moe.cc computes it. Expert selection is discrete and has no gradient; the
// gradient reaches the gate through the chosen experts' output weights
// (route_weights_backward). e_score_correction_bias only steers selection: no gradient (its
// aux-loss-free update is a training rule of its own, for the trainer).
// Hook for later: a balance loss adds into the router-logit gradient before the gate's backward.
//
// Legend: T = tokens, D = hidden_size, F = FFN width, E = n_routed_experts,
// K = num_experts_per_tok, n = tokens routed to one expert.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/moe.h"
#include "model/weights.h"
#include "train/linear_hook.h"

namespace dseek::train {

struct FfnGrads {  // [F, D], [F, D], [D, F]; null: not wanted
  float* gate_proj = nullptr;
  float* up_proj = nullptr;
  float* down_proj = nullptr;
};

struct FfnActivations {
  std::vector<float> gate, up;  // [n, F] gate_proj and up_proj outputs, before SwiGLU
};

// y [n, D] = down(silu(gate x) * up x), x [n, D].
// hook: an extra path beside the projections (LoRA), or null (here and below).
void ffn_train_forward(const model::FfnWeights& w, const float* x, int64_t n, FfnActivations* act, float* y,
                       LinearHook* hook = nullptr);
// dx [n, D] += ..., grads += ...
void ffn_backward(const model::FfnWeights& w, const float* x, int64_t n, const FfnActivations& act, const float* dy,
                  float* dx, const FfnGrads& g, LinearHook* hook = nullptr);

struct MoeGrads {
  float* gate = nullptr;         // [E, D] router weight
  std::vector<FfnGrads> experts; // [E]
  FfnGrads shared;
};

struct MoeActivations {
  std::vector<float> router_logits;     // [T, E] float32
  std::vector<model::Routing> routing;  // [T] chosen experts and their weights
  struct Expert {
    std::vector<int64_t> tokens;  // [n] the tokens routed to this expert, ascending
    std::vector<int32_t> slot;    // [n] which of the token's K choices it is
    FfnActivations ffn;
    std::vector<float> y;         // [n, D] the expert's output, before weighting
  };
  std::vector<Expert> experts;  // [E]
  FfnActivations shared;
};

// x: [T, D] (after post_attention_layernorm); out: [T, D].
void moe_train_forward(const model::ModelConfig& c, const model::MoeWeights& w, const float* x, int64_t T,
                       MoeActivations* act, float* out, LinearHook* hook = nullptr);
// dout: [T, D]; dx [T, D] += ...; grads += ...
void moe_backward(const model::ModelConfig& c, const model::MoeWeights& w, const float* x, int64_t T,
                  const MoeActivations& act, const float* dout, float* dx, const MoeGrads& g,
                  LinearHook* hook = nullptr);

}  // namespace dseek::train
