// An extra path beside a linear layer of the training pass: y = x W^T + extra(x). LoRA
// (train/lora.h) is the one user: the base W stays frozen and the hook owns the parameters
// of the extra path and their gradients. The hook is chosen by the weight (its data pointer),
// so the MLA/FFN/MoE training code passes it along without knowing what it adapts; with no
// hook (nullptr) these helpers are exactly linear_forward / linear_backward.
//
// Legend: T = tokens, in/out = the base weight's input/output features.
#pragma once

#include <cstdint>

#include "ops/linear.h"
#include "train/ops_backward.h"

namespace dseek::train {

class LinearHook {
 public:
  virtual ~LinearHook() = default;
  // y [T, out] += extra(x [T, in]) for the weight w; nothing when w has no extra path.
  virtual void forward(const ops::LinearWeight& w, const float* x, int64_t T, float* y) = 0;
  // dx [T, in] += d extra / d x^T dy (dx may be null); the hook's own parameter gradients +=.
  virtual void backward(const ops::LinearWeight& w, const float* x, const float* dy, int64_t T, float* dx) = 0;
};

inline void linear_forward(const float* x, int64_t T, const ops::LinearWeight& w, float* y, LinearHook* hook) {
  linear_forward(x, T, w, y);
  if (hook != nullptr) hook->forward(w, x, T, y);
}

inline void linear_backward(const float* x, const float* dy, int64_t T, const ops::LinearWeight& w, float* dx,
                            float* dw, LinearHook* hook) {
  linear_backward(x, dy, T, w, dx, dw);
  if (hook != nullptr) hook->backward(w, x, dy, T, dx);
}

}  // namespace dseek::train
