// AVX-512 family of the indexer scoring (indexer_kernels.h): 16 heads per vector, 4 keys per
// pass so that each load of the transposed query serves 4 FMAs (indexer_scores-inl.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/attention_simd.h"
#include "cpu/indexer_kernels.h"

namespace dseek::cpu::indexer_detail {

namespace {

#include "cpu/vec_avx512-inl.h"

constexpr int kKeys = 4;
// The zero-masked max: GCC 12 warns (-Wuninitialized) on the plain form (attention_simd.h).
inline V vrelu(V v) { return _mm512_maskz_max_ps(0xffff, v, _mm512_setzero_ps()); }
inline V vfp8_raw(const uint8_t* p) { return fp8x16_raw(p); }

#include "cpu/indexer_scores-inl.h"

}  // namespace

void score_range_avx512(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores) {
  score_range_family(q, k, begin, end, scores);
}

}  // namespace dseek::cpu::indexer_detail
