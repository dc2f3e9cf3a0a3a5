// The vdpbf16ps matrix-vector path (linear_bf16.h) for BF16 and FP8 weights. Compiled with the
// avx512 flags (AVX512_BF16 included); reached only when the CPU reports AVX512_BF16.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "base/check.h"
#include "base/float_types.h"
#include "cpu/linear_bf16.h"

namespace dseek::cpu {
namespace {

#include "cpu/vec_avx512-inl.h"

constexpr int64_t kPair = 32;  // inputs of one vdpbf16ps

// 32 weights of a row from input i as bf16 bits: BF16 as stored; FP8 as value * 2^-120 (sign
// to bit 15, exponent and mantissa to bits 10..4; see linear_bf16.h).
template <DType D>
inline __m512i weight_bits(const uint8_t* row, int64_t i) {
  if constexpr (D == DType::kBF16) {
    return _mm512_loadu_si512(row + 2 * i);
  } else {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i));
    return _mm512_and_si512(_mm512_slli_epi16(_mm512_cvtepi8_epi16(b), 4), _mm512_set1_epi16(static_cast<short>(0x87F0)));
  }
}

inline V dot(V acc, __m512i w, __m512i x) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x); }

// R consecutive rows from row r, T tokens. Per FP8 block, the bf16 products are summed unscaled
// and the sum is scaled once (block scale x 2^(120 - shift)); BF16 rows are one block of scale 1.
// A block whose scale is not finite or that holds a NaN byte goes element by element, as the
// float path does; so do the inputs past the last multiple of 32 of a block.
template <DType D, int T, int R>
void gemv_rows(const Bf16X& x, const WeightView& w, int64_t r, float* y) {
  constexpr bool kFp8 = D == DType::kF8E4M3;
  const int64_t in = w.in, seg = kFp8 ? w.block_cols : in;
  const float x_unit = std::ldexp(1.0f, -x.shift), unshift = kFp8 ? std::ldexp(1.0f, 120 - x.shift) : x_unit;
  const uint8_t* rows[R];
  const float* scales[R];
  bool nan_free = true;
  for (int j = 0; j < R; ++j) {
    rows[j] = row_ptr(w, r + j);
    if constexpr (kFp8) {
      scales[j] = w.scale_inv + ((r + j) / w.block_rows) * ((in + seg - 1) / seg);
      nan_free = nan_free && !any_fp8_nan(rows[j], in);
    }
  }
  V acc[R][T];
  float tail[R][T];
  for (int j = 0; j < R; ++j)
    for (int t = 0; t < T; ++t) acc[j][t] = vzero(), tail[j][t] = 0.0f;
  for (int64_t c0 = 0, s = 0; c0 < in; c0 += seg, ++s) {
    const int64_t c1 = std::min(in, c0 + seg);
    float sc[R];
    bool fast = true;
    for (int j = 0; j < R; ++j) {
      sc[j] = kFp8 ? scales[j][s] : 1.0f;
      fast = fast && std::isfinite(sc[j] * unshift);
      if constexpr (kFp8)
        if (!nan_free) fast = fast && !any_fp8_nan(rows[j] + c0, c1 - c0);
    }
    int64_t i = c0;
    if (fast) {
      V sacc[R][T];
      for (int j = 0; j < R; ++j)
        for (int t = 0; t < T; ++t) sacc[j][t] = vzero();
      for (; i + kPair <= c1; i += kPair) {
        __m512i xv[T];
        for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_si512(x.data + t * in + i);
        for (int j = 0; j < R; ++j) {
          const __m512i wv = weight_bits<D>(rows[j], i);
          for (int t = 0; t < T; ++t) sacc[j][t] = dot(sacc[j][t], wv, xv[t]);
        }
      }
      for (int j = 0; j < R; ++j) {
        const V sv = vset1(sc[j] * unshift);
        for (int t = 0; t < T; ++t) acc[j][t] = vfmadd(sacc[j][t], sv, acc[j][t]);
      }
    }
    for (; i < c1; ++i) {
      for (int j = 0; j < R; ++j) {
        const float v = raw_element<D>(rows[j], i) * sc[j];
        for (int t = 0; t < T; ++t) tail[j][t] += v * (bf16_to_f32(x.data[t * in + i]) * x_unit);
      }
    }
  }
  for (int j = 0; j < R; ++j)
    for (int t = 0; t < T; ++t) y[t * w.out + r + j] = vsum(acc[j][t]) + tail[j][t];
}

template <DType D, int T>
void gemv_tokens(const Bf16X& x, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  // 4 rows x 2 tokens keep 16 block sums and 16 totals in registers; more tokens take 2 rows.
  constexpr int kRows = T <= 2 ? 4 : 2;
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) gemv_rows<D, T, kRows>(x, w, r, y);
  for (; r < r1; ++r) gemv_rows<D, T, 1>(x, w, r, y);
}

template <DType D>
void gemv_t(const Bf16X& x, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  switch (x.T) {
    case 1: return gemv_tokens<D, 1>(x, w, r0, r1, y);
    case 2: return gemv_tokens<D, 2>(x, w, r0, r1, y);
    case 3: return gemv_tokens<D, 3>(x, w, r0, r1, y);
    case 4: return gemv_tokens<D, 4>(x, w, r0, r1, y);
    default: DSEEK_CHECK(false, "bf16 gemv with T = {} > {}", x.T, kGemvMaxTokens);
  }
}

}  // namespace

void avx512_bf16_round_x(const float* x, const Bf16X& q) {
  const int64_t n = q.T * q.in;
  const V scale = vset1(std::ldexp(1.0f, q.shift));
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const V lo = _mm512_mul_ps(vloadu(x + i), scale), hi = _mm512_mul_ps(vloadu(x + i + 16), scale);
    _mm512_storeu_si512(q.data + i, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
  for (; i < n; ++i) q.data[i] = f32_to_bf16(std::ldexp(x[i], q.shift));
}

void avx512_bf16_gemv(const Bf16X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  if (w.dtype == DType::kBF16) return gemv_t<DType::kBF16>(q, w, r0, r1, y);
  DSEEK_CHECK(w.dtype == DType::kF8E4M3, "bf16 gemv on a {} weight", dtype_name(w.dtype));
  gemv_t<DType::kF8E4M3>(q, w, r0, r1, y);
}

}  // namespace dseek::cpu
