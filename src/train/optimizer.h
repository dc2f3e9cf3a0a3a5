// AdamW with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay
// Regularization", Algorithm 2), the learning-rate schedule DeepSeek-V3 trains with (linear
// warm-up, then cosine decay to a floor; V3 paper §4.2), and global-norm gradient clipping.
// Moments are float32 and keyed by HF tensor name like the Gradients they follow. Not here:
// which tensors are trainable (the trainer walks the tensor table) or any sharding of state.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "model/tensor_table.h"

namespace dseek::train {

struct AdamWHyper {
  double beta1 = 0.9, beta2 = 0.95;  // DeepSeek-V3's betas
  double eps = 1e-8;
  double weight_decay = 0.1;
};

// One AdamW update of a tensor, in place. `step` counts from 1 (bias correction); `grad_scale`
// multiplies every gradient first (1/batch times the clipping factor). `decay` false for
// tensors that must not shrink toward 0 (norm weights, biases). The decay is decoupled:
// w -= lr * wd * w, not added to the gradient, so Adam's normalization does not rescale it.
void adamw_update(std::span<float> w, std::span<const float> g, std::span<float> m, std::span<float> v,
                  const AdamWHyper& h, double lr, double grad_scale, int64_t step, bool decay);

// Weight decay applies to matrices (linears, embeddings), not to norm weights or biases.
bool decays(model::TensorKind kind);

// Warm-up 0 -> peak over `warmup` steps ((step + 1) / warmup x peak, so step 0 already moves),
// then half a cosine from peak down to min_lr at the last step. Steps count from 0.
struct LrSchedule {
  double peak = 1e-3, min = 1e-4;
  int64_t warmup = 0, total = 1;
  double at(int64_t step) const;
};

// sqrt(sum of squares) of all gradients together, accumulated in double.
double global_norm(const std::vector<std::span<const float>>& grads);
// The factor that brings a gradient of norm `norm` down to `max_norm` (1 when already below,
// or when max_norm <= 0 turns clipping off).
double clip_factor(double norm, double max_norm);

// First and second moments of every tensor the optimizer has seen, by name.
struct AdamState {
  struct Moments {
    std::vector<float> m, v;
  };
  std::map<std::string, Moments> tensors;
  // The moments of `name`, created zero with n elements the first time.
  Moments& at(const std::string& name, size_t n);
};

}  // namespace dseek::train
