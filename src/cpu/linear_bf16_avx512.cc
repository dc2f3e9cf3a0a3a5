// The vdpbf16ps kernels of BF16-compute mode (linear_bf16.h) for BF16 and FP8 weights: x
// rounding, the matrix-vector product, and the packed product's panel packing and micro-kernel.
// Compiled with the avx512 flags (AVX512_BF16 included); reached only when the CPU reports
// AVX512_BF16.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "base/check.h"
#include "base/float_types.h"
#include "cpu/linear_bf16.h"

namespace dseek::cpu {
namespace {

#include "cpu/vec_avx512-inl.h"

constexpr int64_t kPair = 32;  // inputs of one vdpbf16ps

// Rows are streamed from memory once per call, one row at a time in a single pass (NaN bytes are
// checked on the loaded bytes, not by a pre-scan), each prefetched into L2 this far ahead of its
// reads. On v3-slice-fp8 decode (dseek bench --dtype bf16, 2 threads, alternating runs) this read
// 9.1 tok/s against 6.8-8.3 for 4 rows at a time behind a NaN pre-scan (which doubled as the
// prefetch), and 7.4-7.8 for 4 rows with a 2 KiB lookahead (docs/kernels.md).
// BF16 rows (lm_head: 44% of v3-slice's bytes a token) stream best from closer: on a
// [129280, 7168] BF16 matrix in huge pages, 2 threads, interleaved with a plain read in the same
// second, 3 KiB ahead read at 86-95% of the plain read's bandwidth when memory ran at 55-59 GB/s,
// 8 KiB at 60-73% (2-6 KiB all beat 8; FP8 rows in 2048-row matrices kept 8 KiB: 4 KiB read at
// 62-69%, 8 KiB at 86-92%).
template <DType D>
constexpr int64_t kPrefetchBytes = D == DType::kBF16 ? 3072 : 8192;

// 32 weights of a row from input i as bf16 bits: BF16 as stored; FP8 as value * 2^-120 (sign
// to bit 15, exponent and mantissa to bits 10..4; see linear_bf16.h). For FP8 with kCheckNan,
// `nan` gathers which of the 32 bytes are NaN codes (S.1111.111), checked on the bytes already
// loaded; without it (WeightView::finite) a NaN code would read as a finite number.
template <DType D, bool kCheckNan>
inline __m512i weight_bits(const uint8_t* row, int64_t i, __mmask32* nan) {
  if constexpr (D == DType::kBF16) {
    return _mm512_loadu_si512(row + 2 * i);
  } else {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i));
    if constexpr (kCheckNan)
      *nan |= _mm256_cmpeq_epi8_mask(_mm256_or_si256(b, _mm256_set1_epi8(static_cast<char>(0x80))), _mm256_set1_epi8(-1));
    return _mm512_and_si512(_mm512_slli_epi16(_mm512_cvtepi8_epi16(b), 4), _mm512_set1_epi16(static_cast<short>(0x87F0)));
  }
}

inline V dot(V acc, __m512i w, __m512i x) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x); }

// Row r for T tokens in one pass over the row (each byte is loaded once, with a software
// prefetch kPrefetchBytes<D> ahead). Per FP8 block, the bf16 products are summed unscaled and the
// sum is scaled once (block scale x 2^(120 - shift)); a BF16 row is one block of scale 1. A block
// whose scale is not finite goes element by element, as the float path does; so does a block
// found to hold a NaN byte (its vector sums are dropped; only looked for with kCheckNan), and the
// inputs past the last multiple of 32 of a block.
// x_unit = 2^-shift undoes x's shift; unshift also undoes FP8's 2^-120 (see gemv_t).
template <DType D, int T, bool kCheckNan>
void gemv_row(const Bf16X& x, const WeightView& w, int64_t r, float x_unit, float unshift, float* y) {
  constexpr bool kFp8 = D == DType::kF8E4M3;
  const int64_t in = w.in, seg = kFp8 ? w.block_cols : in;
  const uint8_t* row = row_ptr(w, r);
  const float* scales = kFp8 ? w.scale_inv + (r / w.block_rows) * ((in + seg - 1) / seg) : nullptr;
  V acc[T];
  float tail[T];
  for (int t = 0; t < T; ++t) acc[t] = vzero(), tail[t] = 0.0f;
  for (int64_t c0 = 0, s = 0; c0 < in; c0 += seg, ++s) {
    const int64_t c1 = std::min(in, c0 + seg);
    const float sc = kFp8 ? scales[s] : 1.0f;
    int64_t i = c0, from = c0;  // the block's element-by-element part starts at `from`
    if (std::isfinite(sc * unshift)) {
      // Two partial sums per token (alternate 32-input steps), so that consecutive vdpbf16ps
      // do not wait on each other.
      V sacc[T][2];
      for (int t = 0; t < T; ++t) sacc[t][0] = sacc[t][1] = vzero();
      __mmask32 nan = 0;
      // 32 inputs into partial sum H (a constant: the sums must stay in registers).
      auto step = [&]<int H>(int64_t at, std::integral_constant<int, H>) {
        if (!kFp8 || H == 0)  // one cache line of the row per 64 bytes read
          _mm_prefetch(reinterpret_cast<const char*>(row + (kFp8 ? at : 2 * at) + kPrefetchBytes<D>), _MM_HINT_T1);
        const __m512i wv = weight_bits<D, kCheckNan>(row, at, &nan);
        for (int t = 0; t < T; ++t) sacc[t][H] = dot(sacc[t][H], wv, _mm512_loadu_si512(x.data + t * in + at));
      };
      i = alternating_steps(i, c1, kPair, step);
      if (nan == 0) {
        from = i;
        const V sv = vset1(sc * unshift);
        for (int t = 0; t < T; ++t) acc[t] = vfmadd(_mm512_add_ps(sacc[t][0], sacc[t][1]), sv, acc[t]);
      }
    }
    for (int64_t e = from; e < c1; ++e) {
      const float v = raw_element<D>(row, e) * sc;
      for (int t = 0; t < T; ++t) tail[t] += v * (bf16_to_f32(x.data[t * in + e]) * x_unit);
    }
  }
  for (int t = 0; t < T; ++t) y[t * w.out + r] = vsum(acc[t]) + tail[t];
}

template <DType D>
void gemv_t(const Bf16X& x, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  // Once per call, not per row: as libm calls they cost 3% of v2-lite-fp8 decode (perf).
  const float x_unit = std::ldexp(1.0f, -x.shift);
  const float unshift = D == DType::kF8E4M3 ? std::ldexp(1.0f, 120 - x.shift) : x_unit;
  with_gemv_tokens(x.T, [&](auto t) {
    constexpr int kT = decltype(t)::value;
    // A row at a time: see kPrefetchBytes. Rows known finite skip the NaN checks: 27 GB/s a core
    // against 22-23 with them, on an L2-resident V3 expert (one thread, T = 1).
    if (D == DType::kF8E4M3 && !w.finite) {
      for (int64_t r = r0; r < r1; ++r) gemv_row<D, kT, true>(x, w, r, x_unit, unshift, y);
    } else {
      for (int64_t r = r0; r < r1; ++r) gemv_row<D, kT, false>(x, w, r, x_unit, unshift, y);
    }
  });
}

// 32 FP8 weights from input i as the exact bf16 of their (unscaled) values: e4m3 -> f16 bits
// (value * 2^-8, as the float family's vraw) -> float -> times 2^8 -> bf16, exact throughout.
inline __m512i fp8_exact_bf16(const uint8_t* p) {
  const __m256i mask = _mm256_set1_epi16(static_cast<short>(0xBF80));
  auto half = [&](const uint8_t* q) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    return _mm512_mul_ps(_mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7), mask)),
                         vset1(0x1p8f));
  };
  return (__m512i)_mm512_cvtne2ps_pbh(half(p + 16), half(p));
}

template <DType D>
inline uint16_t bf16_element(const uint8_t* row, int64_t i) {
  if constexpr (D == DType::kBF16) return load_u16(row + 2 * i);
  return f32_to_bf16(raw_element<D>(row, i));  // exact; NaN stays NaN
}

template <DType D>
void pack_t(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, uint32_t* wp) {
  const int64_t pairs = (k + 1) / 2;
  alignas(64) uint32_t words[16];
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* row = row_ptr(w, r0 + j);
    int64_t i = 0;
    if (D == DType::kBF16 || w.finite || !any_fp8_nan(row + c0, k)) {
      for (; i + kPair <= k; i += kPair) {
        const __m512i bits = D == DType::kBF16 ? _mm512_loadu_si512(row + 2 * (c0 + i)) : fp8_exact_bf16(row + c0 + i);
        _mm512_store_si512(words, bits);
        for (int q = 0; q < 16; ++q) wp[(i / 2 + q) * kBf16Nr + j] = words[q];
      }
    }
    for (; i < k; i += 2) {
      const uint32_t lo = bf16_element<D>(row, c0 + i), hi = i + 1 < k ? bf16_element<D>(row, c0 + i + 1) : 0u;
      wp[(i / 2) * kBf16Nr + j] = lo | hi << 16;
    }
  }
  for (int64_t p = 0; p < pairs; ++p)
    for (int64_t j = n; j < kBf16Nr; ++j) wp[p * kBf16Nr + j] = 0;
}

// M tokens x 32 outputs in 2M accumulators; per pair, two weight vectors (16 outputs each) meet
// each token's broadcast pair.
template <int M>
void micro_m(const uint32_t* xp, const uint32_t* wp, int64_t pairs, float scale, float* c, int64_t ldc,
             bool accumulate, int n) {
  V acc[M][2];
  for (int i = 0; i < M; ++i) acc[i][0] = acc[i][1] = vzero();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512i w0 = _mm512_loadu_si512(wp + p * kBf16Nr), w1 = _mm512_loadu_si512(wp + p * kBf16Nr + 16);
    for (int i = 0; i < M; ++i) {
      const __m512i b = _mm512_set1_epi32(static_cast<int>(xp[p * kBf16Mr + i]));
      acc[i][0] = dot(acc[i][0], w0, b);
      acc[i][1] = dot(acc[i][1], w1, b);
    }
  }
  const __mmask16 k0 = n >= 16 ? 0xffff : static_cast<__mmask16>((1u << n) - 1);
  const __mmask16 k1 = n >= 32 ? 0xffff : n <= 16 ? 0 : static_cast<__mmask16>((1u << (n - 16)) - 1);
  const V s = vset1(scale);
  for (int i = 0; i < M; ++i) {
    float* ci = c + i * ldc;
    V a0 = _mm512_mul_ps(acc[i][0], s), a1 = _mm512_mul_ps(acc[i][1], s);
    if (accumulate) {
      a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(k0, ci));
      a1 = _mm512_add_ps(a1, _mm512_maskz_loadu_ps(k1, ci + 16));
    }
    _mm512_mask_storeu_ps(ci, k0, a0);
    _mm512_mask_storeu_ps(ci + 16, k1, a1);
  }
}

template <int M = 1>
void micro_rows(const uint32_t* xp, const uint32_t* wp, int64_t pairs, float scale, float* c, int64_t ldc,
                bool accumulate, int m, int n) {
  if (m == M) return micro_m<M>(xp, wp, pairs, scale, c, ldc, accumulate, n);
  if constexpr (M < kBf16Mr) {
    micro_rows<M + 1>(xp, wp, pairs, scale, c, ldc, accumulate, m, n);
  } else {
    DSEEK_CHECK(false, "bf16 micro-kernel rows {} not in [1, {}]", m, kBf16Mr);
  }
}

}  // namespace

void avx512_bf16_pack(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, uint32_t* wp) {
  if (w.dtype == DType::kBF16) return pack_t<DType::kBF16>(w, r0, n, c0, k, wp);
  DSEEK_CHECK(w.dtype == DType::kF8E4M3, "bf16 packing of a {} weight", dtype_name(w.dtype));
  pack_t<DType::kF8E4M3>(w, r0, n, c0, k, wp);
}

void avx512_bf16_micro(const uint32_t* xp, const uint32_t* wp, int64_t pairs, float scale, float* c, int64_t ldc,
                       bool accumulate, int m, int n) {
  micro_rows<1>(xp, wp, pairs, scale, c, ldc, accumulate, m, n);
}

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
