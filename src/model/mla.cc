#include "model/mla.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "base/scratch.h"
#include "cpu/attention_kernels.h"
#include "kv/latent_codec.h"
#include "model/indexer.h"
#include "ops/linear.h"
#include "ops/ops.h"

namespace dseek::model {

namespace {

// Below this many new tokens the absorbed form is cheaper: expanding S cached latents to
// per-head keys costs S*H*(d_n+d_v)*r, absorption costs about T*S*H*(r+d_r) more in the
// attention itself. With DeepSeek Sparse Attention each query sees at most index_topk keys,
// so expanding every cached key is wasted work: sparse layers always use the absorbed form,
// as DeepSeek's own sparse kernels do (FlashMLA sparse prefill and decode are both MQA).
constexpr int64_t kNaiveMinTokens = 64;

struct Queries {
  std::vector<float> q;         // [T, H, d_n + d_r], rope part rotated
  std::vector<float> q_latent;  // [T, q_lora_rank] after q_a_layernorm (empty without q LoRA)
};

// Position of each batch row: p0_i + t for row offset_i + t.
std::vector<int64_t> row_positions(std::span<const MlaSegment> segments, int64_t T) {
  std::vector<int64_t> pos(static_cast<size_t>(T));
  for (const MlaSegment& s : segments)
    for (int64_t t = 0; t < s.length; ++t) pos[s.offset + t] = s.p0 + t;
  return pos;
}

// The two products of x that open the layer: the query's first projection (q_a_proj, or q_proj
// without a query LoRA) into `first` [T, q_lora_rank or H * (d_n + d_r)], and kv_a_proj_with_mqa
// into kv [T, r + d_r]. One batch: at decode a single parallel region and x preparation for both.
// With a V3.2 indexer the query latent is also the indexer's query input and is computed in
// float32, as the indexer's own products are (ops::linear_f32), so that --dtype bf16 does not move
// its top-k; it then runs on its own.
void project_inputs(const ModelConfig& c, const AttentionWeights& w, const float* x, int64_t T,
                    std::vector<float>& first, std::vector<float>& kv, int64_t width) {
  const LinearWeight& first_w = c.has_q_lora() ? w.q_a_proj : w.q_proj;
  first.resize(static_cast<size_t>(T * first_w.out));
  kv.resize(static_cast<size_t>(T * width));
  if (c.has_q_lora() && c.index_topk > 0) {
    ops::linear_f32(x, T, first_w, first.data());
    ops::linear(x, T, w.kv_a_proj_with_mqa, kv.data());
    return;
  }
  const ops::LinearJob jobs[] = {{x, T, &first_w, first.data()}, {x, T, &w.kv_a_proj_with_mqa, kv.data()}};
  ops::linear_batch(jobs);
}

// The queries [T, H, d_n + d_r] from the first projection (project_inputs), RoPE applied.
Queries project_queries(const ModelConfig& c, const AttentionWeights& w, const RopeTable& rope,
                        std::vector<float> first, int64_t T, const std::vector<int64_t>& pos) {
  const int64_t H = c.num_attention_heads, dqk = c.qk_head_dim();
  Queries out;
  if (c.has_q_lora()) {
    out.q_latent = std::move(first);  // [T, q_lora_rank]
    ops::rms_norm(out.q_latent.data(), w.q_a_layernorm.data(), T, c.q_lora_rank, static_cast<float>(c.rms_norm_eps),
                  out.q_latent.data());
    out.q.resize(static_cast<size_t>(T * H * dqk));
    ops::linear(out.q_latent.data(), T, w.q_b_proj, out.q.data());
  } else {
    out.q = std::move(first);
  }
  for (int64_t t = 0; t < T; ++t)  // every head's rope part
    rope.rotate_interleaved(out.q.data() + t * H * dqk + c.qk_nope_head_dim, H, dqk, pos[t]);
  return out;
}

// Writes [RMSNorm(c_kv') | RoPE(k_rope')] for each segment's new tokens into its cache, encoded
// in the cache's type.
// kv: kv_a_proj_with_mqa's output [T, r + d_r] (project_inputs).
void append_latents(const ModelConfig& c, const AttentionWeights& w, const RopeTable& rope, const std::vector<float>& kv,
                    std::span<const MlaSegment> segments, int64_t width) {
  std::vector<float> row(static_cast<size_t>(width));
  for (const MlaSegment& seg : segments) {
    for (int64_t t = 0; t < seg.length; ++t) {
      const int64_t p = seg.p0 + t;
      const float* src = kv.data() + (seg.offset + t) * width;
      ops::rms_norm(src, w.kv_a_layernorm.data(), 1, c.kv_lora_rank, static_cast<float>(c.rms_norm_eps), row.data());
      std::copy(src + c.kv_lora_rank, src + width, row.data() + c.kv_lora_rank);
      rope.rotate_interleaved(row.data() + c.kv_lora_rank, p);
      kv::encode_latent_row(seg.cache.latent_layout(), row.data(), seg.cache.latent_bytes(p));
    }
  }
}

// The keys query t of a segment may see: the indexer's selection (rows of the whole batch,
// this segment's from `offset`), or every key up to its own position.
struct KeyRange {
  const KeySelection* selection;
  int64_t offset;
  int64_t p0;
  int64_t count(int64_t t) const {
    return selection ? static_cast<int64_t>((*selection)[offset + t].size()) : p0 + t + 1;
  }
  int64_t key(int64_t t, int64_t i) const { return selection ? (*selection)[offset + t][i] : i; }
};

// A segment with the addresses of its cached rows [0, S_i): the cache is paged, so rows are
// looked up once per layer here rather than once per head and query in the attention loops.
struct SegmentRows {
  const MlaSegment* seg;
  std::vector<const uint8_t*> latent;  // [S_i] -> one stored row (cpu/attention_format.h)
};

SegmentRows segment_rows(const MlaSegment& seg) {
  SegmentRows out{&seg, std::vector<const uint8_t*>(static_cast<size_t>(seg.p0 + seg.length))};
  for (int64_t s = 0; s < seg.p0 + seg.length; ++s) out.latent[s] = seg.cache.latent_bytes(s);
  return out;
}

// Query rows absorbed together: bounds the [rows, H, r] buffers (9 MiB for V3) of a long sparse
// prefill.
constexpr int64_t kAbsorbChunk = 32;

// attend_absorbed's absorbed queries and latent outputs (the calling thread's): as vectors they
// were allocated and cleared every layer of every token.
thread_local Scratch t_absorb_buffers;

// Absorbed form over several segments at once. q: [T, H, d_n + d_r], o: [T, H, d_v] (batch
// rows). Per chunk of query rows: q_lat = W_UK^T q_nope for every head and query, then the
// attention kernel over each row's keys (cpu/attention_kernels.h: all heads per cache row, the
// cache read in its stored type; a V3.2 selection is a list of rows, so only the selected rows
// are read), then o = W_UV o_lat. Both products run per query, so a query's sums do not depend
// on the other rows of the batch.
void attend_absorbed(const ModelConfig& c, const AttentionWeights& w, const float* q,
                     std::span<const SegmentRows> segments, const KeySelection* selection, float scale, float* o) {
  const int64_t H = c.num_attention_heads, r = c.kv_lora_rank, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dv = c.v_head_dim, dqk = c.qk_head_dim(), W = r + dr;
  struct Query {
    const SegmentRows* rows;
    int64_t t;  // index in its segment
  };
  std::vector<Query> queries;
  for (const SegmentRows& rows : segments)
    for (int64_t t = 0; t < rows.seg->length; ++t) queries.push_back({&rows, t});
  const int threads = omp_get_max_threads();
  // qcat [chunk, H, r + d_r], olat [chunk, H, r]: this thread's, reused call after call.
  const int64_t chunk_rows = std::min<int64_t>(kAbsorbChunk, static_cast<int64_t>(queries.size()));
  float* const qcat = t_absorb_buffers.get(chunk_rows * H * (W + r));
  float* const olat = qcat + chunk_rows * H * W;
  for (size_t c0 = 0; c0 < queries.size(); c0 += kAbsorbChunk) {
    const auto nc = static_cast<int64_t>(std::min<size_t>(kAbsorbChunk, queries.size() - c0));
    const Query* chunk = queries.data() + c0;
    // q_lat = W_UK^T q_nope, each query on its own (ops::accumulate_rows streams the head's W_UK
    // rows with q_lat's columns in registers; the next queries of the head find them in L2): a
    // query gets the same sums alone as in a batch of sequences. Decoding once per chunk for the
    // single-query case only made batched decode differ from decode alone.
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < nc; ++i) {
        const float* qt = q + ((chunk[i].rows->seg->offset + chunk[i].t) * H + h) * dqk;
        float* qc = qcat + (i * H + h) * W;
        std::fill(qc, qc + r, 0.0f);
        ops::accumulate_rows(w.kv_b_proj, h * (dn + dv), dn, qt, qc);
        std::copy_n(qt + dn, dr, qc + r);
      }
    auto attend = [&](int64_t i, int kernel_threads, std::vector<const uint8_t*>& gathered) {
      const MlaSegment* seg = chunk[i].rows->seg;
      const int64_t row = seg->offset + chunk[i].t;
      cpu::MlaAttendArgs a;
      a.layout = seg->cache.latent_layout();
      a.heads = H;
      a.q = qcat + i * H * W;
      a.scale = scale;
      if (selection) {  // only the selected rows
        const std::vector<int32_t>& keys = (*selection)[row];
        gathered.resize(keys.size());
        for (size_t k = 0; k < keys.size(); ++k) gathered[k] = chunk[i].rows->latent[keys[k]];
        a.rows = gathered.data();
        a.n = static_cast<int64_t>(keys.size());
      } else {  // causal: every row up to its own position
        a.rows = chunk[i].rows->latent.data();
        a.n = seg->p0 + chunk[i].t + 1;
      }
      cpu::mla_attend(a, olat + i * H * r, kernel_threads);
    };
    if (nc >= threads) {  // enough queries: one per thread
#pragma omp parallel
      {
        std::vector<const uint8_t*> gathered;
#pragma omp for schedule(dynamic)
        for (int64_t i = 0; i < nc; ++i) attend(i, 1, gathered);
      }
    } else {  // few queries (decode): the threads split each query's rows
      std::vector<const uint8_t*> gathered;
      for (int64_t i = 0; i < nc; ++i) attend(i, 0, gathered);
    }
    // o = W_UV o_lat, each query on its own by the matrix-vector kernel (the next queries of the
    // head find its rows in L2), as W_UK above: decoding the head's rows once per chunk and taking
    // dot products for several queries gave a query other sums than alone, and seeded sampling in
    // a batch of sequences then drew other tokens than alone (Engine.SeededSampling... failed 7 of
    // 16 runs with another process on a core, 0 of 40 after).
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < nc; ++i)
        ops::linear_rows(olat + (i * H + h) * r, w.kv_b_proj, h * (dn + dv) + dn, dv,
                         o + ((chunk[i].rows->seg->offset + chunk[i].t) * H + h) * dv);
  }
}

// Query rows per block of the naive form's products: bounds the [block, S] scores of one head.
constexpr int64_t kNaiveQueryBlock = 128;

// Segments of at least this many new tokens take attend_causal_blocks; shorter ones the key-by-key
// loop, where attention is a small share of the work. The threshold also keeps the golden
// fixtures' prompts (at most 90 tokens) on the loop their BF16-compute greedy tokens were checked
// with: tiny-v3's third prompt has a reference margin of 0.027 at one step, within reach of bf16
// rounding, and the blocked core's other float32 summation order (outputs 1e-6 apart where |o|
// reaches 4) tipped it there.
// Tests lower it (set_blocked_attention_min_tokens) to hold the blocked core to the golden logits.
std::atomic<int64_t> g_blocked_min_tokens{kNaiveQueryBlock};

// The naive form's core without a key selection (causal: query t sees keys [0, p0 + t]). A task
// is one head and one block of queries: its scores are one packed product against the head's
// keys, only the rows the block's last query sees, and its outputs one more against those keys'
// values, transposed. Activations times activations: float32 whatever the compute type. Tasks
// rather than heads go to the threads, so that a model with fewer heads than cores (V2-Lite: 16)
// keeps them all busy and the late blocks, which see more keys, spread out. Dot products a key at
// a time ran 16 GFLOP/s, 16% of a v3-slice prefill of 512 tokens.
//   q [T, H, d_n + d_r], kv [S, H, d_n + d_v], k_rope [S, d_r] -> o [T, H, d_v]
void attend_causal_blocks(const ModelConfig& c, const float* q, const float* kv, const float* k_rope, int64_t T,
                          int64_t p0, float scale, float* o) {
  const int64_t H = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dv = c.v_head_dim,
                dqk = dn + dr, blocks = (T + kNaiveQueryBlock - 1) / kNaiveQueryBlock;
#pragma omp parallel
  {
    // [n, d_qk] (k_nope, then k_rope), [B, d_qk], [B, n], [d_v, n], [B, d_v]
    std::vector<float> keys, queries, scores, values, out;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < H * blocks; ++task) {
      const int64_t h = task / blocks, t0 = task % blocks * kNaiveQueryBlock;
      const int64_t B = std::min(kNaiveQueryBlock, T - t0), n = p0 + t0 + B;  // n: keys of the last query
      keys.resize(static_cast<size_t>(n * dqk));
      for (int64_t s = 0; s < n; ++s) {
        std::copy_n(kv + (s * H + h) * (dn + dv), dn, keys.data() + s * dqk);
        std::copy_n(k_rope + s * dr, dr, keys.data() + s * dqk + dn);
      }
      queries.resize(static_cast<size_t>(B * dqk));
      for (int64_t i = 0; i < B; ++i) std::copy_n(q + ((t0 + i) * H + h) * dqk, dqk, queries.data() + i * dqk);
      scores.resize(static_cast<size_t>(B * n));
      ops::LinearWeight k_rows;  // F32 [n, d_qk]
      k_rows.out = n, k_rows.in = dqk, k_rows.data = reinterpret_cast<const uint8_t*>(keys.data());
      ops::linear_f32(queries.data(), B, k_rows, scores.data());
      for (int64_t i = 0; i < B; ++i) {
        float* p = scores.data() + i * n;
        const int64_t seen = p0 + t0 + i + 1;
        for (int64_t j = 0; j < seen; ++j) p[j] *= scale;
        ops::softmax_inplace(p, seen);
        std::fill(p + seen, p + n, 0.0f);
      }
      values.resize(static_cast<size_t>(dv * n));
      for (int64_t s = 0; s < n; ++s) {
        const float* v = kv + (s * H + h) * (dn + dv) + dn;
        for (int64_t j = 0; j < dv; ++j) values[j * n + s] = v[j];
      }
      out.resize(static_cast<size_t>(B * dv));
      ops::LinearWeight v_rows;  // F32 [d_v, n]
      v_rows.out = dv, v_rows.in = n, v_rows.data = reinterpret_cast<const uint8_t*>(values.data());
      ops::linear_f32(scores.data(), B, v_rows, out.data());
      for (int64_t i = 0; i < B; ++i) std::copy_n(out.data() + i * dv, dv, o + ((t0 + i) * H + h) * dv);
    }
  }
}

void attend_naive(const ModelConfig& c, const AttentionWeights& w, const float* q, const SegmentRows& rows,
                  int64_t T, int64_t S, const KeyRange& keys, float scale, float* o) {
  const int64_t H = c.num_attention_heads, r = c.kv_lora_rank, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dv = c.v_head_dim, dqk = c.qk_head_dim();
  // Expand every cached latent to this layer's per-head keys and values: [S, H, d_n + d_v]. The
  // expansion needs float32 latents whatever the cache type: [S, r] and rope keys [S, d_r].
  const cpu::LatentLayout& layout = rows.seg->cache.latent_layout();
  std::vector<float> latents(static_cast<size_t>(S * r)), k_rope(static_cast<size_t>(S * dr)), row(static_cast<size_t>(r + dr));
  for (int64_t s = 0; s < S; ++s) {
    cpu::decode_latent_row(layout, rows.latent[s], row.data());
    std::copy_n(row.data(), r, latents.data() + s * r);
    std::copy_n(row.data() + r, dr, k_rope.data() + s * dr);
  }
  std::vector<float> kv(static_cast<size_t>(S * H * (dn + dv)));
  ops::linear(latents.data(), S, w.kv_b_proj, kv.data());
  if (keys.selection == nullptr && T >= g_blocked_min_tokens.load(std::memory_order_relaxed))
    return attend_causal_blocks(c, q, kv.data(), k_rope.data(), T, S - T, scale, o);
  // Key by key: short segments, or a key selection (V3.2 with the naive form forced).
#pragma omp parallel
  {
    std::vector<float> p;
#pragma omp for schedule(static) collapse(2)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const float* qt = q + (t * H + h) * dqk;
        const int64_t n = keys.count(t);
        p.resize(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
          const int64_t s = keys.key(t, i);
          const float* k_nope = kv.data() + (s * H + h) * (dn + dv);
          p[i] = scale * (ops::dot(qt, k_nope, dn) + ops::dot(qt + dn, k_rope.data() + s * dr, dr));
        }
        ops::softmax_inplace(p.data(), n);
        float* ot = o + (t * H + h) * dv;
        std::fill(ot, ot + dv, 0.0f);
        for (int64_t i = 0; i < n; ++i)
          ops::axpy(p[i], kv.data() + (keys.key(t, i) * H + h) * (dn + dv) + dn, ot, dv);
      }
    }
  }
}

}  // namespace

void set_blocked_attention_min_tokens(int64_t n) { g_blocked_min_tokens.store(n, std::memory_order_relaxed); }

int64_t blocked_attention_min_tokens() { return g_blocked_min_tokens.load(std::memory_order_relaxed); }

void mla_forward(const ModelConfig& c, const AttentionWeights& w, const RopeTable& rope, const float* x, int64_t T,
                 std::span<const MlaSegment> segments, int64_t latent_width, AttentionForm form, float* out) {
  const int64_t H = c.num_attention_heads, dqk = c.qk_head_dim(), dv = c.v_head_dim;
  const std::vector<int64_t> pos = row_positions(segments, T);  // [T]
  std::vector<float> first, kv;                                   // [T, q_lora_rank or H * d_qk], [T, r + d_r]
  project_inputs(c, w, x, T, first, kv, latent_width);
  Queries q = project_queries(c, w, rope, std::move(first), T, pos);  // [T, H, d_n + d_r]
  append_latents(c, w, rope, kv, segments, latent_width);             // each segment's cache rows

  KeySelection selection;  // [T] rows: the keys each query may see (V3.2)
  if (c.has_indexer() && w.indexer.present())
    selection = indexer_select(c, w.indexer, rope, x, q.q_latent.data(), T, segments);
  const KeySelection* sel = selection.empty() ? nullptr : &selection;

  // Attention core, per sequence against its own cache; each segment takes the form it would
  // take alone. Absorbed segments share one pass over the heads.
  const float scale = static_cast<float>(c.softmax_scale());
  std::vector<float> o(static_cast<size_t>(T * H * dv));  // [T, H * d_v]
  std::vector<SegmentRows> absorbed;
  for (const MlaSegment& seg : segments) {
    AttentionForm f = form;
    if (f == AttentionForm::kAuto)
      f = (seg.length >= kNaiveMinTokens && sel == nullptr) ? AttentionForm::kNaive : AttentionForm::kAbsorbed;
    if (f == AttentionForm::kAbsorbed) {
      absorbed.push_back(segment_rows(seg));
      continue;
    }
    const KeyRange keys{sel, seg.offset, seg.p0};
    attend_naive(c, w, q.q.data() + seg.offset * H * dqk, segment_rows(seg), seg.length, seg.p0 + seg.length, keys,
                 scale, o.data() + seg.offset * H * dv);
  }
  if (!absorbed.empty()) attend_absorbed(c, w, q.q.data(), absorbed, sel, scale, o.data());
  ops::linear(o.data(), T, w.o_proj, out);  // [T, D]
}

}  // namespace dseek::model
