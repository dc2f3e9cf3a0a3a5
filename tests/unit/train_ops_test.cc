// The backward of every training op against central finite differences of its own forward:
// the row-wise ops in double (eps 1e-6, errors ~1e-9), linear against products computed
// directly in double, and the MLA and MoE blocks (float32, weights read as stored) with
// eps 1e-2 on O(1) values. Objectives are L = sum r . y with fixed random r, so dy = r.
#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "model/moe.h"
#include "model/rope.h"
#include "ops/linear.h"
#include "train/mla_backward.h"
#include "train/moe_backward.h"
#include "train/ops_backward.h"

#include "finite_diff.h"

namespace dseek::train {
namespace {

using testing::f32_weight;

template <typename F>
std::vector<F> random_vec(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<F> v(n);
  for (F& x : v) x = static_cast<F>(nd(rng));
  return v;
}

template <typename F>
double weighted_sum(const std::vector<F>& r, const F* y) {
  double s = 0;
  for (size_t i = 0; i < r.size(); ++i) s += static_cast<double>(r[i]) * static_cast<double>(y[i]);
  return s;
}

// max |analytic - numeric| / max |numeric| over every element of p, by central differences of
// loss(); a loss that returns nullopt at a perturbed point (a routing decision flipped) skips
// that element. *checked counts the elements compared.
template <typename F>
double fd_error(std::vector<F>& p, const std::vector<F>& analytic, double eps,
                const std::function<std::optional<double>()>& loss, int* checked = nullptr) {
  EXPECT_EQ(p.size(), analytic.size());
  return testing::finite_difference_error(p, analytic.data(), testing::all_indices(p.size()), eps, loss, checked);
}

constexpr double kEps = 1e-6;       // double ops
constexpr double kDoubleTol = 1e-7;

TEST(TrainOps, RmsNormBackward) {
  const int64_t T = 3, C = 8;
  auto x = random_vec<double>(T * C, 1), w = random_vec<double>(C, 2), r = random_vec<double>(T * C, 3);
  std::vector<double> y(T * C), dx(T * C, 0.0), dw(C, 0.0);
  auto loss = [&]() -> std::optional<double> {
    rms_norm_forward(x.data(), w.data(), T, C, 1e-6, y.data());
    return weighted_sum(r, y.data());
  };
  rms_norm_backward(x.data(), w.data(), r.data(), T, C, 1e-6, dx.data(), dw.data());
  EXPECT_LT(fd_error(x, dx, kEps, loss), kDoubleTol);
  EXPECT_LT(fd_error(w, dw, kEps, loss), kDoubleTol);
}

TEST(TrainOps, RopeBackwardAndAnglesMatchTheModelTable) {
  const int64_t half = 4;
  auto x = random_vec<double>(2 * half, 4), r = random_vec<double>(2 * half, 5);
  auto angles = random_vec<double>(half, 6, 3.0);
  std::vector<double> cs(half), sn(half);
  for (int64_t i = 0; i < half; ++i) cs[i] = std::cos(angles[i]), sn[i] = std::sin(angles[i]);
  auto loss = [&]() -> std::optional<double> {
    std::vector<double> y = x;
    rope_forward(y.data(), cs.data(), sn.data(), half);
    return weighted_sum(r, y.data());
  };
  std::vector<double> dx = r;
  rope_backward(dx.data(), cs.data(), sn.data(), half);
  EXPECT_LT(fd_error(x, dx, kEps, loss), kDoubleTol);

  // The tables rotate exactly as model::RopeTable does (YaRN on).
  model::ModelConfig c;
  c.qk_rope_head_dim = 16;
  c.rope_theta = 10000;
  c.rope_scaling = {true, 4.0, 64, 32.0, 1.0, 1.0, 1.0};
  const model::RopeTable table(c);
  const RopeAngles a = rope_angles(table, 100);
  for (int64_t p : {0, 1, 37, 99}) {
    auto v = random_vec<float>(16, 7 + static_cast<uint32_t>(p));
    std::vector<float> mine = v;
    rope_forward(mine.data(), a.cos_at(p), a.sin_at(p), a.half);
    table.rotate_interleaved(v.data(), p);
    EXPECT_EQ(mine, v) << "position " << p;
  }
}

TEST(TrainOps, CausalAttentionBackward) {
  const int64_t T = 5, H = 2, dk = 3, dv = 4;
  const double scale = 0.7;
  auto q = random_vec<double>(T * H * dk, 8), k = random_vec<double>(T * H * dk, 9);
  auto v = random_vec<double>(T * H * dv, 10), r = random_vec<double>(T * H * dv, 11);
  std::vector<double> o(T * H * dv), lse(H * T);
  auto loss = [&]() -> std::optional<double> {
    attention_forward(q.data(), k.data(), v.data(), T, H, dk, dv, scale, o.data(), lse.data());
    return weighted_sum(r, o.data());
  };
  loss();
  // Causality: the first query sees only the first key, so its output is that value.
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < dv; ++j) EXPECT_NEAR(o[h * dv + j], v[h * dv + j], 1e-12);
  std::vector<double> dq(q.size(), 0.0), dkk(k.size(), 0.0), dvv(v.size(), 0.0);
  attention_backward(q.data(), k.data(), v.data(), o.data(), lse.data(), r.data(), T, H, dk, dv, scale, dq.data(),
                     dkk.data(), dvv.data());
  EXPECT_LT(fd_error(q, dq, kEps, loss), kDoubleTol);
  EXPECT_LT(fd_error(k, dkk, kEps, loss), kDoubleTol);
  EXPECT_LT(fd_error(v, dvv, kEps, loss), kDoubleTol);
}

TEST(TrainOps, SwigluBackward) {
  const int64_t n = 12;
  auto g = random_vec<double>(n, 12, 2.0), u = random_vec<double>(n, 13), r = random_vec<double>(n, 14);
  std::vector<double> h(n), dg(n, 0.0), du(n, 0.0);
  auto loss = [&]() -> std::optional<double> {
    swiglu_forward(g.data(), u.data(), n, h.data());
    return weighted_sum(r, h.data());
  };
  swiglu_backward(g.data(), u.data(), r.data(), n, dg.data(), du.data());
  EXPECT_LT(fd_error(g, dg, kEps, loss), kDoubleTol);
  EXPECT_LT(fd_error(u, du, kEps, loss), kDoubleTol);
}

model::ModelConfig router_config(model::ScoringFunc func, model::TopkMethod method, bool norm, double scale) {
  model::ModelConfig c;
  c.hidden_size = 8;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 3;
  c.n_group = 4;
  c.topk_group = 2;
  c.scoring_func = func;
  c.topk_method = method;
  c.norm_topk_prob = norm;
  c.routed_scaling_factor = scale;
  return c;
}

TEST(TrainOps, RouterWeightsBackwardAndForwardMatchRouteToken) {
  const auto sigmoid = router_config(model::ScoringFunc::kSigmoid, model::TopkMethod::kNoauxTc, true, 2.5);
  const auto softmax = router_config(model::ScoringFunc::kSoftmax, model::TopkMethod::kGreedy, false, 1.0);
  const auto softmax_norm = router_config(model::ScoringFunc::kSoftmax, model::TopkMethod::kGroupLimitedGreedy, true, 16.0);
  int seed = 20;
  for (const model::ModelConfig& c : {sigmoid, softmax, softmax_norm}) {
    auto logits_f = random_vec<float>(8, ++seed, 2.0);
    const std::vector<float> bias = c.topk_method == model::TopkMethod::kNoauxTc ? random_vec<float>(8, ++seed, 0.3)
                                                                                  : std::vector<float>{};
    const model::Routing rt = model::route_token(c, logits_f.data(), bias);
    std::vector<float> wf(3);
    route_weights_forward(c, logits_f.data(), rt.experts.data(), 3, wf.data());
    for (int k = 0; k < 3; ++k) EXPECT_FLOAT_EQ(wf[k], rt.weights[k]);

    std::vector<double> logits(logits_f.begin(), logits_f.end()), wd(3), dl(8, 0.0);
    auto r = random_vec<double>(3, ++seed);
    auto loss = [&]() -> std::optional<double> {
      route_weights_forward(c, logits.data(), rt.experts.data(), 3, wd.data());
      return weighted_sum(r, wd.data());
    };
    route_weights_backward(c, logits.data(), rt.experts.data(), 3, r.data(), dl.data());
    EXPECT_LT(fd_error(logits, dl, kEps, loss), kDoubleTol);
    if (c.scoring_func == model::ScoringFunc::kSigmoid)  // unchosen experts get nothing
      for (int e = 0; e < 8; ++e)
        if (std::find(rt.experts.begin(), rt.experts.end(), e) == rt.experts.end()) {
          EXPECT_EQ(dl[e], 0.0);
        }
  }
}

TEST(TrainOps, CrossEntropyBackward) {
  const int64_t N = 3, V = 7;
  auto logits = random_vec<double>(N * V, 30, 2.0);
  const std::vector<int32_t> targets = {2, 0, 6};
  // By hand for row 0: logsumexp - logit of the target.
  double lse = 0;
  for (int64_t i = 0; i < V; ++i) lse += std::exp(logits[i]);
  const double row0 = std::log(lse) - logits[2];
  std::vector<double> one(logits.begin(), logits.begin() + V);
  EXPECT_NEAR(cross_entropy_forward(one.data(), targets.data(), 1, V), row0, 1e-12);

  std::vector<double> dl(N * V, 0.0);
  cross_entropy_backward(logits.data(), targets.data(), N, V, 1.5, dl.data());
  auto loss = [&]() -> std::optional<double> { return 1.5 * cross_entropy_forward(logits.data(), targets.data(), N, V); };
  EXPECT_LT(fd_error(logits, dl, kEps, loss), kDoubleTol);
}

TEST(TrainOps, LinearBackwardAccumulates) {
  const int64_t T = 5, in = 37, out = 21;  // not multiples of the row block
  auto x = random_vec<float>(T * in, 40), wv = random_vec<float>(out * in, 41), dy = random_vec<float>(T * out, 42);
  const ops::LinearWeight w = f32_weight(wv, out, in);
  std::vector<float> dx(T * in, 0.0f), dw(out * in, 0.0f);
  linear_backward(x.data(), dy.data(), T, w, dx.data(), dw.data());
  linear_backward(x.data(), dy.data(), T, w, dx.data(), dw.data());  // += : twice the gradient
  double err_x = 0, err_w = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < in; ++i) {
      double want = 0;
      for (int64_t o = 0; o < out; ++o) want += static_cast<double>(dy[t * out + o]) * wv[o * in + i];
      err_x = std::max(err_x, std::fabs(dx[t * in + i] - 2 * want));
    }
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double want = 0;
      for (int64_t t = 0; t < T; ++t) want += static_cast<double>(dy[t * out + o]) * x[t * in + i];
      err_w = std::max(err_w, std::fabs(dw[o * in + i] - 2 * want));
    }
  EXPECT_LT(err_x, 1e-4);
  EXPECT_LT(err_w, 1e-4);
}

TEST(TrainOps, EmbeddingBackwardAddsRepeatedTokens) {
  const int64_t C = 3;
  const std::vector<int32_t> tokens = {2, 0, 2};
  const std::vector<float> dy = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<float> table(4 * C, 0.0f);
  embedding_backward(tokens.data(), dy.data(), 3, C, table.data());
  EXPECT_EQ(table, (std::vector<float>{4, 5, 6, 0, 0, 0, 8, 10, 12, 0, 0, 0}));
}

// --- blocks, float32 ------------------------------------------------------------------------

constexpr double kBlockEps = 1e-2;
constexpr double kBlockTol = 3e-3;

model::ModelConfig mla_config(bool q_lora) {
  model::ModelConfig c;
  c.hidden_size = 8;
  c.num_attention_heads = 2;
  c.q_lora_rank = q_lora ? 6 : 0;
  c.kv_lora_rank = 4;
  c.qk_nope_head_dim = 3;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 3;
  c.rope_theta = 10000;
  c.rope_scaling = {true, 4.0, 2, 32.0, 1.0, 1.0, 1.0};
  c.max_position_embeddings = 16;
  return c;
}

class MlaBackward : public ::testing::TestWithParam<bool> {};

TEST_P(MlaBackward, MatchesFiniteDifferences) {
  const model::ModelConfig c = mla_config(GetParam());
  const int64_t T = 5, D = c.hidden_size, H = c.num_attention_heads, r = c.kv_lora_rank;
  const int64_t dqk = c.qk_head_dim(), rq = c.q_lora_rank, dv = c.v_head_dim;
  uint32_t seed = 50;
  auto x = random_vec<float>(T * D, ++seed);
  const double s = 0.5;  // keeps logits moderate
  auto q_a = random_vec<float>(rq * D, ++seed, s), q_a_ln = random_vec<float>(rq, ++seed, 1.0);
  auto q_b = random_vec<float>(H * dqk * (rq ? rq : D), ++seed, s);
  auto kv_a = random_vec<float>((r + c.qk_rope_head_dim) * D, ++seed, s), kv_a_ln = random_vec<float>(r, ++seed);
  auto kv_b = random_vec<float>(H * (c.qk_nope_head_dim + dv) * r, ++seed, s);
  auto o = random_vec<float>(D * H * dv, ++seed, s);
  auto rr = random_vec<float>(T * D, ++seed);

  model::AttentionWeights w;
  const model::RopeTable table(c);
  const RopeAngles rope = rope_angles(table, T);
  auto bind = [&] {
    if (rq) {
      w.q_a_proj = f32_weight(q_a, rq, D);
      w.q_a_layernorm = q_a_ln;
      w.q_b_proj = f32_weight(q_b, H * dqk, rq);
    } else {
      w.q_proj = f32_weight(q_b, H * dqk, D);
    }
    w.kv_a_proj_with_mqa = f32_weight(kv_a, r + c.qk_rope_head_dim, D);
    w.kv_a_layernorm = kv_a_ln;
    w.kv_b_proj = f32_weight(kv_b, H * (c.qk_nope_head_dim + dv), r);
    w.o_proj = f32_weight(o, D, H * dv);
  };
  std::vector<float> out(T * D);
  auto loss = [&]() -> std::optional<double> {
    bind();  // the norm weights are copies
    MlaActivations act;
    mla_train_forward(c, w, rope, x.data(), T, &act, out.data());
    return weighted_sum(rr, out.data());
  };

  bind();
  MlaActivations act;
  mla_train_forward(c, w, rope, x.data(), T, &act, out.data());
  std::vector<float> dx(x.size(), 0.0f), g_qa(q_a.size(), 0.0f), g_qaln(q_a_ln.size(), 0.0f), g_qb(q_b.size(), 0.0f);
  std::vector<float> g_kva(kv_a.size(), 0.0f), g_kvaln(kv_a_ln.size(), 0.0f), g_kvb(kv_b.size(), 0.0f);
  std::vector<float> g_o(o.size(), 0.0f);
  AttentionGrads g;
  if (rq) {
    g.q_a_proj = g_qa.data(), g.q_a_layernorm = g_qaln.data(), g.q_b_proj = g_qb.data();
  } else {
    g.q_proj = g_qb.data();
  }
  g.kv_a_proj_with_mqa = g_kva.data(), g.kv_a_layernorm = g_kvaln.data(), g.kv_b_proj = g_kvb.data();
  g.o_proj = g_o.data();
  mla_backward(c, w, rope, x.data(), T, act, rr.data(), dx.data(), g);

  EXPECT_LT(fd_error(x, dx, kBlockEps, loss), kBlockTol) << "x";
  if (rq) {
    EXPECT_LT(fd_error(q_a, g_qa, kBlockEps, loss), kBlockTol) << "q_a_proj";
    EXPECT_LT(fd_error(q_a_ln, g_qaln, kBlockEps, loss), kBlockTol) << "q_a_layernorm";
  }
  EXPECT_LT(fd_error(q_b, g_qb, kBlockEps, loss), kBlockTol) << "q_b_proj / q_proj";
  EXPECT_LT(fd_error(kv_a, g_kva, kBlockEps, loss), kBlockTol) << "kv_a_proj_with_mqa";
  EXPECT_LT(fd_error(kv_a_ln, g_kvaln, kBlockEps, loss), kBlockTol) << "kv_a_layernorm";
  EXPECT_LT(fd_error(kv_b, g_kvb, kBlockEps, loss), kBlockTol) << "kv_b_proj";
  EXPECT_LT(fd_error(o, g_o, kBlockEps, loss), kBlockTol) << "o_proj";
}

INSTANTIATE_TEST_SUITE_P(QLora, MlaBackward, ::testing::Bool());

// An MoE layer of E experts and one shared expert over the given float32 matrices: the router
// gate [E, D], ew = gate, up, down of each expert then of the shared one ([F, D], [F, D], [D, F]).
model::MoeWeights moe_weights(const std::vector<float>& gate, const std::vector<std::vector<float>>& ew,
                              std::vector<float> bias, int64_t E, int64_t D, int64_t F) {
  model::MoeWeights w;
  w.e_score_correction_bias = std::move(bias);
  w.has_shared = true;
  w.gate = f32_weight(gate, E, D);
  for (int64_t e = 0; e <= E; ++e) {
    model::FfnWeights f{f32_weight(ew[3 * e], F, D), f32_weight(ew[3 * e + 1], F, D), f32_weight(ew[3 * e + 2], D, F)};
    if (e < E) w.experts.push_back(f);
    else w.shared = f;
  }
  return w;
}

// model::moe_forward at 1-6 tokens against a reference built from ops::linear_reference: up to
// 4 tokens the experts run as two batched products (ops::linear_batch; some experts see a subset
// of the tokens, gathered), above that one expert at a time.
TEST(MoeForward, FewTokensMatchTheReference) {
  model::ModelConfig c = router_config(model::ScoringFunc::kSigmoid, model::TopkMethod::kNoauxTc, true, 2.5);
  c.hidden_size = 128;
  c.moe_intermediate_size = 192;
  c.n_shared_experts = 1;
  const int64_t D = c.hidden_size, E = c.n_routed_experts, F = c.moe_intermediate_size;
  uint32_t seed = 90;
  auto gate = random_vec<float>(E * D, ++seed, 0.5);
  std::vector<std::vector<float>> ew;  // gate, up, down per expert, then shared
  for (int64_t i = 0; i < (E + 1) * 3; ++i) ew.push_back(random_vec<float>(F * D, ++seed, 0.1));
  const model::MoeWeights w = moe_weights(gate, ew, random_vec<float>(E, ++seed, 0.2), E, D, F);
  auto ffn_reference = [&](const model::FfnWeights& f, const float* x, std::vector<double>& acc, double weight) {
    std::vector<float> g(F), u(F), h(F), y(D);
    ops::linear_reference(x, 1, f.gate_proj, g.data());
    ops::linear_reference(x, 1, f.up_proj, u.data());
    for (int64_t i = 0; i < F; ++i) h[i] = static_cast<float>(g[i] / (1.0 + std::exp(-static_cast<double>(g[i])))) * u[i];
    ops::linear_reference(h.data(), 1, f.down_proj, y.data());
    for (int64_t i = 0; i < D; ++i) acc[i] += weight * y[i];
  };
  for (int64_t T = 1; T <= 6; ++T) {
    auto x = random_vec<float>(T * D, ++seed);
    std::vector<float> out(T * D, -7.0f);
    model::moe_forward(c, w, x.data(), T, out.data());
    int64_t subsets = 0;  // experts that saw only some of the tokens
    std::vector<int64_t> seen(E, 0);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<float> logits(E);
      ops::linear_reference(x.data() + t * D, 1, w.gate, logits.data());
      const model::Routing r = model::route_token(c, logits.data(), w.e_score_correction_bias);
      std::vector<double> acc(D, 0.0);
      for (size_t k = 0; k < r.experts.size(); ++k) {
        ffn_reference(w.experts[r.experts[k]], x.data() + t * D, acc, r.weights[k]);
        ++seen[r.experts[k]];
      }
      ffn_reference(w.shared, x.data() + t * D, acc, 1.0);
      for (int64_t i = 0; i < D; ++i) EXPECT_NEAR(out[t * D + i], acc[i], 1e-4 * (1.0 + std::fabs(acc[i]))) << "T " << T;
    }
    for (int64_t e = 0; e < E; ++e) subsets += seen[e] > 0 && seen[e] < T;
    if (T >= 3) {
      EXPECT_GT(subsets, 0) << "T " << T << ": no expert saw a subset of the tokens";
    }
  }
}

TEST(MoeBackward, MatchesFiniteDifferencesWhereRoutingHolds) {
  model::ModelConfig c = router_config(model::ScoringFunc::kSigmoid, model::TopkMethod::kNoauxTc, true, 2.5);
  c.moe_intermediate_size = 4;
  c.n_shared_experts = 1;
  const int64_t T = 6, D = c.hidden_size, E = c.n_routed_experts, F = c.moe_intermediate_size;
  uint32_t seed = 80;
  auto x = random_vec<float>(T * D, ++seed);
  auto gate = random_vec<float>(E * D, ++seed, 0.5);
  std::vector<std::vector<float>> ew;  // [E * 3 + 3]: gate, up, down per expert, then shared
  for (int64_t i = 0; i < (E + 1) * 3; ++i) ew.push_back(random_vec<float>(F * D, ++seed, 0.5));
  auto rr = random_vec<float>(T * D, ++seed);

  const model::MoeWeights w = moe_weights(gate, ew, random_vec<float>(E, ++seed, 0.2), E, D, F);
  MoeActivations base;
  std::vector<float> out(T * D);
  moe_train_forward(c, w, x.data(), T, &base, out.data());
  // Compare against the inference path too: the same function of x.
  std::vector<float> ref(T * D);
  model::moe_forward(c, w, x.data(), T, ref.data());
  for (int64_t i = 0; i < T * D; ++i) EXPECT_NEAR(out[i], ref[i], 1e-5f);

  auto loss = [&]() -> std::optional<double> {
    MoeActivations act;
    moe_train_forward(c, w, x.data(), T, &act, out.data());
    for (int64_t t = 0; t < T; ++t)  // a flipped choice is a discontinuity, not a gradient
      if (act.routing[t].experts != base.routing[t].experts) return std::nullopt;
    return weighted_sum(rr, out.data());
  };

  std::vector<float> dx(x.size(), 0.0f), g_gate(gate.size(), 0.0f);
  std::vector<std::vector<float>> g_ew;
  for (const auto& v : ew) g_ew.emplace_back(v.size(), 0.0f);
  MoeGrads g;
  g.gate = g_gate.data();
  for (int64_t e = 0; e < E; ++e) g.experts.push_back({g_ew[3 * e].data(), g_ew[3 * e + 1].data(), g_ew[3 * e + 2].data()});
  g.shared = {g_ew[3 * E].data(), g_ew[3 * E + 1].data(), g_ew[3 * E + 2].data()};
  moe_backward(c, w, x.data(), T, base, rr.data(), dx.data(), g);

  int checked = 0;
  EXPECT_LT(fd_error(x, dx, kBlockEps, loss, &checked), kBlockTol) << "x";
  EXPECT_GT(checked, static_cast<int>(x.size()) / 2);
  EXPECT_LT(fd_error(gate, g_gate, kBlockEps, loss, &checked), kBlockTol) << "gate";
  EXPECT_GT(checked, static_cast<int>(gate.size()) / 2);
  int used = 0;
  for (int64_t e = 0; e <= E; ++e) {
    if (e < E && base.experts[e].tokens.empty()) continue;  // no tokens, no gradient (checked below)
    ++used;
    for (int k = 0; k < 3; ++k)
      EXPECT_LT(fd_error(ew[3 * e + k], g_ew[3 * e + k], kBlockEps, loss), kBlockTol) << "expert " << e << " part " << k;
  }
  EXPECT_GE(used, 3);
  for (int64_t e = 0; e < E; ++e)
    if (base.experts[e].tokens.empty())
      for (int k = 0; k < 3; ++k)
        for (float v : g_ew[3 * e + k]) {
          EXPECT_EQ(v, 0.0f);
        }
}

}  // namespace
}  // namespace dseek::train
