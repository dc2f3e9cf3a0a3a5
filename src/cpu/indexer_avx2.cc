// AVX2 family of the indexer scoring (indexer_kernels.h): 8 heads per vector, 2 keys per pass
// and 4 vectors of heads at a time (8 accumulators of the 16 registers).
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/attention_simd.h"
#include "cpu/indexer_kernels.h"

namespace dseek::cpu::indexer_detail {

namespace {

constexpr int kKeys = 2;

void decode_key8(const IndexerKeys& k, int64_t s, int64_t d, float* out) {
  const uint8_t* k8 = k.keys[s];
  for (int64_t b = 0; b < d / 128; ++b) {
    const __m256 sv = _mm256_set1_ps(k.scales[s][b] * kFp8Rescale);
    for (int64_t i = b * 128; i < (b + 1) * 128; i += 8)
      _mm256_storeu_ps(out + i, _mm256_mul_ps(fp8x8_raw(k8 + i), sv));
  }
}

// Heads [8 hv0, 8 (hv0 + NV)) of kKeys keys: adds sum_j w[j] ReLU(logit) into total[kKeys].
template <int NV>
void head_vectors(const PreparedQuery& q, const float* kf, int64_t hv0, float* total) {
  const int64_t Hp = q.heads_padded, d = q.dim;
  __m256 acc[kKeys][NV];
  for (auto& a : acc)
    for (auto& v : a) v = _mm256_setzero_ps();
  const float* qt = q.qt + hv0 * 8;
  for (int64_t i = 0; i < d; ++i) {
    __m256 qv[NV];
    for (int b = 0; b < NV; ++b) qv[b] = _mm256_loadu_ps(qt + i * Hp + 8 * b);
    for (int key = 0; key < kKeys; ++key) {
      const __m256 kv = _mm256_broadcast_ss(kf + key * d + i);
      for (int b = 0; b < NV; ++b) acc[key][b] = _mm256_fmadd_ps(qv[b], kv, acc[key][b]);
    }
  }
  for (int key = 0; key < kKeys; ++key) {
    __m256 t = _mm256_setzero_ps();
    for (int b = 0; b < NV; ++b)
      t = _mm256_fmadd_ps(_mm256_max_ps(acc[key][b], _mm256_setzero_ps()), _mm256_loadu_ps(q.w + (hv0 + b) * 8), t);
    total[key] += hsum_ps256(t);
  }
}

}  // namespace

void score_range_avx2(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores) {
  const int64_t d = q.dim, vectors = q.heads_padded / 8;
  std::vector<float> kf(static_cast<size_t>(kKeys * d));  // [kKeys, d] decoded keys
  for (int64_t s0 = begin; s0 < end; s0 += kKeys) {
    const int64_t nk = std::min<int64_t>(kKeys, end - s0);
    for (int64_t key = 0; key < kKeys; ++key) {
      if (key < nk) decode_key8(k, s0 + key, d, kf.data() + key * d);
      else std::fill_n(kf.data() + key * d, d, 0.0f);
    }
    float total[kKeys] = {};
    int64_t hv = 0;
    for (; hv + 4 <= vectors; hv += 4) head_vectors<4>(q, kf.data(), hv, total);
    for (; hv + 2 <= vectors; hv += 2) head_vectors<2>(q, kf.data(), hv, total);
    for (; hv < vectors; ++hv) head_vectors<1>(q, kf.data(), hv, total);
    for (int64_t key = 0; key < nk; ++key) scores[s0 + key] = total[key];
  }
}

}  // namespace dseek::cpu::indexer_detail
