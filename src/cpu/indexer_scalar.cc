// Scalar family of the indexer scoring (indexer_kernels.h): the vector families' loop order in
// plain C++, one key at a time.
#include <algorithm>
#include <vector>

#include "cpu/indexer_kernels.h"

namespace dseek::cpu::indexer_detail {

void score_range_scalar(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores) {
  const int64_t Hp = q.heads_padded, d = q.dim;
  std::vector<float> key(static_cast<size_t>(d)), logit(static_cast<size_t>(Hp));
  for (int64_t s = begin; s < end; ++s) {
    decode_key(k, s, d, key.data());
    std::fill(logit.begin(), logit.end(), 0.0f);
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = 0; j < Hp; ++j) logit[j] += q.qt[i * Hp + j] * key[i];
    float total = 0.0f;
    for (int64_t j = 0; j < Hp; ++j) total += std::max(logit[j], 0.0f) * q.w[j];
    scores[s] = total;
  }
}

}  // namespace dseek::cpu::indexer_detail
