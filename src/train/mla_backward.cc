#include "train/mla_backward.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/check.h"
#include "ops/ops.h"
#include "train/indexer_backward.h"

namespace dseek::train {

namespace {

// Softmax attention of each query over its own key list (a V3.2 selection): the causal
// attention_forward / attention_backward of ops_backward.h with s running over keys[t].
// q, k: [T, H, dqk]; v, o: [T, H, dv]; lse: [H, T].
void selected_attention_forward(const float* q, const float* k, const float* v, int64_t T, int64_t H, int64_t dk,
                                int64_t dv, float scale, const model::KeySelection& keys, float* o, float* lse) {
#pragma omp parallel
  {
    std::vector<float> p;
#pragma omp for schedule(static) collapse(2)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const std::vector<int32_t>& ks = keys[t];
        const int64_t n = static_cast<int64_t>(ks.size());
        const float* qt = q + (t * H + h) * dk;
        p.resize(static_cast<size_t>(n));
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < n; ++i) {
          p[i] = 0.0f;
          const float* kv = k + (ks[i] * H + h) * dk;
          for (int64_t e = 0; e < dk; ++e) p[i] += qt[e] * kv[e];
          p[i] *= scale;
          mx = std::max(mx, p[i]);
        }
        float sum = 0.0f;
        for (int64_t i = 0; i < n; ++i) sum += p[i] = std::exp(p[i] - mx);
        lse[h * T + t] = mx + std::log(sum);
        float* ot = o + (t * H + h) * dv;
        std::fill(ot, ot + dv, 0.0f);
        for (int64_t i = 0; i < n; ++i) {
          const float pi = p[i] / sum;
          const float* vs = v + (ks[i] * H + h) * dv;
          for (int64_t e = 0; e < dv; ++e) ot[e] += pi * vs[e];
        }
      }
    }
  }
}

void selected_attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                                 const float* dout, int64_t T, int64_t H, int64_t dk, int64_t dv, float scale,
                                 const model::KeySelection& keys, float* dq, float* dkey, float* dval) {
  // Heads touch disjoint slices: one per thread (as attention_backward).
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t t = 0; t < T; ++t) {
      const float* qt = q + (t * H + h) * dk;
      const float* dot_ = dout + (t * H + h) * dv;
      const float d_row = ops::dot(dot_, o + (t * H + h) * dv, dv);
      const float l = lse[h * T + t];
      float* dqt = dq + (t * H + h) * dk;
      for (int32_t s : keys[t]) {
        const float* ks = k + (s * H + h) * dk;
        const float* vs = v + (s * H + h) * dv;
        const float p = std::exp(scale * ops::dot(qt, ks, dk) - l);
        const float ds = p * (ops::dot(dot_, vs, dv) - d_row);
        float* dks = dkey + (s * H + h) * dk;
        for (int64_t e = 0; e < dk; ++e) {
          dqt[e] += scale * ds * ks[e];
          dks[e] += scale * ds * qt[e];
        }
        float* dvs = dval + (s * H + h) * dv;
        for (int64_t e = 0; e < dv; ++e) dvs[e] += p * dot_[e];
      }
    }
  }
}

// The forward with the key lists given (`keys`), or chosen by the indexer after the queries
// are projected (`select`), or causal (neither).
void mla_forward_impl(const model::ModelConfig& c, const model::AttentionWeights& w, const RopeAngles& rope,
                      const float* x, int64_t T, const model::KeySelection* keys, bool select, MlaActivations* act,
                      float* out, LinearHook* hook) {
  const int64_t H = c.num_attention_heads, r = c.kv_lora_rank, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dv = c.v_head_dim, dqk = c.qk_head_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);
  DSEEK_CHECK(rope.half * 2 == dr, "rope angles for {} dims, qk_rope_head_dim is {}", rope.half * 2, dr);
  MlaActivations& a = *act;

  // Queries: [T, H, d_qk], rope part rotated.
  a.q.assign(static_cast<size_t>(T * H * dqk), 0.0f);
  if (c.has_q_lora()) {
    a.q_a.resize(static_cast<size_t>(T * c.q_lora_rank));
    a.q_latent.resize(a.q_a.size());
    linear_forward(x, T, w.q_a_proj, a.q_a.data(), hook);
    rms_norm_forward(a.q_a.data(), w.q_a_layernorm.data(), T, c.q_lora_rank, eps, a.q_latent.data());
    linear_forward(a.q_latent.data(), T, w.q_b_proj, a.q.data(), hook);
  } else {
    linear_forward(x, T, w.q_proj, a.q.data(), hook);
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) rope_forward(a.q.data() + (t * H + h) * dqk + dn, rope.cos_at(t), rope.sin_at(t), rope.half);

  // Latent and shared rope key: kv_a [T, r + d_r] -> c_kv [T, r], k_r [T, d_r].
  a.kv_a.resize(static_cast<size_t>(T * (r + dr)));
  linear_forward(x, T, w.kv_a_proj_with_mqa, a.kv_a.data(), hook);
  a.kv_latent.resize(static_cast<size_t>(T * r));
  std::vector<float> k_rope(static_cast<size_t>(T * dr));  // [T, d_r]
  for (int64_t t = 0; t < T; ++t) {
    const float* row = a.kv_a.data() + t * (r + dr);
    rms_norm_forward(row, w.kv_a_layernorm.data(), 1, r, eps, a.kv_latent.data() + t * r);
    std::copy_n(row + r, dr, k_rope.data() + t * dr);
    rope_forward(k_rope.data() + t * dr, rope.cos_at(t), rope.sin_at(t), rope.half);
  }

  // Per-head keys and values from the latent: kv_b [T, H, d_n + d_v].
  std::vector<float> kv_b(static_cast<size_t>(T * H * (dn + dv)));
  linear_forward(a.kv_latent.data(), T, w.kv_b_proj, kv_b.data(), hook);
  a.k.resize(static_cast<size_t>(T * H * dqk));
  a.v.resize(static_cast<size_t>(T * H * dv));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const float* src = kv_b.data() + (t * H + h) * (dn + dv);
      float* kt = a.k.data() + (t * H + h) * dqk;
      std::copy_n(src, dn, kt);
      std::copy_n(k_rope.data() + t * dr, dr, kt + dn);
      std::copy_n(src + dn, dv, a.v.data() + (t * H + h) * dv);
    }
  }

  a.o.resize(static_cast<size_t>(T * H * dv));
  a.lse.resize(static_cast<size_t>(H * T));
  a.selection.clear();
  if (select) {
    DSEEK_CHECK(c.has_q_lora(), "the V3.2 indexer reads the q latent: q_lora_rank must be set");
    a.selection = indexer_selection(c, w.indexer, x, a.q_latent.data(), T);
  } else if (keys != nullptr) {
    DSEEK_CHECK(static_cast<int64_t>(keys->size()) == T, "key lists for {} queries, expected {}", keys->size(), T);
    a.selection = *keys;
  }
  const float scale = static_cast<float>(c.softmax_scale());
  if (a.selection.empty())
    attention_forward(a.q.data(), a.k.data(), a.v.data(), T, H, dqk, dv, scale, a.o.data(), a.lse.data());
  else
    selected_attention_forward(a.q.data(), a.k.data(), a.v.data(), T, H, dqk, dv, scale, a.selection, a.o.data(),
                               a.lse.data());
  linear_forward(a.o.data(), T, w.o_proj, out, hook);  // [T, D]
}

}  // namespace

void mla_train_forward(const model::ModelConfig& c, const model::AttentionWeights& w, const RopeAngles& rope,
                       const float* x, int64_t T, MlaActivations* act, float* out, LinearHook* hook,
                       AttentionStage stage) {
  const bool select = stage == AttentionStage::kSparse && c.has_indexer() && w.indexer.present();
  mla_forward_impl(c, w, rope, x, T, nullptr, select, act, out, hook);
}

void mla_train_forward_with_keys(const model::ModelConfig& c, const model::AttentionWeights& w,
                                 const RopeAngles& rope, const float* x, int64_t T,
                                 const model::KeySelection* keys, MlaActivations* act, float* out,
                                 LinearHook* hook) {
  mla_forward_impl(c, w, rope, x, T, keys, false, act, out, hook);
}

void mla_backward(const model::ModelConfig& c, const model::AttentionWeights& w, const RopeAngles& rope,
                  const float* x, int64_t T, const MlaActivations& a, const float* dout, float* dx,
                  const AttentionGrads& g, LinearHook* hook) {
  const int64_t H = c.num_attention_heads, r = c.kv_lora_rank, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dv = c.v_head_dim, dqk = c.qk_head_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);

  // out = o W_O^T
  std::vector<float> d_o(static_cast<size_t>(T * H * dv), 0.0f);  // [T, H * d_v]
  linear_backward(a.o.data(), dout, T, w.o_proj, d_o.data(), g.o_proj, hook);

  // Attention core.
  std::vector<float> dq(static_cast<size_t>(T * H * dqk), 0.0f);  // [T, H, d_qk]
  std::vector<float> dk(dq.size(), 0.0f);                          // [T, H, d_qk]
  std::vector<float> d_v(static_cast<size_t>(T * H * dv), 0.0f);   // [T, H, d_v]
  if (a.selection.empty())
    attention_backward(a.q.data(), a.k.data(), a.v.data(), a.o.data(), a.lse.data(), d_o.data(), T, H, dqk, dv,
                       static_cast<float>(c.softmax_scale()), dq.data(), dk.data(), d_v.data());
  else
    selected_attention_backward(a.q.data(), a.k.data(), a.v.data(), a.o.data(), a.lse.data(), d_o.data(), T, H, dqk,
                                dv, static_cast<float>(c.softmax_scale()), a.selection, dq.data(), dk.data(),
                                d_v.data());

  // Keys and values back to the latent: kv_b [T, H, d_n + d_v]; the rope key is shared by
  // every head, so its gradient is their sum, then rotated back into kv_a's rope columns.
  std::vector<float> d_kv_b(static_cast<size_t>(T * H * (dn + dv)));
  std::vector<float> d_kv_a(static_cast<size_t>(T * (r + dr)), 0.0f);  // [T, r + d_r]
  for (int64_t t = 0; t < T; ++t) {
    float* dkr = d_kv_a.data() + t * (r + dr) + r;
    for (int64_t h = 0; h < H; ++h) {
      const float* dkt = dk.data() + (t * H + h) * dqk;
      float* dst = d_kv_b.data() + (t * H + h) * (dn + dv);
      std::copy_n(dkt, dn, dst);
      std::copy_n(d_v.data() + (t * H + h) * dv, dv, dst + dn);
      for (int64_t i = 0; i < dr; ++i) dkr[i] += dkt[dn + i];
    }
    rope_backward(dkr, rope.cos_at(t), rope.sin_at(t), rope.half);
  }
  std::vector<float> d_latent(static_cast<size_t>(T * r), 0.0f);  // [T, r]
  linear_backward(a.kv_latent.data(), d_kv_b.data(), T, w.kv_b_proj, d_latent.data(), g.kv_b_proj, hook);
  for (int64_t t = 0; t < T; ++t)
    rms_norm_backward(a.kv_a.data() + t * (r + dr), w.kv_a_layernorm.data(), d_latent.data() + t * r, 1, r, eps,
                      d_kv_a.data() + t * (r + dr), g.kv_a_layernorm);
  linear_backward(x, d_kv_a.data(), T, w.kv_a_proj_with_mqa, dx, g.kv_a_proj_with_mqa, hook);

  // Queries: undo the rotation of the rope part, then the q path.
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) rope_backward(dq.data() + (t * H + h) * dqk + dn, rope.cos_at(t), rope.sin_at(t), rope.half);
  if (c.has_q_lora()) {
    const int64_t rq = c.q_lora_rank;
    std::vector<float> d_latent_q(static_cast<size_t>(T * rq), 0.0f), d_qa(static_cast<size_t>(T * rq), 0.0f);
    linear_backward(a.q_latent.data(), dq.data(), T, w.q_b_proj, d_latent_q.data(), g.q_b_proj, hook);
    rms_norm_backward(a.q_a.data(), w.q_a_layernorm.data(), d_latent_q.data(), T, rq, eps, d_qa.data(),
                      g.q_a_layernorm);
    linear_backward(x, d_qa.data(), T, w.q_a_proj, dx, g.q_a_proj, hook);
  } else {
    linear_backward(x, dq.data(), T, w.q_proj, dx, g.q_proj, hook);
  }
}

}  // namespace dseek::train
