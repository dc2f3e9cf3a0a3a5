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

using V = __m256;
constexpr int64_t kLanes = 8;
inline V vzero() { return _mm256_setzero_ps(); }
inline V vset1(float v) { return _mm256_set1_ps(v); }
inline V vloadu(const float* p) { return _mm256_loadu_ps(p); }
inline void vstoreu(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V vfmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
inline float vsum(V v) { return hsum_ps256(v); }
inline V vbf16(const uint8_t* p) { return bf16x8(p); }
inline V vfp8_raw(const uint8_t* p) { return fp8x8_raw(p); }

#include "cpu/attention_rows-inl.h"

}  // namespace

void attend_rows_avx2(const MlaAttendArgs& a, const float* qp, int64_t begin, int64_t end, const PartialState& st) {
  attend_rows_family(a, qp, begin, end, st);
}

}  // namespace dseek::cpu::attention_detail
