// The float32 FP8 matrix-vector kernel on AVX-512 with GFNI (linear_fp8.h). Compiled with the
// avx512_gfni flags (cmake/isa.cmake); reached only through the avx512 table when the CPU
// reports GFNI.
// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 headers: silenced here only.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "base/check.h"
#include "base/float_types.h"
#include "cpu/linear_fp8.h"

namespace dseek::cpu {
namespace {

using V = __m512;

// As the float family's streaming rows (linear_simd-inl.h): one row at a time, each prefetched
// into L2 this far ahead of its reads.
constexpr int64_t kPrefetchBytes = 8192;
// And into L1 this far ahead within the row: on the Intel VM, a harness streaming the loop on two
// threads read 19.5-21.4 GB/s with it against 18.8-20.1 without, and v2-lite-fp8 decode won 5 of
// 6 alternating pairs (paired median 81.3% against 80.1%; docs/kernels.md).
constexpr int64_t kL1PrefetchBytes = 512;

// vgf2p8affineqb matrices (byte 7 - i of the qword selects the input bits of output bit i).
// kHighByte: s.eeee.mmm -> s.0000.eee, the float32's bits 31..24; kLowByte: -> e.mmm.0000, bits
// 23..16 (the exponent's last bit and the mantissa's first three).
constexpr long long kHighByte = 0x1020400000000080ll;
constexpr long long kLowByte = 0x0000000001020408ll;

// The float32 weights of one 64-byte step, in the order of the converter that made them.
struct StepWeights {
  V w[4];
};

// Two affines make every weight's high and low byte, byte and word unpacks put them in place:
// two affines and six unpacks a 64 weights. The unpacks work within 128-bit lanes, so w[k]
// holds weights 16 L + 4 k + [0, 4) in lane L (fp8_x_slot). The faster of the two on Zen 4.
struct UnpackConverter {
  StepWeights operator()(const uint8_t* step) const {
    const __m512i raw = _mm512_loadu_si512(step);
    const __m512i high = _mm512_gf2p8affine_epi64_epi8(raw, _mm512_set1_epi64(kHighByte), 0);
    const __m512i low = _mm512_gf2p8affine_epi64_epi8(raw, _mm512_set1_epi64(kLowByte), 0);
    const __m512i words_lo = _mm512_unpacklo_epi8(low, high), words_hi = _mm512_unpackhi_epi8(low, high);
    const __m512i zero = _mm512_setzero_si512();
    return {{_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, words_lo)),
             _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, words_lo)),
             _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, words_hi)),
             _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, words_hi))}};
  }
};

// w[k] holds weights 16 k + [0, 16), in order. Each 32-byte half of the step is loaded into both
// halves of a vector; one affine makes its high bytes in the lower half and its low bytes in the
// upper half (the matrix operand differs per qword), and one byte permute per 16 weights moves
// each weight's two bytes to the top of its lane, zeroing the rest. Per 64 weights: two affines
// (port 0 on Intel) and four permutes (port 5), against the unpacks' six operations on port 5.
// The faster of the two on Intel.
struct PermuteConverter {
  __m512i matrices =
      _mm512_set_epi64(kLowByte, kLowByte, kLowByte, kLowByte, kHighByte, kHighByte, kHighByte, kHighByte);
  // For weights 16 k + [0, 16) of a half: lane j's bytes 2 and 3 from bytes 32 + 16 k + j and
  // 16 k + j.
  __m512i place[2];
  static constexpr __mmask64 kTopBytes = 0xCCCCCCCCCCCCCCCCull;

  PermuteConverter() {
    alignas(64) uint8_t idx[2][64] = {};
    for (int k = 0; k < 2; ++k)
      for (int j = 0; j < 16; ++j) {
        idx[k][4 * j + 2] = static_cast<uint8_t>(32 + 16 * k + j);
        idx[k][4 * j + 3] = static_cast<uint8_t>(16 * k + j);
      }
    place[0] = _mm512_load_si512(idx[0]);
    place[1] = _mm512_load_si512(idx[1]);
  }

  StepWeights operator()(const uint8_t* step) const {
    StepWeights sw;
    for (int h = 0; h < 2; ++h) {
      const __m512i half = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + 32 * h)));
      const __m512i bytes = _mm512_gf2p8affine_epi64_epi8(half, matrices, 0);
      for (int k = 0; k < 2; ++k)
        sw.w[2 * h + k] = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi8(kTopBytes, place[k], bytes));
    }
    return sw;
  }
};

// w x 2^60, exactly, for the float32 weights of a converter, denormals included: the guarded
// steps' weights, as normal floats. Normal lanes get 60 added to their exponent field; zero and
// denormal lanes (exponent field 0, value = the mantissa bits as an integer x 2^-149) are
// converted from that integer and scaled by 2^-89.
inline V scaled_up_2p60(V w) {
  const __m512i bits = _mm512_castps_si512(w);
  const __m512i sign = _mm512_and_si512(bits, _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  const __m512i mag = _mm512_xor_si512(bits, sign);
  const __mmask16 tiny = _mm512_testn_epi32_mask(bits, _mm512_set1_epi32(0x7f800000));
  const __m512i normal = _mm512_add_epi32(mag, _mm512_set1_epi32(60 << 23));
  const V small = _mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(0x1p-89f));
  const V scaled = _mm512_mask_blend_ps(tiny, _mm512_castsi512_ps(normal), small);
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(scaled), sign));
}

// Row r for T tokens in one pass. Per block, four partial sums per token (one per weight vector
// of a step: the multiply-adds of a step do not wait on each other), added and scaled once. A
// block whose scale times 2^(120 - shift) is not finite goes element by element on the caller's
// x, as the float path does; so does a block found to hold a NaN byte (only looked for with
// kCheckNan).
//
// With kGuard, a step holding a code of exponent 0 (a subnormal or a zero; rare in trained
// weights) multiplies (w x 2^60) by (x x 2^-60) instead: the same real products, so the same
// rounded sums, but no float32 denormal operand, which Intel's cores take through a microcode
// assist (uniformly random bytes, nearly every step holding one: 0.9 GB/s on two threads, where
// the float path reads 20).
template <int T, bool kCheckNan, bool kGuard, typename Converter>
void gemv_row(const Fp8X& q, const WeightView& w, int64_t r, int64_t c_begin, int64_t c_end, const uint8_t* ahead,
              bool first, float unshift, const Converter& convert, float* y) {
  const int64_t in = w.in, seg = w.block_cols;
  const uint8_t* row = row_ptr(w, r);
  const float* scales = w.scale_inv + (r / w.block_rows) * ((in + seg - 1) / seg);
  const __m512i ones = _mm512_set1_epi8(-1), sign = _mm512_set1_epi8(static_cast<char>(0x80));
  V acc[T];
  float tail[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps(), tail[t] = 0.0f;
  for (int64_t c0 = c_begin, s = c_begin / seg; c0 < c_end; c0 += seg, ++s) {
    const int64_t c1 = std::min(c_end, c0 + seg);
    const float sc = scales[s], vs = sc * unshift;
    if (std::isfinite(vs)) {
      V part[T][4];
      for (int t = 0; t < T; ++t)
        for (int k = 0; k < 4; ++k) part[t][k] = _mm512_setzero_ps();
      __mmask64 nan = 0;
      for (int64_t i = c0; i < c1; i += kFp8Step) {
        _mm_prefetch(reinterpret_cast<const char*>(ahead + i), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(row + i + kL1PrefetchBytes), _MM_HINT_T0);
        const StepWeights sw = convert(row + i);
        __m512i raw = _mm512_setzero_si512();
        if constexpr (kCheckNan || kGuard) raw = _mm512_loadu_si512(row + i);
        if constexpr (kCheckNan) nan |= _mm512_cmpeq_epi8_mask(_mm512_or_si512(raw, sign), ones);  // S.1111.111
        if (kGuard && _mm512_testn_epi8_mask(raw, _mm512_set1_epi8(0x78)) != 0) {
          const V down = _mm512_set1_ps(0x1p-60f);
          for (int k = 0; k < 4; ++k) {
            const V wk = scaled_up_2p60(sw.w[k]);
            for (int t = 0; t < T; ++t)
              part[t][k] = _mm512_fmadd_ps(wk, _mm512_mul_ps(_mm512_loadu_ps(q.data + t * in + i + 16 * k), down),
                                           part[t][k]);
          }
          continue;
        }
        for (int t = 0; t < T; ++t) {
          const float* xt = q.data + t * in + i;
          for (int k = 0; k < 4; ++k) part[t][k] = _mm512_fmadd_ps(sw.w[k], _mm512_loadu_ps(xt + 16 * k), part[t][k]);
        }
      }
      if (nan == 0) {
        const V sv = _mm512_set1_ps(vs);
        for (int t = 0; t < T; ++t) {
          const V sum = _mm512_add_ps(_mm512_add_ps(part[t][0], part[t][1]), _mm512_add_ps(part[t][2], part[t][3]));
          acc[t] = _mm512_fmadd_ps(sum, sv, acc[t]);
        }
        continue;
      }
    }
    for (int64_t e = c0; e < c1; ++e) {
      const float v = fp8e4m3_to_f32(row[e]) * sc;
      for (int t = 0; t < T; ++t) tail[t] += v * q.x[t * in + e];
    }
  }
  for (int t = 0; t < T; ++t) {
    const float sum = _mm512_reduce_add_ps(acc[t]) + tail[t];
    y[t * w.out + r] = first ? sum : y[t * w.out + r] + sum;
  }
}

}  // namespace

void avx512_fp8_prepare_x(const Fp8X& q) {
  DSEEK_CHECK(q.in % kFp8Step == 0, "fp8 x of {} inputs: not a multiple of {}", q.in, kFp8Step);
  const V scale = _mm512_set1_ps(std::ldexp(1.0f, q.shift));
  for (int64_t t = 0; t < q.T; ++t) {
    const float* src = q.x + t * q.in;
    float* dst = q.data + t * q.in;
    if (q.in_order) {
      for (int64_t i = 0; i < q.in; i += 16) _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_loadu_ps(src + i), scale));
      continue;
    }
    for (int64_t s = 0; s < q.in; s += kFp8Step) {
      // Vector L holds inputs 16 L + [0, 16); output vector k takes 128-bit piece k of each (a
      // 4 x 4 transpose of 128-bit pieces): inputs 16 L + 4 k + [0, 4) in its lane L.
      V v[4];
      for (int l = 0; l < 4; ++l) v[l] = _mm512_mul_ps(_mm512_loadu_ps(src + s + 16 * l), scale);
      const V a = _mm512_shuffle_f32x4(v[0], v[1], 0x44), b = _mm512_shuffle_f32x4(v[2], v[3], 0x44);
      const V c = _mm512_shuffle_f32x4(v[0], v[1], 0xEE), d = _mm512_shuffle_f32x4(v[2], v[3], 0xEE);
      _mm512_storeu_ps(dst + s, _mm512_shuffle_f32x4(a, b, 0x88));
      _mm512_storeu_ps(dst + s + 16, _mm512_shuffle_f32x4(a, b, 0xDD));
      _mm512_storeu_ps(dst + s + 32, _mm512_shuffle_f32x4(c, d, 0x88));
      _mm512_storeu_ps(dst + s + 48, _mm512_shuffle_f32x4(c, d, 0xDD));
    }
  }
}

void avx512_fp8_gemv(const Fp8X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  DSEEK_CHECK(w.dtype == DType::kF8E4M3 && w.in == q.in && w.in % kFp8Step == 0 && w.block_cols % kFp8Step == 0,
              "fp8 gemv on a {} weight of {} inputs, blocks of {}", dtype_name(w.dtype), w.in, w.block_cols);
  // Once per call, not per row (a libm call).
  const float unshift = std::ldexp(1.0f, 120 - q.shift);
  auto run = [&](const auto& convert) {
    with_gemv_tokens(q.T, [&](auto t) {
      constexpr int kT = decltype(t)::value;
      // A row at a time (see kPrefetchBytes), in column tiles when x and a row outgrow L1 (whole
      // blocks). Rows known finite skip the NaN checks.
      const ColumnTiles tiles = column_tiles(w.in, sizeof(float), 1, w.block_cols, kPrefetchBytes);
      auto rows = [&]<bool kCheckNan, bool kGuard>(std::bool_constant<kCheckNan>, std::bool_constant<kGuard>) {
        for_each_tile_row(w, r0, r1, tiles, 1, kPrefetchBytes,
                          [&](int64_t r, int64_t c0, int64_t c1, const uint8_t* ahead, bool first) {
                            gemv_row<kT, kCheckNan, kGuard>(q, w, r, c0, c1, ahead, first, unshift, convert, y);
                          });
      };
      const bool guard = fp8_denormal_guard();
      if (!w.finite) {
        guard ? rows(std::true_type{}, std::true_type{}) : rows(std::true_type{}, std::false_type{});
      } else {
        guard ? rows(std::false_type{}, std::true_type{}) : rows(std::false_type{}, std::false_type{});
      }
    });
  };
  if (q.in_order) {
    run(PermuteConverter{});
  } else {
    run(UnpackConverter{});
  }
}

}  // namespace dseek::cpu
