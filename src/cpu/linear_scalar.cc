// The scalar family: plain C++ (the fallback on CPUs without AVX2, and the family the others
// are easiest to check against). Same structure as the vector families, element by element.
#include <algorithm>

#include "base/check.h"
#include "cpu/linear_kernels.h"

namespace dseek::cpu {
namespace {

constexpr int kMr = 4, kNr = 16;

template <DType D>
void gemv_t(const float* x, int64_t T, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  const int64_t in = w.in, seg = segment_len(w);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = row_ptr(w, r);
    float acc[kGemvMaxTokens] = {};
    for (int64_t c0 = 0, s = 0; c0 < in; c0 += seg, ++s) {
      const float sc = segment_scale(w, r, s);
      const int64_t c1 = std::min(in, c0 + seg);
      for (int64_t i = c0; i < c1; ++i) {
        const float v = raw_element<D>(row, i) * sc;
        for (int64_t t = 0; t < T; ++t) acc[t] += v * x[t * in + i];
      }
    }
    for (int64_t t = 0; t < T; ++t) y[t * w.out + r] = acc[t];
  }
}

template <DType D>
void decode_block_t(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, float* dst, int64_t ld) {
  const int64_t seg = segment_len(w);
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* row = row_ptr(w, r0 + j);
    for (int64_t i = c0; i < c0 + k;) {
      const int64_t s = i / seg, end = std::min(c0 + k, (s + 1) * seg);
      const float sc = segment_scale(w, r0 + j, s);
      for (; i < end; ++i) dst[j * ld + (i - c0)] = raw_element<D>(row, i) * sc;
    }
  }
}

void micro(const float* xp, const float* wp, int64_t kc, float* c, int64_t ldc, bool accumulate, int m, int n) {
  float acc[kMr][kNr] = {};
  for (int64_t kk = 0; kk < kc; ++kk)
    for (int i = 0; i < kMr; ++i)
      for (int j = 0; j < kNr; ++j) acc[i][j] += xp[kk * kMr + i] * wp[kk * kNr + j];
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + acc[i][j];
}

#define DSEEK_FOR_EACH_FORMAT(F) \
  F(kF32) F(kBF16) F(kF16) F(kF8E4M3) F(kI8) F(kU8)

void gemv(const float* x, int64_t T, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  switch (w.dtype) {
#define DSEEK_CASE(d) case DType::d: return gemv_t<DType::d>(x, T, w, r0, r1, y);
    DSEEK_FOR_EACH_FORMAT(DSEEK_CASE)
#undef DSEEK_CASE
    default: DSEEK_CHECK(false, "linear: no kernel for weight dtype {}", dtype_name(w.dtype));
  }
}

void decode_block(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, float* dst, int64_t ld) {
  switch (w.dtype) {
#define DSEEK_CASE(d) case DType::d: return decode_block_t<DType::d>(w, r0, n, c0, k, dst, ld);
    DSEEK_FOR_EACH_FORMAT(DSEEK_CASE)
#undef DSEEK_CASE
    default: DSEEK_CHECK(false, "linear: no kernel for weight dtype {}", dtype_name(w.dtype));
  }
}

}  // namespace

const LinearKernels& scalar_linear_kernels() {
  static const LinearKernels k{Isa::kScalar, gemv, decode_block, micro, kMr, kNr};
  return k;
}

}  // namespace dseek::cpu
