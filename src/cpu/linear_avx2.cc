// The AVX2 family (with FMA and F16C): 8 float lanes; the packed product's micro-kernel keeps a
// 6 token x 16 output tile in 12 ymm accumulators. Compiled with the avx2 flags only
// (cmake/isa.cmake, AVX-512 off); reached only when cpu::supported(Isa::kAvx2).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "base/check.h"
#include "cpu/linear_kernels.h"

namespace dseek::cpu {
namespace avx2 {
namespace {

#include "cpu/vec_avx2-inl.h"

inline float f16_scalar(uint16_t h) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))); }

inline __m128i load8(const uint8_t* p) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); }

template <DType D>
inline V vraw(const uint8_t* row, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row + 4 * i));
  } else if constexpr (D == DType::kBF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else if constexpr (D == DType::kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
  } else if constexpr (D == DType::kF8E4M3) {
    // As in the AVX-512 family: e4m3 -> f16 bits (value * 2^-8) by a shift and a mask.
    const __m128i h = _mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(load8(row + i)), 7),
                                    _mm_set1_epi16(static_cast<short>(0xBF80)));
    return _mm256_cvtph_ps(h);
  } else if constexpr (D == DType::kI8) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(load8(row + i)));
  } else {  // q4: 4 bytes -> 8 nibbles in input order (low nibble first), minus 8
    static_assert(D == DType::kU8);
    int32_t bits;
    std::memcpy(&bits, row + i / 2, 4);
    const __m128i b = _mm_cvtsi32_si128(bits);
    const __m128i m = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    const __m256i v = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(v, _mm256_set1_epi32(8)));
  }
}

// Nonzero when one of the 8 FP8 bytes from p[i] is a NaN (S.1111.111).
inline uint32_t fp8_nan_bits(const uint8_t* p, int64_t i) {
  const __m128i b = load8(p + i);
  const __m128i hit = _mm_cmpeq_epi8(_mm_or_si128(b, _mm_set1_epi8(static_cast<char>(0x80))), _mm_set1_epi8(-1));
  return static_cast<uint32_t>(_mm_movemask_epi8(hit)) & 0xffu;
}

// Whether any of n FP8 bytes is a NaN (S.1111.111).
inline bool any_fp8_nan(const uint8_t* p, int64_t n) {
  const __m256i sign = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi8(-1);
  int hit = 0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
    hit |= _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_or_si256(v, sign), ones));
  }
  for (; i < n; ++i) hit |= (p[i] & 0x7f) == 0x7f;
  return hit != 0;
}

// q4, 8 bytes from input i (even) split by nibble: *even gets inputs i, i + 2, ..., i + 14 and
// *odd inputs i + 1, ..., i + 15, each minus 8 (the avx512 family's vraw_q4_split explains how).
inline void vraw_q4_split(const uint8_t* row, int64_t i, V* even, V* odd) {
  const __m128i b = _mm_xor_si128(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + i / 2)),
                                  _mm_set1_epi8(static_cast<char>(0x88)));
  const __m256i v = _mm256_cvtepi8_epi32(b);
  *even = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(v, 28), 28));
  *odd = _mm256_cvtepi32_ps(_mm256_srai_epi32(v, 4));
}

// y[2k] += even[k], y[2k + 1] += odd[k] for k < 8.
inline void vadd_interleaved(float* y, V even, V odd) {
  const __m256 a = _mm256_unpacklo_ps(even, odd), b = _mm256_unpackhi_ps(even, odd);  // [0 1 2 3 | 8 9 10 11], [4 .. 7 | 12 .. 15]
  _mm256_storeu_ps(y, _mm256_add_ps(_mm256_loadu_ps(y), _mm256_permute2f128_ps(a, b, 0x20)));
  _mm256_storeu_ps(y + 8, _mm256_add_ps(_mm256_loadu_ps(y + 8), _mm256_permute2f128_ps(a, b, 0x31)));
}

constexpr int kMr = 6, kNr = 16;

#include "cpu/linear_simd-inl.h"


template <int M>
void micro_m(const float* xp, const float* wp, int64_t kc, float* c, int64_t ldc, bool accumulate, int n) {
  V acc[M][2];
  for (int i = 0; i < M; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t kk = 0; kk < kc; ++kk) {
    const V w0 = _mm256_loadu_ps(wp + kk * kNr), w1 = _mm256_loadu_ps(wp + kk * kNr + 8);
    for (int i = 0; i < M; ++i) {
      const V b = _mm256_broadcast_ss(xp + kk * kMr + i);
      acc[i][0] = _mm256_fmadd_ps(b, w0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(b, w1, acc[i][1]);
    }
  }
  for (int i = 0; i < M; ++i) {
    float* ci = c + i * ldc;
    if (n == kNr) {
      if (accumulate) {
        acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(ci));
        acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(ci + 8));
      }
      _mm256_storeu_ps(ci, acc[i][0]);
      _mm256_storeu_ps(ci + 8, acc[i][1]);
    } else {  // edge tile: through a buffer (no masked float stores worth the trouble here)
      alignas(32) float tile[kNr];
      _mm256_store_ps(tile, acc[i][0]);
      _mm256_store_ps(tile + 8, acc[i][1]);
      for (int j = 0; j < n; ++j) ci[j] = (accumulate ? ci[j] : 0.0f) + tile[j];
    }
  }
}

}  // namespace
}  // namespace avx2

const LinearKernels& avx2_linear_kernels() {
  static const LinearKernels k = [] {
    LinearKernels t{Isa::kAvx2, avx2::gemv, avx2::decode_block, avx2::micro, avx2::kMr, avx2::kNr};
    t.accumulate_rows = avx2::accumulate_rows;
    return t;
  }();
  return k;
}

}  // namespace dseek::cpu
