// Dispatch and thread split of the indexer scoring kernels, their slow twin, and top-k.
#include "cpu/indexer_kernels.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "base/check.h"
#include "base/float_types.h"

namespace dseek::cpu {

namespace {

constexpr int64_t kBlock = 128;             // one FP8 scale per 128 values
constexpr int64_t kMinKeysPerThread = 512;  // below this, one thread scores them all

indexer_detail::ScoreRangeFn family(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return indexer_detail::score_range_avx512;
    case Isa::kAvx2: return indexer_detail::score_range_avx2;
    case Isa::kScalar: break;
  }
  return indexer_detail::score_range_scalar;
}

}  // namespace

namespace indexer_detail {
void decode_key(const IndexerKeys& k, int64_t s, int64_t d, float* out) {
  const uint8_t* k8 = k.keys[s];
  const float* sc = k.scales[s];
  for (int64_t i = 0; i < d; ++i) out[i] = fp8e4m3_to_f32(k8[i]) * sc[i / kBlock];
}
}  // namespace indexer_detail

void indexer_scores_isa(Isa isa, const IndexerQuery& q, const IndexerKeys& k, float* scores, int threads) {
  DSEEK_CHECK(q.dim % kBlock == 0 && q.heads >= 1, "indexer_scores: dim {}, heads {}", q.dim, q.heads);
  DSEEK_CHECK(supported(isa), "indexer_scores: {} is not supported by this CPU", isa_name(isa));
  if (k.n <= 0) return;
  const int64_t d = q.dim, Hp = (q.heads + 15) / 16 * 16;
  std::vector<float> qt(static_cast<size_t>(d * Hp), 0.0f), w(static_cast<size_t>(Hp), 0.0f);  // [d, Hp], [Hp]
  for (int64_t j = 0; j < q.heads; ++j) {
    w[j] = q.weights[j];
    for (int64_t i = 0; i < d; ++i)
      qt[i * Hp + j] = fp8e4m3_to_f32(q.q8[j * d + i]) * q.q_scales[j * (d / kBlock) + i / kBlock];
  }
  const indexer_detail::PreparedQuery pq{Hp, d, qt.data(), w.data()};
  const indexer_detail::ScoreRangeFn fn = family(isa);
  int64_t parts = threads > 0 ? threads : omp_get_max_threads();
  if (omp_in_parallel()) parts = 1;
  parts = std::clamp<int64_t>(k.n / kMinKeysPerThread, 1, parts);
  if (parts == 1) {
    fn(pq, k, 0, k.n, scores);
    return;
  }
#pragma omp parallel for num_threads(static_cast<int>(parts)) schedule(static, 1)
  for (int64_t i = 0; i < parts; ++i) fn(pq, k, k.n * i / parts, k.n * (i + 1) / parts, scores);
}

void indexer_scores(const IndexerQuery& q, const IndexerKeys& k, float* scores, int threads) {
  indexer_scores_isa(active_isa(), q, k, scores, threads);
}

void indexer_scores_reference(const IndexerQuery& q, const IndexerKeys& k, float* scores) {
  const int64_t d = q.dim, blocks = d / kBlock;
  for (int64_t s = 0; s < k.n; ++s) {
    double total = 0;
    for (int64_t j = 0; j < q.heads; ++j) {
      double logit = 0;
      for (int64_t i = 0; i < d; ++i)
        logit += static_cast<double>(fp8e4m3_to_f32(q.q8[j * d + i])) * q.q_scales[j * blocks + i / kBlock] *
                 fp8e4m3_to_f32(k.keys[s][i]) * k.scales[s][i / kBlock];
      total += std::max(logit, 0.0) * q.weights[j];
    }
    scores[s] = static_cast<float>(total);
  }
}

std::vector<int32_t> topk_select(const float* scores, int64_t n, int64_t k) {
  k = std::clamp<int64_t>(k, 0, n);
  std::vector<int32_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>(i);
  auto better = [scores](int32_t a, int32_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); };
  if (k < n) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), better);
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace dseek::cpu
