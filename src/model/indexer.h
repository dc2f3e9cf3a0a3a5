// DeepSeek Sparse Attention's lightning indexer (V3.2), as in DeepSeek's reference
// (V3.2-Exp inference/model.py `Indexer`, with the Nov-2025 fix: half-split RoPE).
// For each query token it scores every earlier key cheaply and keeps the index_topk best; the
// main attention then looks only at those. Per query t and key s <= t:
//   qI = Hadamard(RoPE_half(W_qb c_q)), kI = Hadamard(RoPE_half(LayerNorm(W_k x)))  [.., 128]
//   both quantized to FP8 e4m3 with power-of-two scales (one per 128 values)
//   I[t,s] = sum_j w[t,j] * ReLU(qI[t,j] . kI[s]),  w = weights_proj(x) * H_I^-0.5 * d_I^-0.5
// Keys go to the indexer key cache (FP8 + scales) beside the latent cache.
//
// Batched like mla_forward: the linears run once over all the batch's rows, the keys go to each
// sequence's own cache and each query scores only its own sequence's keys.
//
// Legend: T = new tokens (of all sequences), S = cached + new tokens, D = hidden_size, H_I = index_n_heads,
// d_I = index_head_dim.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/latent_cache.h"
#include "model/config.h"
#include "model/mla.h"
#include "model/rope.h"
#include "model/weights.h"

namespace dseek::model {

// One FP8 scale per this many indexer q/k values (DeepSeek's act_quant block), power-of-two.
constexpr int64_t kIndexerQuantBlock = 128;

// Selected key positions per query row: for the row at position p of its sequence, selected[row]
// holds min(index_topk, p + 1) positions of that sequence, all <= p (top-k re-combined with the
// causal mask).
using KeySelection = std::vector<std::vector<int32_t>>;

// x: [T, D] attention input; q_latent: [T, q_lora_rank] after q_a_layernorm; segments as in
// mla_forward. Writes each segment's new keys to its cache at positions [p0, p0 + length) and
// returns the selection for each query row, [T].
KeySelection indexer_select(const ModelConfig& c, const IndexerWeights& w, const RopeTable& rope, const float* x,
                            const float* q_latent, int64_t T, std::span<const MlaSegment> segments);

// A test seam, null by default: when set, on_layer() runs once at the start of every
// indexer_select call (one per layer per forward), and on_row() once per query row that has more
// keys than index_topk, after top-k, with that row's position, scores [n] and selection, which it
// may change. The golden tests use it to follow the reference through FP8 near-ties of the k-th
// and (k+1)-th scores, whose side the float summation order decides (tests/golden/near_tie.h).
// on_row may run on several threads at once. Process-wide.
class SelectionProbe {
 public:
  virtual ~SelectionProbe() = default;
  virtual void on_layer() = 0;
  virtual void on_row(int64_t position, const float* scores, int64_t n, int64_t k, std::vector<int32_t>* selected) = 0;
};
void set_selection_probe(SelectionProbe* probe);

// Indexer scores of one query against the keys at positions [0, n) of `cache`: exposed for tests.
void indexer_scores(const ModelConfig& c, const uint8_t* q8, const float* q_scales, const float* head_weights,
                    const kv::LayerView& cache, int64_t n, float* scores);

}  // namespace dseek::model
