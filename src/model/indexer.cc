#include "model/indexer.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "cpu/indexer_kernels.h"
#include "ops/fp8.h"
#include "ops/linear.h"
#include "ops/ops.h"

namespace dseek::model {

namespace {
constexpr float kLayerNormEps = 1e-6f;  // the indexer's k_norm (a LayerNorm with bias)
std::atomic<SelectionProbe*> g_selection_probe{nullptr};
}  // namespace

void set_selection_probe(SelectionProbe* probe) { g_selection_probe.store(probe, std::memory_order_release); }

void indexer_scores(const ModelConfig& c, const uint8_t* q8, const float* q_scales, const float* head_weights,
                    const kv::LayerView& cache, int64_t n, float* scores) {
  std::vector<const uint8_t*> keys(static_cast<size_t>(n));
  std::vector<const float*> scales(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) {
    keys[s] = cache.index_key(s);
    scales[s] = cache.index_scale(s);
  }
  const cpu::IndexerQuery q{c.index_n_heads, c.index_head_dim, q8, q_scales, head_weights};
  cpu::indexer_scores(q, cpu::IndexerKeys{keys.data(), scales.data(), n}, scores);
}

KeySelection indexer_select(const ModelConfig& c, const IndexerWeights& w, const RopeTable& rope, const float* x,
                            const float* q_latent, int64_t T, std::span<const MlaSegment> segments) {
  const int64_t H = c.index_n_heads, d = c.index_head_dim, blocks = d / kIndexerQuantBlock;
  const float hadamard_scale = 1.0f / std::sqrt(static_cast<float>(d));
  SelectionProbe* const probe = g_selection_probe.load(std::memory_order_acquire);
  if (probe) probe->on_layer();

  // Keys: [T, d] -> LayerNorm -> RoPE on the first rope dims -> Hadamard -> FP8 into each
  // sequence's cache at its positions.
  std::vector<float> k(static_cast<size_t>(T * d));
  ops::linear_f32(x, T, w.wk, k.data());
  ops::layer_norm(k.data(), w.k_norm_weight.data(), w.k_norm_bias.data(), T, d, kLayerNormEps, k.data());
  for (const MlaSegment& seg : segments) {
    for (int64_t t = 0; t < seg.length; ++t) {
      const int64_t p = seg.p0 + t;
      float* kt = k.data() + (seg.offset + t) * d;
      rope.rotate_half_split(kt, p);
      ops::hadamard_inplace(kt, d, hadamard_scale);
      ops::fp8_quantize_blocks(kt, d, kIndexerQuantBlock, /*pow2_scale=*/true, seg.cache.index_key(p),
                               seg.cache.index_scale(p));
    }
  }

  // Queries: [T, H, d] from the q latent, same treatment, quantized per (token, head, block).
  std::vector<float> q(static_cast<size_t>(T * H * d));
  ops::linear_f32(q_latent, T, w.wq_b, q.data());
  std::vector<uint8_t> q8(q.size());
  std::vector<float> q_scales(static_cast<size_t>(T * H * blocks));
  for (const MlaSegment& seg : segments) {
    for (int64_t t = 0; t < seg.length; ++t) {  // every head of a token at its position
      rope.rotate_half_split(q.data() + (seg.offset + t) * H * d, H, d, seg.p0 + t);
      for (int64_t th = (seg.offset + t) * H; th < (seg.offset + t + 1) * H; ++th) {
        float* qh = q.data() + th * d;
        ops::hadamard_inplace(qh, d, hadamard_scale);
        ops::fp8_quantize_blocks(qh, d, kIndexerQuantBlock, true, q8.data() + th * d, q_scales.data() + th * blocks);
      }
    }
  }

  // Head weights: [T, H], computed in float32 as the fixed reference does.
  std::vector<float> head_w(static_cast<size_t>(T * H));
  ops::linear_f32(x, T, w.weights_proj, head_w.data());
  const float head_scale = 1.0f / std::sqrt(static_cast<float>(H));
  const float dot_scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (float& v : head_w) v = v * head_scale * dot_scale;

  // Scoring and top-k per query row, against its own sequence's keys.
  std::vector<const MlaSegment*> row_segment(static_cast<size_t>(T));
  for (const MlaSegment& seg : segments)
    for (int64_t t = 0; t < seg.length; ++t) row_segment[seg.offset + t] = &seg;
  KeySelection selected(static_cast<size_t>(T));
  auto select_row = [&](int64_t row) {
    const MlaSegment& seg = *row_segment[row];
    const int64_t n = seg.p0 + (row - seg.offset) + 1;  // causal: keys [0, p]
    if (n <= c.index_topk) {                            // fewer keys than top-k: attention stays dense
      selected[row].resize(static_cast<size_t>(n));
      for (int64_t s = 0; s < n; ++s) selected[row][s] = static_cast<int32_t>(s);
      return;
    }
    std::vector<float> scores(static_cast<size_t>(n));
    indexer_scores(c, q8.data() + row * H * d, q_scales.data() + row * H * blocks, head_w.data() + row * H, seg.cache,
                   n, scores.data());
    selected[row] = cpu::topk_select(scores.data(), n, c.index_topk);  // O(n), increasing positions
    if (probe) probe->on_row(n - 1, scores.data(), n, c.index_topk, &selected[row]);
  };
  // Many query rows (prefill): one row per thread. Few (decode): the scoring kernel splits the
  // keys of each row between the threads instead.
  if (T >= omp_get_max_threads()) {
#pragma omp parallel for schedule(dynamic)
    for (int64_t row = 0; row < T; ++row) select_row(row);
  } else {
    for (int64_t row = 0; row < T; ++row) select_row(row);
  }
  return selected;
}

}  // namespace dseek::model
