#include "ops/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "base/check.h"
#include "cpu/activation.h"

namespace dseek::ops {

float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

void axpy(float a, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void rms_norm(const float* x, const float* w, int64_t T, int64_t C, float eps, float* y) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < C; ++i) ss += xt[i] * xt[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
    float* yt = y + t * C;
    for (int64_t i = 0; i < C; ++i) yt[i] = xt[i] * inv * w[i];
  }
}

void layer_norm(const float* x, const float* w, const float* b, int64_t T, int64_t C, float eps, float* y) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * C;
    float mean = 0.0f;
    for (int64_t i = 0; i < C; ++i) mean += xt[i];
    mean /= static_cast<float>(C);
    float var = 0.0f;
    for (int64_t i = 0; i < C; ++i) var += (xt[i] - mean) * (xt[i] - mean);
    var /= static_cast<float>(C);
    const float inv = 1.0f / std::sqrt(var + eps);
    float* yt = y + t * C;
    for (int64_t i = 0; i < C; ++i) yt[i] = (xt[i] - mean) * inv * w[i] + b[i];
  }
}

void softmax_inplace(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  if (mx == -std::numeric_limits<float>::infinity()) {
    std::fill(x, x + n, 0.0f);
    return;
  }
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void swiglu_inplace(float* gate, const float* up, int64_t n) { cpu::swiglu(gate, up, n); }

void hadamard_inplace(float* x, int64_t n, float scale) {
  DSEEK_CHECK(n > 0 && (n & (n - 1)) == 0, "Hadamard length {} is not a power of two", n);
  for (int64_t h = 1; h < n; h *= 2) {
    for (int64_t i = 0; i < n; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) x[i] *= scale;
}

std::vector<int32_t> topk_indices(const float* x, int64_t n, int64_t k) {
  k = std::min(k, n);
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [x](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  idx.resize(static_cast<size_t>(k));
  return idx;
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

}  // namespace dseek::ops
