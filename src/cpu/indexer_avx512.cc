// AVX-512 family of the indexer scoring (indexer_kernels.h): 16 heads per vector, 4 keys per
// pass so that each load of the transposed query serves 4 FMAs.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/attention_simd.h"
#include "cpu/indexer_kernels.h"

namespace dseek::cpu::indexer_detail {

namespace {

constexpr int kKeys = 4;

void decode_key16(const IndexerKeys& k, int64_t s, int64_t d, float* out) {
  const uint8_t* k8 = k.keys[s];
  for (int64_t b = 0; b < d / 128; ++b) {
    const __m512 sv = _mm512_set1_ps(k.scales[s][b] * kFp8Rescale);
    for (int64_t i = b * 128; i < (b + 1) * 128; i += 16)
      _mm512_storeu_ps(out + i, _mm512_mul_ps(fp8x16_raw(k8 + i), sv));
  }
}

// Heads [16 hb0, 16 (hb0 + NB)) of kKeys keys: adds sum_j w[j] ReLU(logit) into total[kKeys].
template <int NB>
void head_blocks(const PreparedQuery& q, const float* kf, int64_t hb0, float* total) {
  const int64_t Hp = q.heads_padded, d = q.dim;
  __m512 acc[kKeys][NB];
  for (auto& a : acc)
    for (auto& v : a) v = _mm512_setzero_ps();
  const float* qt = q.qt + hb0 * 16;
  for (int64_t i = 0; i < d; ++i) {
    __m512 qv[NB];
    for (int b = 0; b < NB; ++b) qv[b] = _mm512_loadu_ps(qt + i * Hp + 16 * b);
    for (int key = 0; key < kKeys; ++key) {
      const __m512 kv = _mm512_set1_ps(kf[key * d + i]);
      for (int b = 0; b < NB; ++b) acc[key][b] = _mm512_fmadd_ps(qv[b], kv, acc[key][b]);
    }
  }
  for (int key = 0; key < kKeys; ++key) {
    __m512 t = _mm512_setzero_ps();
    for (int b = 0; b < NB; ++b)
      t = _mm512_fmadd_ps(_mm512_maskz_max_ps(0xffff, acc[key][b], _mm512_setzero_ps()), _mm512_loadu_ps(q.w + (hb0 + b) * 16), t);
    total[key] += hsum_ps512(t);
  }
}

}  // namespace

void score_range_avx512(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores) {
  const int64_t d = q.dim, blocks = q.heads_padded / 16;
  std::vector<float> kf(static_cast<size_t>(kKeys * d));  // [kKeys, d] decoded keys
  for (int64_t s0 = begin; s0 < end; s0 += kKeys) {
    const int64_t nk = std::min<int64_t>(kKeys, end - s0);
    for (int64_t key = 0; key < kKeys; ++key) {
      if (key < nk) decode_key16(k, s0 + key, d, kf.data() + key * d);
      else std::fill_n(kf.data() + key * d, d, 0.0f);
    }
    float total[kKeys] = {};
    int64_t hb = 0;
    for (; hb + 4 <= blocks; hb += 4) head_blocks<4>(q, kf.data(), hb, total);
    for (; hb + 2 <= blocks; hb += 2) head_blocks<2>(q, kf.data(), hb, total);
    for (; hb < blocks; ++hb) head_blocks<1>(q, kf.data(), hb, total);
    for (int64_t key = 0; key < nk; ++key) scores[s0 + key] = total[key];
  }
}

}  // namespace dseek::cpu::indexer_detail
