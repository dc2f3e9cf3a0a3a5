// The absorbed-attention row kernel of attention_family.h, written once and compiled per
// family: the including file (attention_avx2.cc, attention_avx512.cc) opens its namespace and
// defines V, kLanes, vzero, vset1, vloadu, vstoreu, vfmadd, vmul, vsum (lane sum), vbf16 (kLanes
// bf16 -> floats) and vfp8_raw (kLanes e4m3 -> floats x 2^-120, attention_simd.h). Softmax
// bookkeeping is 8 rows wide (one __m256) in both families. No include guard: included once per
// family.

// Decodes row `src` into tile row `dst` [pad16(r) + pad16(d_r)]; r and d_r multiples of 16.
void decode_row(const LatentLayout& L, const uint8_t* src, float* dst) {
  const int64_t r = L.rank, dr = L.rope;
  if (L.format == LatentFormat::kBf16) {
    for (int64_t i = 0; i < r + dr; i += kLanes) vstoreu(dst + i, vbf16(src + 2 * i));
    return;
  }
  const uint8_t* scales = src + L.fp8_scales_offset();
  for (int64_t b = 0; b < L.fp8_blocks(); ++b) {
    float s;
    std::memcpy(&s, scales + 4 * b, 4);
    const V sv = vset1(s * kFp8Rescale);
    const int64_t end = std::min(r, (b + 1) * LatentLayout::kFp8Block);
    for (int64_t i = b * LatentLayout::kFp8Block; i < end; i += kLanes)
      vstoreu(dst + i, vmul(vfp8_raw(src + i), sv));
  }
  const uint8_t* rope = src + L.fp8_rope_offset();
  for (int64_t i = 0; i < dr; i += kLanes) vstoreu(dst + r + i, vbf16(rope + 2 * i));
}

// One tile's logits, softmax update and weighted rows for heads [h0, h0 + NH): every row vector
// loaded feeds NH heads (at NH = 1 the kernel loads about one vector per multiply-add and waits
// on its loads). Each head's sums run in the same order whatever NH is.
template <int NH>
void attend_tile_heads(const float* qp, int64_t h0, int64_t K, int64_t Rp, const float* const* rows, __m256 valid,
                       const PartialState& st) {
  const float* q[NH];
  for (int n = 0; n < NH; ++n) q[n] = qp + (h0 + n) * K;
  V s[NH][kTileRows];
  for (int n = 0; n < NH; ++n)
    for (V& v : s[n]) v = vzero();
  for (int64_t i = 0; i < K; i += kLanes) {
    V qv[NH];
    for (int n = 0; n < NH; ++n) qv[n] = vloadu(q[n] + i);
    for (int64_t b = 0; b < kTileRows; ++b) {
      const V rv = vloadu(rows[b] + i);
      for (int n = 0; n < NH; ++n) s[n][b] = vfmadd(qv[n], rv, s[n][b]);
    }
  }
  V cv[NH], pv_b[NH][kTileRows];
  float* acc[NH];
  for (int n = 0; n < NH; ++n) {
    const int64_t h = h0 + n;
    alignas(32) float lgs[kTileRows], p[kTileRows];
    for (int64_t b = 0; b < kTileRows; ++b) lgs[b] = vsum(s[n][b]);
    __m256 lg = _mm256_load_ps(lgs);
    lg = _mm256_blendv_ps(_mm256_set1_ps(-std::numeric_limits<float>::infinity()), lg, valid);
    const float m_new = std::max(st.m[h], hmax_ps256(lg));
    const float corr = std::exp(st.m[h] - m_new);  // 0 on the first tile (m = -inf)
    const __m256 pv = exp_ps256(_mm256_sub_ps(lg, _mm256_set1_ps(m_new)));
    _mm256_store_ps(p, pv);
    st.l[h] = st.l[h] * corr + hsum_ps256(pv);
    st.m[h] = m_new;
    acc[n] = st.acc + h * Rp;
    cv[n] = vset1(corr);
    for (int64_t b = 0; b < kTileRows; ++b) pv_b[n][b] = vset1(p[b]);
  }
  for (int64_t i = 0; i < Rp; i += kLanes) {
    V v[NH];
    for (int n = 0; n < NH; ++n) v[n] = vmul(vloadu(acc[n] + i), cv[n]);
    for (int64_t b = 0; b < kTileRows; ++b) {
      const V rv = vloadu(rows[b] + i);
      for (int n = 0; n < NH; ++n) v[n] = vfmadd(pv_b[n][b], rv, v[n]);
    }
    for (int n = 0; n < NH; ++n) vstoreu(acc[n] + i, v[n]);
  }
}

// Heads taken two at a time where the family has the registers for it (AVX-512: 16 logit
// accumulators plus operands in 32 zmm; AVX2 has 16 ymm). One thread, V2-Lite's 16 heads over
// 512 f32 rows, best of 5 runs: 66 GFLOP/s against 61 one head at a time; three heads, 66.
constexpr int kHeadsPerPass = kLanes == 16 ? 2 : 1;

void attend_rows_family(const MlaAttendArgs& a, const float* qp, int64_t begin, int64_t end, const PartialState& st) {
  const LatentLayout& L = a.layout;
  const int64_t H = a.heads, Rp = pad16(L.rank), K = Rp + pad16(L.rope);
  std::fill(st.m, st.m + H, -std::numeric_limits<float>::infinity());
  std::fill(st.l, st.l + H, 0.0f);
  std::fill(st.acc, st.acc + H * Rp, 0.0f);
  const bool aligned16 = L.rank % 16 == 0 && L.rope % 16 == 0;  // tile rows == stored f32 rows
  std::vector<float> tile(static_cast<size_t>(kTileRows * K), 0.0f);  // [B, K]
  const float* rows[kTileRows];
  for (int64_t t0 = begin; t0 < end; t0 += kTileRows) {
    const int64_t nb = std::min(kTileRows, end - t0);
    if (!aligned16 || nb < kTileRows) {
      decode_tile_scalar(a, t0, nb, tile.data());
      for (int64_t b = 0; b < kTileRows; ++b) rows[b] = tile.data() + b * K;
    } else if (L.format == LatentFormat::kF32) {
      for (int64_t b = 0; b < kTileRows; ++b) rows[b] = reinterpret_cast<const float*>(a.rows[t0 + b]);
    } else {
      for (int64_t b = 0; b < kTileRows; ++b) {
        decode_row(L, a.rows[t0 + b], tile.data() + b * K);
        rows[b] = tile.data() + b * K;
      }
    }
    static_assert(kTileRows == 8, "the softmax keeps the 8 rows' logits in one __m256");
    const __m256 valid = _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(nb)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    int64_t h = 0;
    for (; h + kHeadsPerPass <= H; h += kHeadsPerPass) attend_tile_heads<kHeadsPerPass>(qp, h, K, Rp, rows, valid, st);
    for (; h < H; ++h) attend_tile_heads<1>(qp, h, K, Rp, rows, valid, st);
  }
}
