#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "base/check.h"

namespace dseek::train {

void adamw_update(std::span<float> w, std::span<const float> g, std::span<float> m, std::span<float> v,
                  const AdamWHyper& h, double lr, double grad_scale, int64_t step, bool decay) {
  DSEEK_CHECK(g.size() == w.size() && m.size() == w.size() && v.size() == w.size(),
              "adamw_update: sizes w {} g {} m {} v {}", w.size(), g.size(), m.size(), v.size());
  DSEEK_CHECK(step >= 1, "adamw_update: step {} (counts from 1)", step);
  const float b1 = static_cast<float>(h.beta1), b2 = static_cast<float>(h.beta2);
  // Bias corrections folded into the step size and epsilon, computed once in double.
  const double c1 = 1.0 - std::pow(h.beta1, static_cast<double>(step));
  const double c2 = 1.0 - std::pow(h.beta2, static_cast<double>(step));
  const float step_size = static_cast<float>(lr / c1), inv_sqrt_c2 = static_cast<float>(1.0 / std::sqrt(c2));
  const float eps = static_cast<float>(h.eps), scale = static_cast<float>(grad_scale);
  const float shrink = decay ? static_cast<float>(1.0 - lr * h.weight_decay) : 1.0f;
  const int64_t n = static_cast<int64_t>(w.size());
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * scale;
    m[i] = b1 * m[i] + (1.0f - b1) * gi;
    v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
    w[i] = w[i] * shrink - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_c2 + eps);
  }
}

bool decays(model::TensorKind kind) {
  return kind == model::TensorKind::kLinear || kind == model::TensorKind::kEmbedding;
}

double LrSchedule::at(int64_t step) const {
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t span = total - 1 - warmup;
  if (span <= 0) return peak;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(span));
  return min + 0.5 * (peak - min) * (1.0 + std::cos(M_PI * progress));
}

double global_norm(const std::vector<std::span<const float>>& grads) {
  // Fixed chunks summed in a fixed order: an OpenMP reduction combines threads in arrival
  // order, and a last-bit difference in the clip factor would break same-seed reproducibility.
  constexpr int64_t kChunk = 1 << 14;
  double sum = 0;
  for (std::span<const float> g : grads) {
    const int64_t n = static_cast<int64_t>(g.size()), chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> part(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 4)
    for (int64_t c = 0; c < chunks; ++c) {
      double s = 0;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) s += static_cast<double>(g[i]) * g[i];
      part[c] = s;
    }
    for (double p : part) sum += p;
  }
  return std::sqrt(sum);
}

double clip_factor(double norm, double max_norm) {
  if (max_norm <= 0 || !(norm > max_norm)) return 1.0;
  return max_norm / norm;
}

AdamState::Moments& AdamState::at(const std::string& name, size_t n) {
  Moments& mo = tensors[name];
  if (mo.m.empty()) {
    mo.m.assign(n, 0.0f);
    mo.v.assign(n, 0.0f);
  }
  DSEEK_CHECK(mo.m.size() == n, "AdamState: tensor '{}' has {} moments, expected {}", name, mo.m.size(), n);
  return mo;
}

}  // namespace dseek::train
