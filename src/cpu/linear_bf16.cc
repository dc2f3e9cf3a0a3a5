// The family-independent half of the bfloat16 path: when it runs, the activation shift, and
// the slow twin.
#include "cpu/linear_bf16.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "base/float_types.h"

namespace dseek::cpu {

int bf16_x_shift(const float* x, int64_t n, const WeightView& w) {
  if (w.dtype != DType::kF8E4M3) return 0;
  // NaN and infinity stay what they are at any shift: only the finite values set it. The max of
  // |x| is taken on the bits (|x| as an integer orders like |x| as a float, and the finite ones are
  // those below the exponent's all-ones), which the compiler vectorizes: the float loop with
  // std::isfinite was scalar, 46% of a bf16 matrix-vector call on a 7168-wide L2-resident expert.
  uint32_t amax_bits = 0;
#pragma omp simd reduction(max : amax_bits)
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t magnitude = std::bit_cast<uint32_t>(x[i]) & 0x7fffffffu;
    const uint32_t finite = magnitude & (0u - static_cast<uint32_t>(magnitude < 0x7f800000u));
    amax_bits = amax_bits > finite ? amax_bits : finite;
  }
  const float amax = std::bit_cast<float>(amax_bits);
  if (amax == 0.0f) return 120;
  // bf16 rounding may carry amax up to the next power of two: 2^(e + 1) * 2^shift <= 2^127.
  return std::min(120, 126 - std::ilogb(amax));
}

bool bf16_dot_used(const LinearKernels& k, const WeightView& w) {
  if (k.gemv_bf16 == nullptr) return false;
  if (w.dtype == DType::kBF16) return true;
  return w.dtype == DType::kF8E4M3 && w.block_cols % 32 == 0;
}

bool bf16_gemm_used(const LinearKernels& k, const WeightView& w) {
  if (k.micro_bf16 == nullptr) return false;
  if (w.dtype == DType::kBF16) return true;
  return w.dtype == DType::kF8E4M3 && w.block_cols % 2 == 0 && w.block_rows % kBf16Nr == 0;
}

void round_to_bf16(const float* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(f32_to_bf16(x[i]));
}

void linear_bf16_reference(const float* x, int64_t T, const WeightView& w, float* y) {
  std::vector<float> xr(static_cast<size_t>(T * w.in));
  round_to_bf16(x, T * w.in, xr.data());
  std::vector<float> row(static_cast<size_t>(w.in));
  for (int64_t r = 0; r < w.out; ++r) {
    // The scalar family's decoder: element by element, value x scale, as ops::decode_rows.
    scalar_linear_kernels().decode_block(w, r, 1, 0, w.in, row.data(), w.in);
    for (int64_t t = 0; t < T; ++t) {
      double acc = 0.0;
      for (int64_t i = 0; i < w.in; ++i) acc += static_cast<double>(xr[t * w.in + i]) * static_cast<double>(row[i]);
      y[t * w.out + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace dseek::cpu
