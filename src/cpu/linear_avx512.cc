// The AVX-512 family (F/BW/VL/DQ): 16 float lanes; the packed product's micro-kernel keeps an
// 8 token x 32 output tile in 16 zmm accumulators. Compiled with the avx512 flags only
// (cmake/isa.cmake); reached only when cpu::supported(Isa::kAvx512).
// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 headers (the "undefined"
// pass-through operands of unmasked intrinsics): false positives, silenced for this file only.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "base/check.h"
#include "cpu/linear_bf16.h"
#include "cpu/linear_fp8.h"
#include "cpu/linear_int8.h"
#include "cpu/linear_kernels.h"

namespace dseek::cpu {
namespace avx512 {
namespace {

#include "cpu/vec_avx512-inl.h"

inline float f16_scalar(uint16_t h) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))); }

template <DType D>
inline V vraw(const uint8_t* row, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm512_loadu_ps(row + 4 * i);
  } else if constexpr (D == DType::kBF16) {
    // Two 256-bit widenings and shifts, joined: the same floats as one 512-bit vpmovzxwd and
    // shift, but BF16 rows streamed from memory went from 74% to 86% of a plain read of the
    // same size (2 threads, 16 interleaved rounds at 55-64 GB/s), level with the AVX2 family's
    // 87%; widening in halves but shifting after the join gave 80%.
    const __m256i lo = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
    const __m256i hi = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i + 16)));
    return _mm512_castsi512_ps(
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_slli_epi32(lo, 16)), _mm256_slli_epi32(hi, 16), 1));
  } else if constexpr (D == DType::kF16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * i)));
  } else if constexpr (D == DType::kF8E4M3) {
    // e4m3 -> f16 bits exactly: sign-extended byte << 7 puts the sign in bit 15 and
    // exponent+mantissa in bits 13..7 (f16 exponent bias 15 vs 7: value * 2^-8, subnormals
    // included); the 2^8 goes into the block scale. NaN bytes never get here (any_fp8_nan).
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i));
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7),
                                       _mm256_set1_epi16(static_cast<short>(0xBF80)));
    return _mm512_cvtph_ps(h);
  } else if constexpr (D == DType::kI8) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i))));
  } else {  // q4: 8 bytes -> 16 nibbles in input order (low nibble first), minus 8
    static_assert(D == DType::kU8);
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + i / 2));
    const __m128i m = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    const __m512i v = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
    return _mm512_cvtepi32_ps(_mm512_sub_epi32(v, _mm512_set1_epi32(8)));
  }
}

// q4, 16 bytes from input i (even) split by nibble: *even gets inputs i, i + 2, ..., i + 30 and
// *odd inputs i + 1, ..., i + 31, each minus 8. With the bytes xor 0x88 and sign-extended, a
// nibble's top bit is flipped and then sign-extends it: the high nibble is the byte >> 4 and the
// low one the byte << 28 >> 28, both already minus 8 (7 operations for 32 weights; vraw takes 7
// for 16).
inline void vraw_q4_split(const uint8_t* row, int64_t i, V* even, V* odd) {
  const __m128i b = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i / 2)),
                                  _mm_set1_epi8(static_cast<char>(0x88)));
  const __m512i v = _mm512_cvtepi8_epi32(b);
  *even = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(v, 28), 28));
  *odd = _mm512_cvtepi32_ps(_mm512_srai_epi32(v, 4));
}

// y[2k] += even[k], y[2k + 1] += odd[k] for k < 16.
inline void vadd_interleaved(float* y, V even, V odd) {
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
  _mm512_storeu_ps(y, _mm512_add_ps(_mm512_loadu_ps(y), _mm512_permutex2var_ps(even, lo, odd)));
  _mm512_storeu_ps(y + 16, _mm512_add_ps(_mm512_loadu_ps(y + 16), _mm512_permutex2var_ps(even, hi, odd)));
}

constexpr int kMr = 8, kNr = 32;

#include "cpu/linear_simd-inl.h"


template <int M>
void micro_m(const float* xp, const float* wp, int64_t kc, float* c, int64_t ldc, bool accumulate, int n) {
  // The output tile is read and written at the end; at prefill it is in L3 or memory by then.
  for (int i = 0; i < M; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
  }
  V acc[M][2];
  for (int i = 0; i < M; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < kc; ++kk) {
    const V w0 = _mm512_loadu_ps(wp + kk * kNr), w1 = _mm512_loadu_ps(wp + kk * kNr + 16);
    for (int i = 0; i < M; ++i) {
      const V b = _mm512_set1_ps(xp[kk * kMr + i]);
      acc[i][0] = _mm512_fmadd_ps(b, w0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(b, w1, acc[i][1]);
    }
  }
  const __mmask16 k0 = n >= 16 ? 0xffff : static_cast<__mmask16>((1u << n) - 1);
  const __mmask16 k1 = n >= 32 ? 0xffff : n <= 16 ? 0 : static_cast<__mmask16>((1u << (n - 16)) - 1);
  for (int i = 0; i < M; ++i) {
    float* ci = c + i * ldc;
    if (accumulate) {
      acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(k0, ci));
      acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(k1, ci + 16));
    }
    _mm512_mask_storeu_ps(ci, k0, acc[i][0]);
    _mm512_mask_storeu_ps(ci + 16, k1, acc[i][1]);
  }
}

// A 16 x 16 block of floats transposed in registers: r[i] holds row i; out[c] comes back as
// column c. 32-bit then 64-bit unpacks within 128-bit lanes, then two rounds of 128-bit lane
// shuffles: 64 shuffles for 256 floats.
inline void transpose16x16(V r[16]) {
  V t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);      // per lane: a0 b0 a1 b1
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);  // a2 b2 a3 b3
  }
  for (int g = 0; g < 4; ++g) {  // rows 4g..4g+3: u[4g + m] holds column 4L + m of them in lane L
    const __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int m = 0; m < 4; ++m) {  // column 4L + m: lane L of u[m], u[4 + m], u[8 + m], u[12 + m]
    const V x0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44), x1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
    const V y0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44), y1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
    r[m] = _mm512_shuffle_f32x4(x0, y0, 0x88);
    r[4 + m] = _mm512_shuffle_f32x4(x0, y0, 0xDD);
    r[8 + m] = _mm512_shuffle_f32x4(x1, y1, 0x88);
    r[12 + m] = _mm512_shuffle_f32x4(x1, y1, 0xDD);
  }
}

// wp [kc, kNr] = the transpose of rows [n, kc] (row stride kc), rows n..kNr-1 zero, in 16 x 16
// blocks transposed in registers. The packed product's plain loop (one strided store a weight)
// was 12% of a v3-slice-fp8 prefill of 512 tokens. (Gathering a column of 16 rows was no faster:
// gathers are slow on Intel's cores since the GDS microcode fix.)
void transpose_panel(const float* rows, int64_t n, int64_t kc, float* wp) {
  DSEEK_CHECK(n >= 0 && n <= kNr && kc >= 0, "transpose_panel: {} x {}", n, kc);
  for (int64_t j0 = 0; j0 < kNr; j0 += 16) {
    const int64_t live = std::clamp<int64_t>(n - j0, 0, 16);  // rows j0 + [0, live) exist
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const int64_t cols = std::min<int64_t>(16, kc - k0);
      const auto mask = static_cast<__mmask16>((uint32_t{1} << cols) - 1u);
      V r[16];
      for (int64_t i = 0; i < 16; ++i)
        r[i] = i < live ? _mm512_maskz_loadu_ps(mask, rows + (j0 + i) * kc + k0) : _mm512_setzero_ps();
      transpose16x16(r);
      for (int64_t c = 0; c < cols; ++c) _mm512_storeu_ps(wp + (k0 + c) * kNr + j0, r[c]);
    }
  }
}

}  // namespace
}  // namespace avx512

const LinearKernels& avx512_linear_kernels() {
  static const LinearKernels k = [] {
    LinearKernels t{Isa::kAvx512, avx512::gemv, avx512::decode_block, avx512::micro, avx512::kMr, avx512::kNr};
    t.accumulate_rows = avx512::accumulate_rows;
    t.transpose_panel = avx512::transpose_panel;
    if (features().gfni) t.prepare_x_fp8 = avx512_fp8_prepare_x, t.gemv_fp8 = avx512_fp8_gemv;
    if (features().avx512_vnni) t.quantize_x = avx512_int8_quantize_x, t.gemv_int8 = avx512_int8_gemv;
    if (features().avx512_bf16) {
      t.round_x_bf16 = avx512_bf16_round_x, t.gemv_bf16 = avx512_bf16_gemv;
      t.pack_bf16 = avx512_bf16_pack, t.micro_bf16 = avx512_bf16_micro;
    }
    return t;
  }();
  return k;
}

}  // namespace dseek::cpu
