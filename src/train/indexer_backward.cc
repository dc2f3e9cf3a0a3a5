#include "train/indexer_backward.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/check.h"
#include "kv/latent_cache.h"
#include "model/mla.h"
#include "model/rope.h"
#include "model/tensor_table.h"
#include "ops/ops.h"

namespace dseek::train {

namespace {

constexpr float kLayerNormEps = 1e-6f;  // the indexer's k_norm, as model/indexer.cc

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Half-split ("NeoX") RoPE on x[0, 2 * half): pairs (x[i], x[i + half]), the indexer's pairing,
// with the same angles as the main attention's interleaved pairs.
void rope_half_forward(float* x, const float* cos, const float* sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = a * sin[i] + b * cos[i];
  }
}

// The transposed rotation, in place on a gradient.
void rope_half_backward(float* d, const float* cos, const float* sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = d[i], b = d[i + half];
    d[i] = a * cos[i] + b * sin[i];
    d[i + half] = -a * sin[i] + b * cos[i];
  }
}

// The row statistics the LayerNorm backward needs: mean and 1 / sqrt(var + eps), biased
// variance as ops::layer_norm (the forward) computes them.
void row_mean_inv_std(const float* x, int64_t C, float* mean_out, float* inv_out) {
  float mean = 0.0f;
  for (int64_t i = 0; i < C; ++i) mean += x[i];
  mean /= static_cast<float>(C);
  float var = 0.0f;
  for (int64_t i = 0; i < C; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= static_cast<float>(C);
  *mean_out = mean;
  *inv_out = 1.0f / std::sqrt(var + kLayerNormEps);
}

// dx [C] = d loss / d x (overwritten); dw, db [C] += (null: skipped).
void layer_norm_row_backward(const float* x, const float* w, const float* dy, int64_t C, float* dx, float* dw,
                             float* db) {
  float mean = 0.0f, inv = 0.0f;
  row_mean_inv_std(x, C, &mean, &inv);
  // With xh = (x - mean) inv and g = dy w: dx = inv (g - mean(g) - xh mean(g xh)).
  float mean_g = 0.0f, mean_gx = 0.0f;
  for (int64_t i = 0; i < C; ++i) {
    const float xh = (x[i] - mean) * inv, g = dy[i] * w[i];
    mean_g += g;
    mean_gx += g * xh;
    if (dw) dw[i] += dy[i] * xh;
    if (db) db[i] += dy[i];
  }
  mean_g /= static_cast<float>(C);
  mean_gx /= static_cast<float>(C);
  for (int64_t i = 0; i < C; ++i) dx[i] = inv * (dy[i] * w[i] - mean_g - (x[i] - mean) * inv * mean_gx);
}

}  // namespace

model::KeySelection indexer_selection(const model::ModelConfig& c, const model::IndexerWeights& w, const float* x,
                                      const float* q_latent, int64_t T) {
  // A one-layer private cache: indexer_select writes each token's FP8 key there, as it does
  // into a sequence's cache at inference.
  model::ModelConfig one = c;
  one.num_hidden_layers = 1;
  kv::LatentCache cache(one, T);
  const Status reserved = cache.reserve_next(T);
  DSEEK_CHECK(reserved.ok(), "indexer key cache for {} tokens: {}", T, reserved.message());
  const model::MlaSegment seg{0, T, 0, kv::LayerView{&cache, 0}};
  const model::RopeTable rope(c);
  return model::indexer_select(c, w, rope, x, q_latent, T, std::span<const model::MlaSegment>(&seg, 1));
}

void indexer_train_forward(const model::ModelConfig& c, const model::IndexerWeights& w, const RopeAngles& rope,
                           const float* x, const float* q_latent, int64_t T, IndexerActivations* ap) {
  const int64_t H = c.index_n_heads, d = c.index_head_dim, half = c.qk_rope_head_dim / 2;
  DSEEK_CHECK(rope.half == half, "rope angles for {} dims, qk_rope_head_dim is {}", rope.half * 2,
              c.qk_rope_head_dim);
  IndexerActivations& a = *ap;
  a.k_proj.resize(static_cast<size_t>(T * d));
  a.k.resize(a.k_proj.size());
  linear_forward(x, T, w.wk, a.k_proj.data());
  for (int64_t t = 0; t < T; ++t) {
    float* kt = a.k.data() + t * d;
    ops::layer_norm(a.k_proj.data() + t * d, w.k_norm_weight.data(), w.k_norm_bias.data(), 1, d, kLayerNormEps, kt);
    rope_half_forward(kt, rope.cos_at(t), rope.sin_at(t), half);  // rope dims first in the indexer head
  }
  a.q.resize(static_cast<size_t>(T * H * d));
  linear_forward(q_latent, T, w.wq_b, a.q.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < H; ++j) rope_half_forward(a.q.data() + (t * H + j) * d, rope.cos_at(t), rope.sin_at(t), half);
  a.w.resize(static_cast<size_t>(T * H));
  linear_forward(x, T, w.weights_proj, a.w.data());
  const float scale = 1.0f / (std::sqrt(static_cast<float>(H)) * std::sqrt(static_cast<float>(d)));
  for (float& v : a.w) v *= scale;
}

std::vector<std::vector<float>> attention_target(const model::ModelConfig& c, const MlaActivations& a, int64_t T,
                                                 KeySets keys) {
  const int64_t H = c.num_attention_heads, dqk = c.qk_head_dim();
  const float scale = static_cast<float>(c.softmax_scale());
  std::vector<std::vector<float>> p(static_cast<size_t>(T));
#pragma omp parallel for schedule(dynamic)
  for (int64_t t = 0; t < T; ++t) {
    const int64_t n = keys.count(t);
    std::vector<float>& pt = p[t];
    pt.assign(static_cast<size_t>(n), 0.0f);
    for (int64_t h = 0; h < H; ++h) {
      const float* qt = a.q.data() + (t * H + h) * dqk;
      const float lse = a.lse[h * T + t];
      for (int64_t i = 0; i < n; ++i)
        pt[i] += std::exp(scale * dot(qt, a.k.data() + (keys.key(t, i) * H + h) * dqk, dqk) - lse);
    }
    float sum = 0.0f;
    for (float v : pt) sum += v;
    for (float& v : pt) v /= sum;
  }
  return p;
}

double indexer_loss_and_backward(const model::ModelConfig& c, const model::IndexerWeights& w, const RopeAngles& rope,
                                 const float* x, const float* q_latent, int64_t T,
                                 const std::vector<std::vector<float>>& target, KeySets keys, float grad_scale,
                                 const IndexerGrads* g) {
  const int64_t H = c.index_n_heads, d = c.index_head_dim, half = c.qk_rope_head_dim / 2;
  DSEEK_CHECK(static_cast<int64_t>(target.size()) == T, "indexer target has {} rows for {} tokens", target.size(), T);
  IndexerActivations a;
  indexer_train_forward(c, w, rope, x, q_latent, T, &a);

  // Per query: scores over K_t, log-softmax, KL against p_t; dI = (softmax(I) - p_t) / T.
  std::vector<double> kl(static_cast<size_t>(T), 0.0);
  std::vector<std::vector<float>> d_scores(static_cast<size_t>(T));
#pragma omp parallel for schedule(dynamic)
  for (int64_t t = 0; t < T; ++t) {
    const int64_t n = keys.count(t);
    DSEEK_CHECK(static_cast<int64_t>(target[t].size()) == n, "indexer target row {} has {} keys, expected {}", t,
                target[t].size(), n);
    std::vector<float> s(static_cast<size_t>(n));
    const float* qt = a.q.data() + t * H * d;
    const float* wt = a.w.data() + t * H;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) {
      const float* ks = a.k.data() + keys.key(t, i) * d;
      float score = 0.0f;
      for (int64_t j = 0; j < H; ++j) score += wt[j] * std::max(dot(qt + j * d, ks, d), 0.0f);
      s[i] = score;
      mx = std::max(mx, score);
    }
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(s[i] - mx));
    const double lse = mx + std::log(sum);
    double row = 0;
    std::vector<float>& ds = d_scores[t];
    ds.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const double pi = target[t][i], log_q = s[i] - lse;
      if (pi > 0) row += pi * (std::log(pi) - log_q);  // 0 log 0 = 0
      ds[i] = static_cast<float>((std::exp(log_q) - pi) / static_cast<double>(T));
    }
    kl[t] = row;
  }
  double loss = 0;
  for (double v : kl) loss += v;
  loss /= static_cast<double>(T);
  if (g == nullptr) return loss;

  // Scores back to q, k and the head weights. I = sum_j w_j ReLU(q_j . k): where the dot is
  // positive, dq_j += dI w_j k, dk += dI w_j q_j; dw_j += dI ReLU(q_j . k). Serial over t: the
  // key gradients of different queries land on the same rows.
  std::vector<float> dq(a.q.size(), 0.0f), dk(a.k.size(), 0.0f), dw(a.w.size(), 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    const float* qt = a.q.data() + t * H * d;
    const float* wt = a.w.data() + t * H;
    for (int64_t i = 0; i < keys.count(t); ++i) {
      const float di = d_scores[t][i] * grad_scale;
      if (di == 0.0f) continue;
      const int64_t s = keys.key(t, i);
      const float* ks = a.k.data() + s * d;
      float* dks = dk.data() + s * d;
      for (int64_t j = 0; j < H; ++j) {
        const float* qj = qt + j * d;
        const float logit = dot(qj, ks, d);
        if (logit <= 0.0f) continue;
        dw[t * H + j] += di * logit;
        const float c1 = di * wt[j];
        float* dqj = dq.data() + (t * H + j) * d;
        for (int64_t e = 0; e < d; ++e) {
          dqj[e] += c1 * ks[e];
          dks[e] += c1 * qj[e];
        }
      }
    }
  }

  // Head weights: w = weights_proj(x) * scale.
  const float scale = 1.0f / (std::sqrt(static_cast<float>(H)) * std::sqrt(static_cast<float>(d)));
  for (float& v : dw) v *= scale;
  linear_backward(x, dw.data(), T, w.weights_proj, nullptr, g->weights_proj);
  // Queries: undo the rotation, then wq_b (c_q detached: no d c_q).
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < H; ++j) rope_half_backward(dq.data() + (t * H + j) * d, rope.cos_at(t), rope.sin_at(t), half);
  linear_backward(q_latent, dq.data(), T, w.wq_b, nullptr, g->wq_b);
  // Keys: undo the rotation, LayerNorm, then wk (x detached).
  std::vector<float> dk_proj(dk.size());
  for (int64_t t = 0; t < T; ++t) {
    float* dkt = dk.data() + t * d;
    rope_half_backward(dkt, rope.cos_at(t), rope.sin_at(t), half);
    layer_norm_row_backward(a.k_proj.data() + t * d, w.k_norm_weight.data(), dkt, d, dk_proj.data() + t * d,
                            g->k_norm_weight, g->k_norm_bias);
  }
  linear_backward(x, dk_proj.data(), T, w.wk, nullptr, g->wk);
  return loss;
}

IndexerGrads indexer_grads(Gradients* g, const std::string& prefix) {
  IndexerGrads out;
  if (g == nullptr) return out;
  const std::string ix = prefix + "self_attn.indexer.";
  out.wq_b = g->find(ix + "wq_b.weight");
  out.wk = g->find(ix + "wk.weight");
  out.k_norm_weight = g->find(ix + "k_norm.weight");
  out.k_norm_bias = g->find(ix + "k_norm.bias");
  out.weights_proj = g->find(ix + "weights_proj.weight");
  return out;
}

double model_indexer_loss(const model::Weights& w, const Activations& act, float weight, Gradients* grads) {
  const model::ModelConfig& c = w.config();
  if (!c.has_indexer()) return 0.0;
  const int64_t T = act.T(), L = c.num_hidden_layers;
  // L_I is the mean over layers: each layer's indexer gets weight / L of its own layer's loss.
  const float grad_scale = weight / static_cast<float>(L);
  double total = 0;
  for (int64_t l = 0; l < L; ++l) {
    const model::AttentionWeights& aw = w.layers[l].attn;
    if (!aw.indexer.present()) continue;
    const LayerActivations& la = act.layers[l];
    const KeySets keys{la.attn.selection.empty() ? nullptr : &la.attn.selection};
    const std::vector<std::vector<float>> target = attention_target(c, la.attn, T, keys);
    const IndexerGrads g = indexer_grads(grads, model::layer_prefix(l));
    total += indexer_loss_and_backward(c, aw.indexer, act.rope, la.attn_in.data(), la.attn.q_latent.data(), T, target,
                                       keys, grad_scale, grads ? &g : nullptr);
  }
  return total / static_cast<double>(L);
}

}  // namespace dseek::train
