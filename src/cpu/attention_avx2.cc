// AVX2 family of the absorbed MLA attention (attention_family.h): 8 floats per vector, rows
// decoded to float32 tiles (e4m3 and bf16 by shifts).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/attention_family.h"
#include "cpu/attention_simd.h"

namespace dseek::cpu::attention_detail {

namespace {

// Decodes row `src` into tile row `dst` [pad16(r) + pad16(d_r)]; r and d_r multiples of 16.
void decode_row8(const LatentLayout& L, const uint8_t* src, float* dst) {
  const int64_t r = L.rank, dr = L.rope;
  if (L.format == LatentFormat::kBf16) {
    for (int64_t i = 0; i < r + dr; i += 8) _mm256_storeu_ps(dst + i, bf16x8(src + 2 * i));
    return;
  }
  const uint8_t* scales = src + L.fp8_scales_offset();
  for (int64_t b = 0; b < L.fp8_blocks(); ++b) {
    float s;
    std::memcpy(&s, scales + 4 * b, 4);
    const __m256 sv = _mm256_set1_ps(s * kFp8Rescale);
    const int64_t end = std::min(r, (b + 1) * LatentLayout::kFp8Block);
    for (int64_t i = b * LatentLayout::kFp8Block; i < end; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_mul_ps(fp8x8_raw(src + i), sv));
  }
  const uint8_t* rope = src + L.fp8_rope_offset();
  for (int64_t i = 0; i < dr; i += 8) _mm256_storeu_ps(dst + r + i, bf16x8(rope + 2 * i));
}

}  // namespace

void attend_rows_avx2(const MlaAttendArgs& a, const float* qp, int64_t begin, int64_t end, const PartialState& st) {
  const LatentLayout& L = a.layout;
  const int64_t H = a.heads, Rp = pad16(L.rank), K = Rp + pad16(L.rope);
  std::fill(st.m, st.m + H, -std::numeric_limits<float>::infinity());
  std::fill(st.l, st.l + H, 0.0f);
  std::fill(st.acc, st.acc + H * Rp, 0.0f);
  const bool aligned16 = L.rank % 16 == 0 && L.rope % 16 == 0;  // tile rows == stored f32 rows
  std::vector<float> tile(static_cast<size_t>(kTileRows * K), 0.0f);  // [B, K]
  const float* rows[kTileRows];
  alignas(32) float p[kTileRows];
  alignas(32) float lgs[kTileRows];
  for (int64_t t0 = begin; t0 < end; t0 += kTileRows) {
    const int64_t nb = std::min(kTileRows, end - t0);
    if (!aligned16 || nb < kTileRows) {
      decode_tile_scalar(a, t0, nb, tile.data());
      for (int64_t b = 0; b < kTileRows; ++b) rows[b] = tile.data() + b * K;
    } else if (L.format == LatentFormat::kF32) {
      for (int64_t b = 0; b < kTileRows; ++b) rows[b] = reinterpret_cast<const float*>(a.rows[t0 + b]);
    } else {
      for (int64_t b = 0; b < kTileRows; ++b) {
        decode_row8(L, a.rows[t0 + b], tile.data() + b * K);
        rows[b] = tile.data() + b * K;
      }
    }
    static_assert(kTileRows == 8, "the loops below are unrolled for 8 rows");
    const __m256 valid = _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(nb)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    for (int64_t h = 0; h < H; ++h) {
      const float* q = qp + h * K;
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
      for (int64_t i = 0; i < K; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
        s0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows[0] + i), s0);
        s1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows[1] + i), s1);
        s2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows[2] + i), s2);
        s3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows[3] + i), s3);
        s4 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows[4] + i), s4);
        s5 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows[5] + i), s5);
        s6 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows[6] + i), s6);
        s7 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows[7] + i), s7);
      }
      lgs[0] = hsum_ps256(s0), lgs[1] = hsum_ps256(s1), lgs[2] = hsum_ps256(s2), lgs[3] = hsum_ps256(s3);
      lgs[4] = hsum_ps256(s4), lgs[5] = hsum_ps256(s5), lgs[6] = hsum_ps256(s6), lgs[7] = hsum_ps256(s7);
      __m256 lg = _mm256_load_ps(lgs);
      lg = _mm256_blendv_ps(_mm256_set1_ps(-std::numeric_limits<float>::infinity()), lg, valid);
      const float m_new = std::max(st.m[h], hmax_ps256(lg));
      const float corr = std::exp(st.m[h] - m_new);  // 0 on the first tile (m = -inf)
      const __m256 pv = exp_ps256(_mm256_sub_ps(lg, _mm256_set1_ps(m_new)));
      _mm256_store_ps(p, pv);
      st.l[h] = st.l[h] * corr + hsum_ps256(pv);
      st.m[h] = m_new;
      float* acc = st.acc + h * Rp;
      const __m256 cv = _mm256_set1_ps(corr);
      const __m256 p0 = _mm256_set1_ps(p[0]), p1 = _mm256_set1_ps(p[1]), p2 = _mm256_set1_ps(p[2]),
                   p3 = _mm256_set1_ps(p[3]), p4 = _mm256_set1_ps(p[4]), p5 = _mm256_set1_ps(p[5]),
                   p6 = _mm256_set1_ps(p[6]), p7 = _mm256_set1_ps(p[7]);
      for (int64_t i = 0; i < Rp; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(acc + i), cv);
        v = _mm256_fmadd_ps(p0, _mm256_loadu_ps(rows[0] + i), v);
        v = _mm256_fmadd_ps(p1, _mm256_loadu_ps(rows[1] + i), v);
        v = _mm256_fmadd_ps(p2, _mm256_loadu_ps(rows[2] + i), v);
        v = _mm256_fmadd_ps(p3, _mm256_loadu_ps(rows[3] + i), v);
        v = _mm256_fmadd_ps(p4, _mm256_loadu_ps(rows[4] + i), v);
        v = _mm256_fmadd_ps(p5, _mm256_loadu_ps(rows[5] + i), v);
        v = _mm256_fmadd_ps(p6, _mm256_loadu_ps(rows[6] + i), v);
        v = _mm256_fmadd_ps(p7, _mm256_loadu_ps(rows[7] + i), v);
        _mm256_storeu_ps(acc + i, v);
      }
    }
  }
}

}  // namespace dseek::cpu::attention_detail
