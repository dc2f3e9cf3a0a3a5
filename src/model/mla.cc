#include "model/mla.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

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

Queries project_queries(const ModelConfig& c, const AttentionWeights& w, const RopeTable& rope, const float* x,
                        int64_t T, const std::vector<int64_t>& pos) {
  const int64_t H = c.num_attention_heads, dqk = c.qk_head_dim();
  Queries out;
  out.q.resize(static_cast<size_t>(T * H * dqk));
  if (c.has_q_lora()) {
    out.q_latent.resize(static_cast<size_t>(T * c.q_lora_rank));
    ops::linear(x, T, w.q_a_proj, out.q_latent.data());
    ops::rms_norm(out.q_latent.data(), w.q_a_layernorm.data(), T, c.q_lora_rank, static_cast<float>(c.rms_norm_eps),
                  out.q_latent.data());
    ops::linear(out.q_latent.data(), T, w.q_b_proj, out.q.data());
  } else {
    ops::linear(x, T, w.q_proj, out.q.data());
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) rope.rotate_interleaved(out.q.data() + (t * H + h) * dqk + c.qk_nope_head_dim, pos[t]);
  return out;
}

// Writes [RMSNorm(c_kv') | RoPE(k_rope')] for each segment's new tokens into its cache.
void append_latents(const ModelConfig& c, const AttentionWeights& w, const RopeTable& rope, const float* x, int64_t T,
                    std::span<const MlaSegment> segments, int64_t width) {
  std::vector<float> kv(static_cast<size_t>(T * width));  // [T, r + d_r]
  ops::linear(x, T, w.kv_a_proj_with_mqa, kv.data());
  for (const MlaSegment& seg : segments) {
    for (int64_t t = 0; t < seg.length; ++t) {
      const int64_t p = seg.p0 + t;
      float* row = seg.cache.latent_row(p);
      const float* src = kv.data() + (seg.offset + t) * width;
      ops::rms_norm(src, w.kv_a_layernorm.data(), 1, c.kv_lora_rank, static_cast<float>(c.rms_norm_eps), row);
      std::copy(src + c.kv_lora_rank, src + width, row + c.kv_lora_rank);
      rope.rotate_interleaved(row + c.kv_lora_rank, p);
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
  std::vector<const float*> latent;  // [S_i] -> [r + d_r]
};

SegmentRows segment_rows(const MlaSegment& seg) {
  SegmentRows out{&seg, std::vector<const float*>(static_cast<size_t>(seg.p0 + seg.length))};
  for (int64_t s = 0; s < seg.p0 + seg.length; ++s) out.latent[s] = seg.cache.latent_row(s);
  return out;
}

// Absorbed form over several segments at once: each head's [W_UK; W_UV] is decoded once and
// serves every query of every segment. q: [T, H, d_n + d_r], o: [T, H, d_v] (batch rows).
void attend_absorbed(const ModelConfig& c, const AttentionWeights& w, const float* q,
                     std::span<const SegmentRows> segments, const KeySelection* selection, float scale, float* o) {
  const int64_t H = c.num_attention_heads, r = c.kv_lora_rank, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dv = c.v_head_dim, dqk = c.qk_head_dim();
#pragma omp parallel
  {
    std::vector<float> wkv(static_cast<size_t>((dn + dv) * r));  // this head's [W_UK; W_UV], [d_n + d_v, r]
    std::vector<float> q_lat(static_cast<size_t>(r)), o_lat(static_cast<size_t>(r)), p;
#pragma omp for schedule(static)
    for (int64_t h = 0; h < H; ++h) {
      ops::decode_rows(w.kv_b_proj, h * (dn + dv), dn + dv, wkv.data());
      for (const SegmentRows& rows : segments) {
        const MlaSegment* seg = rows.seg;
        const KeyRange keys{selection, seg->offset, seg->p0};
        const float* const* latent = rows.latent.data();
        for (int64_t t = 0; t < seg->length; ++t) {
          const int64_t row = seg->offset + t;
          const float* qt = q + (row * H + h) * dqk;
          std::fill(q_lat.begin(), q_lat.end(), 0.0f);
          for (int64_t d = 0; d < dn; ++d) ops::axpy(qt[d], wkv.data() + d * r, q_lat.data(), r);  // W_UK^T q_nope
          const int64_t n = keys.count(t);
          p.resize(static_cast<size_t>(n));
          for (int64_t i = 0; i < n; ++i) {
            const float* kv = latent[keys.key(t, i)];
            p[i] = scale * (ops::dot(q_lat.data(), kv, r) + ops::dot(qt + dn, kv + r, dr));
          }
          ops::softmax_inplace(p.data(), n);
          std::fill(o_lat.begin(), o_lat.end(), 0.0f);
          for (int64_t i = 0; i < n; ++i) ops::axpy(p[i], latent[keys.key(t, i)], o_lat.data(), r);
          float* ot = o + (row * H + h) * dv;
          for (int64_t j = 0; j < dv; ++j) ot[j] = ops::dot(wkv.data() + (dn + j) * r, o_lat.data(), r);  // W_UV o_lat
        }
      }
    }
  }
}

void attend_naive(const ModelConfig& c, const AttentionWeights& w, const float* q, const SegmentRows& rows,
                  int64_t T, int64_t S, const KeyRange& keys, float scale, float* o) {
  const int64_t H = c.num_attention_heads, r = c.kv_lora_rank, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dv = c.v_head_dim, dqk = c.qk_head_dim();
  // Expand every cached latent to this layer's per-head keys and values: [S, H, d_n + d_v].
  std::vector<float> latents(static_cast<size_t>(S * r));
  for (int64_t s = 0; s < S; ++s) std::copy_n(rows.latent[s], r, latents.data() + s * r);
  std::vector<float> kv(static_cast<size_t>(S * H * (dn + dv)));
  ops::linear(latents.data(), S, w.kv_b_proj, kv.data());
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
          const float* k_rope = rows.latent[s] + r;
          p[i] = scale * (ops::dot(qt, k_nope, dn) + ops::dot(qt + dn, k_rope, dr));
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

void mla_forward(const ModelConfig& c, const AttentionWeights& w, const RopeTable& rope, const float* x, int64_t T,
                 std::span<const MlaSegment> segments, int64_t latent_width, AttentionForm form, float* out) {
  const int64_t H = c.num_attention_heads, dqk = c.qk_head_dim(), dv = c.v_head_dim;
  const std::vector<int64_t> pos = row_positions(segments, T);  // [T]
  Queries q = project_queries(c, w, rope, x, T, pos);             // [T, H, d_n + d_r]
  append_latents(c, w, rope, x, T, segments, latent_width);       // each segment's cache rows

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
