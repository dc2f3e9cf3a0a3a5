// Scoring of the V3.2 lightning indexer over its FP8 key cache, one query against n keys:
//   score[s] = sum_j w[j] * ReLU(q[j] . k[s])
// with q[j] = e4m3(q8[j]) x its block scales and k[s] = e4m3(k8[s]) x its block scales (both
// powers of two, so folding them in is exact and this is DeepSeek's fp8_index up to the order
// of additions). Vectorized over heads: the query is transposed once to [d, H_I], and each key
// is decoded once to float32 and broadcast against it, several keys per pass.
// Families (cpu_features.h): scalar, AVX2, AVX-512; slow twin indexer_scores_reference (double).
// Legend: H_I = index_n_heads, d = index_head_dim (a multiple of 128), n = keys scored.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/cpu_features.h"

namespace dseek::cpu {

struct IndexerQuery {
  int64_t heads = 0;                 // H_I
  int64_t dim = 0;                   // d
  const uint8_t* q8 = nullptr;       // [H_I, d] e4m3
  const float* q_scales = nullptr;   // [H_I, d / 128]
  const float* weights = nullptr;    // [H_I] head weights (w * H_I^-0.5 * d^-0.5)
};

struct IndexerKeys {
  const uint8_t* const* keys = nullptr;   // [n] -> [d] e4m3
  const float* const* scales = nullptr;   // [n] -> [d / 128]
  int64_t n = 0;
};

// scores: [n]. threads as in mla_attend (1: this thread only; 0: the OpenMP default).
void indexer_scores(const IndexerQuery& q, const IndexerKeys& k, float* scores, int threads = 0);
void indexer_scores_isa(Isa isa, const IndexerQuery& q, const IndexerKeys& k, float* scores, int threads = 0);
// Slow twin: every product decoded and summed in double.
void indexer_scores_reference(const IndexerQuery& q, const IndexerKeys& k, float* scores);

// The k best of scores[0, n), largest first, ties to the smaller index (a strict total order,
// so the set is deterministic), returned in increasing index order. O(n) on average
// (nth_element) plus O(k log k) to order the chosen ones.
std::vector<int32_t> topk_select(const float* scores, int64_t n, int64_t k);

namespace indexer_detail {
// Prepared query: qt [d, Hp] (heads padded to 16 with zeros, scales folded in), w [Hp].
struct PreparedQuery {
  int64_t heads_padded, dim;
  const float* qt;
  const float* w;
};
using ScoreRangeFn = void (*)(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end,
                              float* scores);
void score_range_scalar(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores);
void score_range_avx2(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores);
void score_range_avx512(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores);
// Key s decoded with its scales: out [d].
void decode_key(const IndexerKeys& k, int64_t s, int64_t d, float* out);
}  // namespace indexer_detail

}  // namespace dseek::cpu
