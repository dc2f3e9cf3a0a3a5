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

#include "cpu/vec_avx2-inl.h"

inline V vbf16(const uint8_t* p) { return bf16x8(p); }
inline V vfp8_raw(const uint8_t* p) { return fp8x8_raw(p); }

#include "cpu/attention_rows-inl.h"

}  // namespace

void attend_rows_avx2(const MlaAttendArgs& a, const float* qp, int64_t begin, int64_t end, const PartialState& st) {
  attend_rows_family(a, qp, begin, end, st);
}

}  // namespace dseek::cpu::attention_detail
