// AVX2 family of the indexer scoring (indexer_kernels.h): 8 heads per vector, 2 keys per pass
// and 4 vectors of heads at a time (8 accumulators of the 16 registers; indexer_scores-inl.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/attention_simd.h"
#include "cpu/indexer_kernels.h"

namespace dseek::cpu::indexer_detail {

namespace {

#include "cpu/vec_avx2-inl.h"

constexpr int kKeys = 2;
inline V vrelu(V v) { return _mm256_max_ps(v, _mm256_setzero_ps()); }
inline V vfp8_raw(const uint8_t* p) { return fp8x8_raw(p); }

#include "cpu/indexer_scores-inl.h"

}  // namespace

void score_range_avx2(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores) {
  score_range_family(q, k, begin, end, scores);
}

}  // namespace dseek::cpu::indexer_detail
