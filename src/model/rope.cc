#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace dseek::model {

namespace {

// Dimension index at which a wavelength makes `rotations` turns over the original context.
double correction_dim(double rotations, int64_t dim, double base, int64_t original_len) {
  return static_cast<double>(dim) * std::log(static_cast<double>(original_len) / (rotations * 2.0 * M_PI)) /
         (2.0 * std::log(base));
}

}  // namespace

RopeTable::RopeTable(const ModelConfig& c) : dim_(c.qk_rope_head_dim) {
  const int64_t half = dim_ / 2;
  inv_freq_.resize(static_cast<size_t>(half));
  const float base = static_cast<float>(c.rope_theta);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim_);
    inv_freq_[i] = 1.0f / std::pow(base, exponent);
  }
  const YarnScaling& y = c.rope_scaling;
  if (!y.enabled || y.factor <= 1.0) return;
  double low = std::floor(correction_dim(y.beta_fast, dim_, c.rope_theta, y.original_max_position_embeddings));
  double high = std::ceil(correction_dim(y.beta_slow, dim_, c.rope_theta, y.original_max_position_embeddings));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim_ - 1));
  if (low == high) high += 0.001;  // avoid a zero-width ramp
  const float factor = static_cast<float>(y.factor);
  for (int64_t i = 0; i < half; ++i) {
    const float ramp = std::clamp((static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low),
                                  0.0f, 1.0f);
    const float smooth = 1.0f - ramp;
    inv_freq_[i] = inv_freq_[i] / factor * (1.0f - smooth) + inv_freq_[i] * smooth;
  }
}

void RopeTable::cos_sin(int64_t pos, float* cos_out, float* sin_out) const {
  for (size_t i = 0; i < inv_freq_.size(); ++i) {
    const float angle = static_cast<float>(pos) * inv_freq_[i];
    cos_out[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
    sin_out[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
  }
}

void RopeTable::rotate_interleaved(float* x, int64_t pos) const { rotate_interleaved(x, 1, 0, pos); }

void RopeTable::rotate_interleaved(float* x, int64_t count, int64_t stride, int64_t pos) const {
  float cs[256], sn[256];
  cos_sin(pos, cs, sn);
  for (int64_t k = 0; k < count; ++k) {
    float* v = x + k * stride;
    for (int64_t i = 0; i < dim_ / 2; ++i) {
      const float a = v[2 * i], b = v[2 * i + 1];
      v[2 * i] = a * cs[i] - b * sn[i];
      v[2 * i + 1] = a * sn[i] + b * cs[i];
    }
  }
}

void RopeTable::rotate_half_split(float* x, int64_t pos) const { rotate_half_split(x, 1, 0, pos); }

void RopeTable::rotate_half_split(float* x, int64_t count, int64_t stride, int64_t pos) const {
  float cs[256], sn[256];
  cos_sin(pos, cs, sn);
  const int64_t half = dim_ / 2;
  for (int64_t k = 0; k < count; ++k) {
    float* v = x + k * stride;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cs[i] - b * sn[i];
      v[i + half] = a * sn[i] + b * cs[i];
    }
  }
}

}  // namespace dseek::model
