// Central finite differences against an analytic gradient, shared by the training tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "ops/linear.h"

namespace dseek::testing {

// max |analytic[i] - numeric_i| / max |numeric_i| over the elements `indices` of p, where
// numeric_i = (loss(p_i + eps) - loss(p_i - eps)) / 2 eps. A loss that returns nullopt at a
// perturbed point (e.g. a routing choice flipped) skips that element; *checked counts the
// elements compared. p is restored after each perturbation.
template <typename F>
double finite_difference_error(std::vector<F>& p, const F* analytic, std::span<const size_t> indices, double eps,
                               const std::function<std::optional<double>()>& loss, int* checked = nullptr) {
  double err = 0, ref = 0;
  int n = 0;
  for (size_t i : indices) {
    const F orig = p[i];
    p[i] = static_cast<F>(orig + eps);
    const std::optional<double> up = loss();
    p[i] = static_cast<F>(orig - eps);
    const std::optional<double> down = loss();
    p[i] = orig;
    if (!up || !down) continue;
    const double numeric = (*up - *down) / (2 * eps);
    err = std::max(err, std::fabs(numeric - static_cast<double>(analytic[i])));
    ref = std::max(ref, std::fabs(numeric));
    ++n;
  }
  if (checked) *checked = n;
  return ref > 0 ? err / ref : err;
}

// 0, 1, ..., n - 1.
inline std::vector<size_t> all_indices(size_t n) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  return idx;
}

// A weight view over a float32 vector the test owns, [out, in]: the finite differences perturb
// v in place and the next forward sees it.
inline ops::LinearWeight f32_weight(const std::vector<float>& v, int64_t out, int64_t in) {
  ops::LinearWeight w;
  w.dtype = DType::kF32;
  w.out = out;
  w.in = in;
  w.data = reinterpret_cast<const uint8_t*>(v.data());
  return w;
}

}  // namespace dseek::testing
