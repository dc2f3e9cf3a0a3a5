// The integer dot-product path on AVX-512 with VNNI (linear_int8.h): activation quantization
// into the kernel's layout, and the q8/q4 matrix-vector kernel on vpdpbusd. Compiled with the
// avx512 flags (cmake/isa.cmake); reached only through the avx512 table when the CPU has VNNI.
// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 headers: silenced here only.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <type_traits>

#include "base/check.h"
#include "cpu/linear_int8.h"

namespace dseek::cpu {
namespace {

// Rows are streamed one at a time, each prefetched into L2 this far ahead of its reads: on
// v2-lite-q4 decode (dseek bench, 2 threads, alternating runs) 16.5-17.3 tok/s against 10.0-10.3
// for 4 rows at a time with the hardware prefetcher alone and 11.7-12.7 for 4 rows with a 2 KiB
// lookahead (docs/kernels.md).
constexpr int64_t kPrefetchBytes = 8192;

// quantize_x_block on 32 floats, vectorized: the same max, division, clamp and round-half-even,
// so the codes and scales are bit-identical to the scalar rule. Returns d; *a, *b get the codes
// of inputs 0..15 and 16..31 as int32.
inline float quantize_block(const float* x, __m512i* a, __m512i* b) {
  const __m512 xa = _mm512_loadu_ps(x), xb = _mm512_loadu_ps(x + 16);
  // fpclass 0x99: quiet NaN, +inf, -inf, signalling NaN.
  const bool finite = (_mm512_fpclass_ps_mask(xa, 0x99) | _mm512_fpclass_ps_mask(xb, 0x99)) == 0;
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(xa), _mm512_abs_ps(xb)));
  const float d = finite ? amax / 127.0f : NAN;
  if (!(d > 0.0f)) {
    *a = *b = _mm512_setzero_si512();
    return d;
  }
  const __m512 dv = _mm512_set1_ps(d), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  const __m512 va = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(xa, dv), lo), hi);
  const __m512 vb = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(xb, dv), lo), hi);
  *a = _mm512_cvt_roundps_epi32(va, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  *b = _mm512_cvt_roundps_epi32(vb, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return d;
}

void quantize_x(const float* x, const WeightView& w, const Int8X& q) {
  const int64_t in = w.in, ci = q.chunk_in;
  const bool q4 = ci == 256;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t t = 0; t < q.T; ++t) {
    int8_t* qt = q.q + t * q.chunks * ci;
    float* st = q.scale + t * q.blocks * kInt8Lanes;  // sub-block i / 32 of the token's x
    int32_t* bt = q.bias + t * q.chunks * kInt8Lanes;
    // The last chunk may run past in: its padding is zero codes with zero scale.
    std::memset(qt + (q.chunks - 1) * ci, 0, static_cast<size_t>(ci));
    std::memset(st + (q.blocks - 1) * kInt8Lanes, 0, kInt8Lanes * sizeof(float));
    for (int64_t i0 = 0; i0 < in; i0 += kInt8Sub) {
      __m512i a, b;  // codes of the group's inputs 0..15, 16..31
      const float d = quantize_block(x + t * in + i0, &a, &b);
      const int64_t c = i0 / ci, g = (i0 % ci) / kInt8Sub, slot = q4 ? kQ4Slot[g] : g;
      int8_t* qc = qt + c * ci;
      if (q4) {  // even inputs to the low-nibble pieces, odd to the high; a to A', b to B'
        const __m128i ev = _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(a, even, b));
        const __m128i od = _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(a, odd, b));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(qc + 8 * slot), ev);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(qc + 64 + 8 * slot), od);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(qc + 128 + 8 * slot), _mm_unpackhi_epi64(ev, ev));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(qc + 192 + 8 * slot), _mm_unpackhi_epi64(od, od));
      } else {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qc + 16 * g), _mm512_cvtepi32_epi8(a));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qc + 64 + 16 * g), _mm512_cvtepi32_epi8(b));
      }
      st[i0 / kInt8Sub] = d;
    }
    // bias = -offset * (lane sums of the codes): vpdpbusd with all-ones u8 sums 4 codes a lane.
    for (int64_t c = 0; c < q.chunks; ++c) {
      const int8_t* qc = qt + c * ci;
      __m512i sum = _mm512_setzero_si512();
      for (int64_t v = 0; v < ci; v += 64) sum = _mm512_dpbusd_epi32(sum, ones, _mm512_load_si512(qc + v));
      const __m512i bias = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, q4 ? 3 : 7));
      _mm512_store_si512(bt + c * kInt8Lanes, bias);
    }
  }
}

inline __mmask64 first_bytes(int64_t n) {
  return n >= 64 ? ~__mmask64{0} : n <= 0 ? __mmask64{0} : (__mmask64{1} << n) - 1;
}

// One row, T tokens, a block (512 inputs: 2 q4 or 4 q8 chunks) per step. Per block, the 16
// weight scales meet the tokens' 16 activation scales in one multiply; per chunk, two 64-byte
// weight loads are regrouped into A', B' (linear_int8.h; q4 also split into nibbles), two (q4:
// four) vpdpbusd per token start from the token's bias, and the 16 exact lane sums go to float
// and are accumulated times their lane's scale product, permuted out of the block's. Chunks
// alternate between two accumulators, so consecutive chunks' work is independent.
// With one multiply per block instead of a scale load, a multiply and a table load per chunk, two
// accumulators, whole blocks unmasked and the per-row set-up hoisted out of the row loop, the q4
// kernel went from 37.6 to 43.3 GB/s a core in L2 on a [128, 2048] matrix (V2-Lite's gate and up
// projections) and from 28.8 to 37.1 on [128, 1408] (its down projection).
template <bool kQ4, int T>
void gemv_rows(const Int8X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  constexpr int64_t kChunkIn = kQ4 ? 256 : 128, kChunksPerBlock = kInt8Block / kChunkIn;
  const int64_t groups = w.in / w.group_size, chunks = q.chunks, rb = row_bytes(w), sb = 2 * groups;
  const int64_t tail_bytes = rb - (chunks - 1) * 128;
  const __mmask64 tail_a = first_bytes(tail_bytes), tail_b = first_bytes(tail_bytes - 64);
  // Token t's pieces are t * xstride (codes, bias) and t * sstride (scales) past token 0's.
  const int64_t xstride = chunks * kChunkIn, bstride = chunks * kInt8Lanes, sstride = q.blocks * kInt8Lanes;
  const bool subs_are_groups = w.group_size == kInt8Sub;
  const uint8_t* wc = nullptr;  // the row's codes and scales
  const uint8_t* sr = nullptr;
  const __m512i nibble = _mm512_set1_epi8(0x0f), flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i lane_sub[kChunksPerBlock];
  for (int64_t j = 0; j < kChunksPerBlock; ++j) lane_sub[j] = _mm512_load_si512(q.lane_sub + j * kInt8Lanes);
  __m512 acc[2][T];

  // The u8 operands of chunk c of the row, in the order of the chunk's x pieces (q8: two). The
  // tail chunk, the row's last, is loaded masked.
  using Operands = __m512i[kQ4 ? 4 : 2];
  auto operands = [&](int64_t c, bool last, Operands& u) {
    const uint8_t* wp = wc + c * 128;
    // The chunk's two cache lines, kPrefetchBytes ahead.
    _mm_prefetch(reinterpret_cast<const char*>(wp + kPrefetchBytes), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(wp + kPrefetchBytes + 64), _MM_HINT_T1);
    // Plain loads where the whole vector is in the row: a masked load costs more even with every
    // lane on (with this one and the scales' below, the q4 kernel ran 29 GB/s a core on a
    // V2-Lite expert in L3 against 25 with both masked).
    const __m512i a = last ? _mm512_maskz_loadu_epi8(tail_a, wp) : _mm512_loadu_si512(wp);
    const __m512i b = last ? _mm512_maskz_loadu_epi8(tail_b, wp + 64) : _mm512_loadu_si512(wp + 64);
    if constexpr (kQ4 && T == 1) {
      // High nibbles left in place (16 x the code + 8): their products go to a chain of their
      // own, shifted down once per chunk, which for one token is one shift instead of two.
      const __m512i a2 = _mm512_unpacklo_epi64(a, b), b2 = _mm512_unpackhi_epi64(a, b);  // kQ4SubOrder
      u[0] = _mm512_and_si512(a2, nibble);
      u[1] = _mm512_andnot_si512(nibble, a2);
      u[2] = _mm512_and_si512(b2, nibble);
      u[3] = _mm512_andnot_si512(nibble, b2);
    } else if constexpr (kQ4) {
      const __m512i a2 = _mm512_unpacklo_epi64(a, b), b2 = _mm512_unpackhi_epi64(a, b);  // kQ4SubOrder
      u[0] = _mm512_and_si512(a2, nibble);
      u[1] = _mm512_and_si512(_mm512_srli_epi16(a2, 4), nibble);
      u[2] = _mm512_and_si512(b2, nibble);
      u[3] = _mm512_and_si512(_mm512_srli_epi16(b2, 4), nibble);
    } else {  // w + 128 as u8
      u[0] = _mm512_xor_si512(_mm512_shuffle_i64x2(a, b, 0x88), flip);
      u[1] = _mm512_xor_si512(_mm512_shuffle_i64x2(a, b, 0xDD), flip);
    }
  };
  // Chunk c (the j-th of its block) into accumulator j % 2, every token.
  auto accumulate = [&]<int j>(int64_t c, std::integral_constant<int, j>, const Operands& u, const __m512 (&scales)[T]) {
    const int8_t* xc = q.q + c * kChunkIn;
    const int32_t* bc = q.bias + c * kInt8Lanes;
    for (int t = 0; t < T; ++t) {
      const int8_t* xq = xc + t * xstride;
      __m512i dot = _mm512_load_si512(bc + t * bstride);
      if constexpr (kQ4 && T == 1) {  // exact: the high chain is a multiple of 16
        __m512i high = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[1], _mm512_load_si512(xq + 64));
        dot = _mm512_dpbusd_epi32(dot, u[0], _mm512_load_si512(xq));
        high = _mm512_dpbusd_epi32(high, u[3], _mm512_load_si512(xq + 192));
        dot = _mm512_dpbusd_epi32(dot, u[2], _mm512_load_si512(xq + 128));
        dot = _mm512_add_epi32(dot, _mm512_srai_epi32(high, 4));
      } else if constexpr (kQ4) {  // two chains of two: one chain of four was latency-bound (T = 1: -20 %)
        __m512i d2 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[2], _mm512_load_si512(xq + 128));
        dot = _mm512_dpbusd_epi32(dot, u[0], _mm512_load_si512(xq));
        d2 = _mm512_dpbusd_epi32(d2, u[3], _mm512_load_si512(xq + 192));
        dot = _mm512_dpbusd_epi32(dot, u[1], _mm512_load_si512(xq + 64));
        dot = _mm512_add_epi32(dot, d2);
      } else {
        dot = _mm512_dpbusd_epi32(dot, u[0], _mm512_load_si512(xq));
        dot = _mm512_dpbusd_epi32(dot, u[1], _mm512_load_si512(xq + 64));
      }
      const __m512 s = _mm512_permutexvar_ps(lane_sub[j], scales[t]);
      acc[j % 2][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[j % 2][t]);
    }
  };
  // The block's 16 scale products per token: weight scale of each sub-block x its x scale.
  auto block_scales = [&](int64_t blk, __m512 (&scales)[T]) {
    const int64_t g0 = q.block_group[blk], n = std::min<int64_t>(16, groups - g0);
    const __mmask16 smask = static_cast<__mmask16>((1u << n) - 1);
    const __m512 ws = _mm512_cvtph_ps(n == 16 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sr + 2 * g0))
                                              : _mm256_maskz_loadu_epi16(smask, sr + 2 * g0));
    // Groups of 32 (the default) are the sub-blocks themselves: no permute (5% of the q4 kernel).
    const __m512 sub_ws =
        subs_are_groups ? ws : _mm512_permutexvar_ps(_mm512_load_si512(q.sub_group + blk * kInt8Lanes), ws);
    for (int t = 0; t < T; ++t)
      scales[t] = _mm512_mul_ps(sub_ws, _mm512_load_ps(q.scale + t * sstride + blk * kInt8Lanes));
  };

  // One row at a time (see kPrefetchBytes). Whole blocks: unmasked, unrolled. Then the rest of
  // the row, if any: its last chunk masked.
  const int64_t whole_blocks = w.in / kInt8Block;
  for (int64_t r = r0; r < r1; ++r) {
    wc = row_ptr(w, r);
    sr = w.group_scales + r * sb;
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < T; ++t) acc[h][t] = _mm512_setzero_ps();
    for (int64_t blk = 0; blk < whole_blocks; ++blk) {
      __m512 scales[T];
      block_scales(blk, scales);
      const int64_t c0 = blk * kChunksPerBlock;
      Operands u[kChunksPerBlock];
      for (int64_t j = 0; j < kChunksPerBlock; ++j) operands(c0 + j, false, u[j]);
      accumulate(c0, std::integral_constant<int, 0>{}, u[0], scales);
      accumulate(c0 + 1, std::integral_constant<int, 1>{}, u[1], scales);
      if constexpr (!kQ4) {
        accumulate(c0 + 2, std::integral_constant<int, 2>{}, u[2 % kChunksPerBlock], scales);
        accumulate(c0 + 3, std::integral_constant<int, 3>{}, u[3 % kChunksPerBlock], scales);
      }
    }
    if (whole_blocks < q.blocks) {
      __m512 scales[T];
      block_scales(whole_blocks, scales);
      for (int64_t c = whole_blocks * kChunksPerBlock; c < chunks; ++c) {
        Operands u;
        operands(c, c == chunks - 1, u);
        switch (c % kChunksPerBlock) {
          case 0: accumulate(c, std::integral_constant<int, 0>{}, u, scales); break;
          case 1: accumulate(c, std::integral_constant<int, 1>{}, u, scales); break;
          case 2: accumulate(c, std::integral_constant<int, 2 % kChunksPerBlock>{}, u, scales); break;
          default: accumulate(c, std::integral_constant<int, 3 % kChunksPerBlock>{}, u, scales); break;
        }
      }
    }
    for (int t = 0; t < T; ++t) y[t * w.out + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t]));
  }
}

template <bool kQ4>
void gemv_format(const Int8X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  with_gemv_tokens(q.T, [&](auto t) { gemv_rows<kQ4, decltype(t)::value>(q, w, r0, r1, y); });
}

void gemv_int8(const Int8X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  DSEEK_CHECK(w.dtype == DType::kI8 || w.dtype == DType::kU8, "int8 gemv on {}", dtype_name(w.dtype));
  if (w.dtype == DType::kU8) return gemv_format<true>(q, w, r0, r1, y);
  gemv_format<false>(q, w, r0, r1, y);
}

}  // namespace

void avx512_int8_quantize_x(const float* x, const WeightView& w, const Int8X& q) { quantize_x(x, w, q); }
void avx512_int8_gemv(const Int8X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  gemv_int8(q, w, r0, r1, y);
}

}  // namespace dseek::cpu
