// Absorbed (MQA-form) MLA attention of one query token over rows of the latent KV cache, read
// in their stored type (attention_format.h), for every head at once:
//   logit[h, s] = scale * (q[h] . row_s)        q[h] = [q_lat[h] (r) | q_rope[h] (d_r)]
//   o_lat[h]    = sum_s softmax_s(logit[h, :]) * c_kv[s]     (the first r values of row_s)
// Rows are read once per token for all H heads (the cache is the bandwidth cost) in small
// tiles decoded to float32 in L1, with an online softmax per head; threads take contiguous
// runs of rows and their partial softmax states are merged by log-sum-exp at the end.
// `rows` are row addresses, so a sparse (V3.2) selection is attended exactly like a dense
// prefix: only the rows listed are ever touched.
//
// Families (cpu_features.h): scalar, AVX2, AVX-512, picked by cpu::active_isa(); the slow
// twin mla_attend_reference accumulates in double with a two-pass softmax.
// Legend: H = heads, r = kv_lora_rank, d_r = qk_rope_head_dim, n = rows attended.
#pragma once

#include <cstdint>

#include "cpu/attention_format.h"
#include "cpu/cpu_features.h"

namespace dseek::cpu {

struct MlaAttendArgs {
  LatentLayout layout;
  int64_t heads = 0;              // H
  const float* q = nullptr;       // [H, r + d_r]
  float scale = 1.0f;             // the MLA softmax scale (not (r + d_r)^-0.5)
  const uint8_t* const* rows = nullptr;  // [n] row addresses, each layout.row_bytes() long
  int64_t n = 0;                  // >= 1
};

// o_lat: [H, r]. threads: how many OpenMP threads may split the rows (1: this thread only,
// which is what a caller already inside a parallel region wants; 0: the OpenMP default).
void mla_attend(const MlaAttendArgs& a, float* o_lat, int threads = 0);
// The same with an explicit family (tests and benchmarks).
void mla_attend_isa(Isa isa, const MlaAttendArgs& a, float* o_lat, int threads = 0);
// Slow twin: double accumulation, plain two-pass softmax, rows decoded one at a time.
void mla_attend_reference(const MlaAttendArgs& a, float* o_lat);

}  // namespace dseek::cpu
