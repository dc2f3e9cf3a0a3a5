// Internal to the attention kernels: what each instruction-set family implements. A family
// attends a contiguous run of rows and leaves an un-normalized softmax state per head, which
// attention_kernels.cc merges across threads.
#pragma once

#include <cstdint>

#include "cpu/attention_kernels.h"

namespace dseek::cpu::attention_detail {

// Row tile decoded to float32 at once: 8 rows of 576 floats stay in L1 (18 KiB).
constexpr int64_t kTileRows = 8;
// Padding of the float32 tile and queries: r and d_r each rounded up to 16 floats.
inline int64_t pad16(int64_t n) { return (n + 15) / 16 * 16; }

// Softmax state of one run of rows: per head the running max m, the sum l of exp(logit - m),
// and acc = sum of exp(logit - m) * c_kv, [H, pad16(r)].
struct PartialState {
  float* m;    // [H]
  float* l;    // [H]
  float* acc;  // [H, pad16(r)]
};

// qp: [H, pad16(r) + pad16(d_r)] the queries already multiplied by the scale, zero padded.
// Attends rows [begin, end) of a.rows into st (which it initializes).
using AttendRowsFn = void (*)(const MlaAttendArgs& a, const float* qp, int64_t begin, int64_t end,
                              const PartialState& st);

void attend_rows_scalar(const MlaAttendArgs& a, const float* qp, int64_t begin, int64_t end, const PartialState& st);
void attend_rows_avx2(const MlaAttendArgs& a, const float* qp, int64_t begin, int64_t end, const PartialState& st);
void attend_rows_avx512(const MlaAttendArgs& a, const float* qp, int64_t begin, int64_t end, const PartialState& st);

// Decodes rows [begin, begin + count) (count <= kTileRows) into tile [kTileRows, pad16(r) + pad16(d_r)]
// with zero padding and zero rows past count: the scalar way, shared by every family's tail.
void decode_tile_scalar(const MlaAttendArgs& a, int64_t begin, int64_t count, float* tile);

}  // namespace dseek::cpu::attention_detail
