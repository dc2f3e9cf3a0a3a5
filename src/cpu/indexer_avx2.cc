// AVX2 family of the indexer scoring (indexer_kernels.h): 8 heads per vector, 2 keys per pass
// and 4 vectors of heads at a time (8 accumulators of the 16 registers; indexer_scores-inl.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/attention_simd.h"
#include "cpu/indexer_kernels.h"

namespace dseek::cpu::indexer_detail {

namespace {

using V = __m256;
constexpr int64_t kLanes = 8;
constexpr int kKeys = 2;
inline V vzero() { return _mm256_setzero_ps(); }
inline V vset1(float v) { return _mm256_set1_ps(v); }
inline V vloadu(const float* p) { return _mm256_loadu_ps(p); }
inline void vstoreu(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V vfmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V vrelu(V v) { return _mm256_max_ps(v, _mm256_setzero_ps()); }
inline float vsum(V v) { return hsum_ps256(v); }
inline V vfp8_raw(const uint8_t* p) { return fp8x8_raw(p); }

#include "cpu/indexer_scores-inl.h"

}  // namespace

void score_range_avx2(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores) {
  score_range_family(q, k, begin, end, scores);
}

}  // namespace dseek::cpu::indexer_detail
