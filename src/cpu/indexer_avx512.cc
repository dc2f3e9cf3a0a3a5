// AVX-512 family of the indexer scoring (indexer_kernels.h): 16 heads per vector, 4 keys per
// pass so that each load of the transposed query serves 4 FMAs (indexer_scores-inl.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/attention_simd.h"
#include "cpu/indexer_kernels.h"

namespace dseek::cpu::indexer_detail {

namespace {

using V = __m512;
constexpr int64_t kLanes = 16;
constexpr int kKeys = 4;
inline V vzero() { return _mm512_setzero_ps(); }
inline V vset1(float v) { return _mm512_set1_ps(v); }
inline V vloadu(const float* p) { return _mm512_loadu_ps(p); }
inline void vstoreu(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V vfmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
// The zero-masked max: GCC 12 warns (-Wuninitialized) on the plain form (attention_simd.h).
inline V vrelu(V v) { return _mm512_maskz_max_ps(0xffff, v, _mm512_setzero_ps()); }
inline float vsum(V v) { return hsum_ps512(v); }
inline V vfp8_raw(const uint8_t* p) { return fp8x16_raw(p); }

#include "cpu/indexer_scores-inl.h"

}  // namespace

void score_range_avx512(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores) {
  score_range_family(q, k, begin, end, scores);
}

}  // namespace dseek::cpu::indexer_detail
