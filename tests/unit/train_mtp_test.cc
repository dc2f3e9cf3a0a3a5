// MTP backward and the MoE balancing rules (train/mtp.h, train/balance.h) on a small random
// float32 model with one MTP layer: the MTP forward against a composition of the inference
// pieces (ops::rms_norm/linear, model::mla_forward over a latent cache, model::moe_forward),
// its gradient against central finite differences of the loss (float32, eps 1e-2, elements
// whose perturbation flips a routing choice skipped) for every MTP tensor, the shared
// embedding/head, model.norm and the main hidden states; the balance loss against a direct
// formula and finite differences; expert loads against a recount; the bias rule exactly; and
// the bias rule balancing a skewed toy router.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kv/latent_cache.h"
#include "model/checkpoint_writer.h"
#include "model/mla.h"
#include "model/moe.h"
#include "model/rope.h"
#include "model/weights.h"
#include "ops/linear.h"
#include "ops/ops.h"
#include "train/balance.h"
#include "train/model_grad.h"
#include "train/mtp.h"

#include "finite_diff.h"

namespace dseek::train {
namespace {

// 2 layers (dense, MoE), MTP block = MoE, untied head, sigmoid noaux_tc router with groups.
constexpr const char* kConfig = R"({
  "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
  "vocab_size": 48, "hidden_size": 32, "intermediate_size": 40, "moe_intermediate_size": 12,
  "num_hidden_layers": 2, "num_nextn_predict_layers": 1, "first_k_dense_replace": 1,
  "num_attention_heads": 2, "num_key_value_heads": 2, "q_lora_rank": 16, "kv_lora_rank": 16,
  "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8,
  "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2,
  "n_shared_experts": 1, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
  "topk_method": "noaux_tc", "norm_topk_prob": true, "moe_layer_freq": 1, "hidden_act": "silu",
  "rms_norm_eps": 1e-06, "rope_theta": 10000,
  "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 16,
                   "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
  "max_position_embeddings": 64, "tie_word_embeddings": false, "bos_token_id": 0,
  "eos_token_id": 1, "torch_dtype": "float32", "initializer_range": 0.02
})";

std::unique_ptr<model::Weights> load_model(uint64_t seed) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("dseek-mtp-" + std::to_string(::getpid()) + "-" + std::to_string(seed));
  model::RandomCheckpointOptions o;
  o.dtype = model::StoredDType::kF32;
  o.seed = seed;
  const Status st = model::write_random_checkpoint(kConfig, dir.string(), o);
  EXPECT_TRUE(st.ok()) << st.message();
  auto w = model::load_weights(dir.string());
  fs::remove_all(dir);  // the mapping outlives the files
  EXPECT_TRUE(w.ok()) << w.status().message();
  return w.ok() ? std::move(w).value() : nullptr;
}

// Float32 copies the test can perturb, bound in place of the mapped views.
class Owned {
 public:
  std::vector<float>& own(ops::LinearWeight* w) {
    std::vector<float>& v = bufs_.emplace_back(static_cast<size_t>(w->out * w->in));
    ops::decode_rows(*w, 0, w->out, v.data());
    w->dtype = DType::kF32;
    w->data = reinterpret_cast<const uint8_t*>(v.data());
    w->scale_inv = nullptr;
    return v;
  }

 private:
  std::deque<std::vector<float>> bufs_;
};

std::vector<int32_t> random_tokens(int64_t T, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(T));
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(V));
  return t;
}

// At most max_count of [0, n), a seeded random choice when n is larger.
std::vector<size_t> sample_indices(size_t n, size_t max_count, uint32_t seed) {
  std::vector<size_t> idx = testing::all_indices(n);
  if (n <= max_count) return idx;
  std::mt19937 rng(seed);
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(max_count);
  return idx;
}

// Finite-difference error over (a sample of) p's elements; see finite_diff.h.
double fd_error(std::vector<float>& p, const float* analytic, double eps,
                const std::function<std::optional<double>()>& loss, size_t max_count = 48, int* checked = nullptr) {
  const std::vector<size_t> idx = sample_indices(p.size(), max_count, static_cast<uint32_t>(p.size()));
  return testing::finite_difference_error(p, analytic, idx, eps, loss, checked);
}

bool same_routing(const std::vector<model::Routing>& a, const std::vector<model::Routing>& b) {
  if (a.size() != b.size()) return false;
  for (size_t t = 0; t < a.size(); ++t)
    if (a[t].experts != b[t].experts) return false;
  return true;
}

constexpr double kEps = 1e-2;
constexpr double kTol = 5e-3;

// ---------------------------------------------------------------------------------------------
// MTP forward = the inference pieces composed by hand.

TEST(Mtp, ForwardMatchesInferencePieces) {
  auto w = load_model(11);
  ASSERT_NE(w, nullptr);
  const model::ModelConfig& c = w->config();
  ASSERT_EQ(w->mtp.size(), 1u);
  const model::MtpWeights& m = w->mtp[0];
  ASSERT_FALSE(m.embed_tokens.empty());
  const int64_t T = 12, N = T - 2, D = c.hidden_size, V = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const auto tokens = random_tokens(T, V, 5);
  const Activations act = train_forward(*w, tokens);
  const MtpActivations got = mtp_forward(*w, act);
  ASSERT_EQ(got.N, N);

  std::vector<float> normed(static_cast<size_t>(T * D));
  ops::rms_norm(act.hidden.data(), w->norm.data(), T, D, eps, normed.data());
  std::vector<float> emb(static_cast<size_t>(N * D)), e(emb.size()), g(emb.size()), cat(static_cast<size_t>(N * 2 * D));
  for (int64_t i = 0; i < N; ++i) ops::decode_rows(m.embed_tokens, tokens[i + 1], 1, emb.data() + i * D);
  ops::rms_norm(emb.data(), m.enorm.data(), N, D, eps, e.data());
  ops::rms_norm(normed.data(), m.hnorm.data(), N, D, eps, g.data());
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < D; ++j) {
      cat[i * 2 * D + j] = e[i * D + j];      // embedding first
      cat[i * 2 * D + D + j] = g[i * D + j];  // then the main model's state
    }
  std::vector<float> h(static_cast<size_t>(N * D)), x(h.size()), branch(h.size());
  ops::linear_reference(cat.data(), N, m.eh_proj, h.data());
  // The decoder block as model/deepseek.cc runs a layer: its own cache, positions [0, N).
  kv::LatentCache cache(c, N);
  ASSERT_TRUE(cache.reserve_next(N).ok());
  const model::MlaSegment seg{0, N, 0, kv::LayerView{&cache, 0}};
  ops::rms_norm(h.data(), m.block.input_layernorm.data(), N, D, eps, x.data());
  model::mla_forward(c, m.block.attn, model::RopeTable(c), x.data(), N, std::span(&seg, 1), cache.latent_width(),
                     model::AttentionForm::kNaive, branch.data());
  for (size_t i = 0; i < h.size(); ++i) h[i] += branch[i];
  ops::rms_norm(h.data(), m.block.post_attention_layernorm.data(), N, D, eps, x.data());
  ASSERT_TRUE(m.block.is_moe);
  model::moe_forward(c, m.block.moe, x.data(), N, branch.data());
  for (size_t i = 0; i < h.size(); ++i) h[i] += branch[i];
  ops::rms_norm(h.data(), m.shared_head_norm.data(), N, D, eps, x.data());
  std::vector<float> logits(static_cast<size_t>(N * V));
  ops::linear_reference(x.data(), N, m.shared_head_head, logits.data());

  double err = 0, ref = 0, ce = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    err = std::max(err, std::fabs(static_cast<double>(logits[i]) - got.logits[i]));
    ref = std::max(ref, std::fabs(static_cast<double>(logits[i])));
  }
  EXPECT_LT(err / ref, 1e-5) << "MTP logits";
  for (int64_t i = 0; i < N; ++i) {  // cross-entropy against t_{i+2}
    double mx = -1e300, z = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(logits[i * V + v]));
    for (int64_t v = 0; v < V; ++v) z += std::exp(logits[i * V + v] - mx);
    ce += mx + std::log(z) - logits[i * V + tokens[i + 2]];
  }
  EXPECT_NEAR(mtp_loss(got, V), ce / N, 1e-5);

  // Too short for a prediction: no loss, no gradient.
  const Activations short_act = train_forward(*w, std::vector<int32_t>{3, 4});
  Gradients grads(c, /*include_mtp=*/true);
  std::vector<float> dh(static_cast<size_t>(2 * D), 0.0f);
  EXPECT_EQ(mtp_loss_and_backward(*w, short_act, 0.3f, &grads, &dh), 0.0);
  EXPECT_TRUE(std::all_of(dh.begin(), dh.end(), [](float v) { return v == 0.0f; }));
}

// ---------------------------------------------------------------------------------------------
// MTP gradient against finite differences: {own copies | shared embedding/head} x {after |
// before model.norm}.

struct MtpCase {
  bool shared;
  MtpHidden hidden;
};

class MtpGrad : public ::testing::TestWithParam<MtpCase> {};

TEST_P(MtpGrad, MatchesFiniteDifferences) {
  const MtpCase pc = GetParam();
  auto wp = load_model(21);
  ASSERT_NE(wp, nullptr);
  model::Weights& w = *wp;
  const model::ModelConfig& c = w.config();
  const int64_t T = 10, D = c.hidden_size, V = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float weight = 0.7f;
  model::MtpWeights& m = w.mtp[0];
  const std::string p = model::layer_prefix(c.num_hidden_layers);

  Owned owned;
  struct Param {
    std::string name;
    std::vector<float>* values;
  };
  std::vector<Param> params;
  if (pc.shared) {
    m.embed_tokens = {};
    m.shared_head_head = {};
    params.push_back({"model.embed_tokens.weight", &owned.own(&w.embed_tokens)});
    params.push_back({"lm_head.weight", &owned.own(&w.lm_head)});
  } else {
    params.push_back({p + "embed_tokens.weight", &owned.own(&m.embed_tokens)});
    params.push_back({p + "shared_head.head.weight", &owned.own(&m.shared_head_head)});
  }
  params.push_back({p + "enorm.weight", &m.enorm});
  params.push_back({p + "hnorm.weight", &m.hnorm});
  params.push_back({p + "shared_head.norm.weight", &m.shared_head_norm});
  params.push_back({p + "eh_proj.weight", &owned.own(&m.eh_proj)});
  model::LayerWeights& b = m.block;
  params.push_back({p + "input_layernorm.weight", &b.input_layernorm});
  params.push_back({p + "post_attention_layernorm.weight", &b.post_attention_layernorm});
  const std::string a = p + "self_attn.";
  params.push_back({a + "q_a_proj.weight", &owned.own(&b.attn.q_a_proj)});
  params.push_back({a + "q_a_layernorm.weight", &b.attn.q_a_layernorm});
  params.push_back({a + "q_b_proj.weight", &owned.own(&b.attn.q_b_proj)});
  params.push_back({a + "kv_a_proj_with_mqa.weight", &owned.own(&b.attn.kv_a_proj_with_mqa)});
  params.push_back({a + "kv_a_layernorm.weight", &b.attn.kv_a_layernorm});
  params.push_back({a + "kv_b_proj.weight", &owned.own(&b.attn.kv_b_proj)});
  params.push_back({a + "o_proj.weight", &owned.own(&b.attn.o_proj)});
  const std::string mp = p + "mlp.";
  params.push_back({mp + "gate.weight", &owned.own(&b.moe.gate)});
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    const std::string x = mp + "experts." + std::to_string(e) + ".";
    params.push_back({x + "gate_proj.weight", &owned.own(&b.moe.experts[e].gate_proj)});
    params.push_back({x + "up_proj.weight", &owned.own(&b.moe.experts[e].up_proj)});
    params.push_back({x + "down_proj.weight", &owned.own(&b.moe.experts[e].down_proj)});
  }
  params.push_back({mp + "shared_experts.gate_proj.weight", &owned.own(&b.moe.shared.gate_proj)});
  params.push_back({mp + "shared_experts.up_proj.weight", &owned.own(&b.moe.shared.up_proj)});
  params.push_back({mp + "shared_experts.down_proj.weight", &owned.own(&b.moe.shared.down_proj)});
  if (pc.hidden == MtpHidden::kAfterFinalNorm) params.push_back({"model.norm.weight", &w.norm});

  const auto tokens = random_tokens(T, V, 9);
  Activations act = train_forward(w, tokens);
  const MtpOptions options{pc.hidden};
  const MtpActivations base = mtp_forward(w, act, options);

  Gradients grads(c, /*include_mtp=*/true);
  std::vector<float> d_hidden(static_cast<size_t>(T * D), 0.0f);
  const double loss = mtp_loss_and_backward(w, act, weight, &grads, &d_hidden, options);
  EXPECT_NEAR(loss, mtp_loss(base, V), 1e-12);
  EXPECT_GT(loss, 0.0);

  // The main activations stay fixed: the MTP loss reaches them only through d_hidden.
  auto mtp_objective = [&]() -> std::optional<double> {
    rms_norm_forward(act.hidden.data(), w.norm.data(), T, D, eps, act.normed.data());
    const MtpActivations now = mtp_forward(w, act, options);
    if (!same_routing(now.block.moe.routing, base.block.moe.routing)) return std::nullopt;
    return weight * mtp_loss(now, V);
  };

  double worst = 0;
  std::string worst_name;
  for (const Param& prm : params) {
    int checked = 0;
    const double err = fd_error(*prm.values, grads.at(prm.name), kEps, mtp_objective, 32, &checked);
    EXPECT_LT(err, kTol) << prm.name;
    EXPECT_GT(checked, 0) << prm.name;
    if (err > worst) worst = err, worst_name = prm.name;
  }
  int checked = 0;
  const double err_h = fd_error(act.hidden, d_hidden.data(), kEps, mtp_objective, 1000, &checked);
  EXPECT_LT(err_h, kTol) << "main hidden states";
  EXPECT_GT(checked, static_cast<int>(T - 2) * D / 2);
  // Rows T-2 and T-1 feed no prediction.
  for (int64_t i = (T - 2) * D; i < T * D; ++i) ASSERT_EQ(d_hidden[i], 0.0f);
  std::printf("worst FD error: %.3g (%s), hidden states %.3g\n", worst, worst_name.c_str(), err_h);

  // The module's gradient lands only where the case says: nothing in the main layers, and
  // nothing in the copies that are not used.
  for (const auto& [name, t] : grads.tensors()) {
    const bool main_layer = name.rfind("model.layers.0.", 0) == 0 || name.rfind("model.layers.1.", 0) == 0;
    const bool unused_copy = pc.shared ? (name == p + "embed_tokens.weight" || name == p + "shared_head.head.weight")
                                       : (name == "model.embed_tokens.weight" || name == "lm_head.weight");
    const bool unused_norm = pc.hidden == MtpHidden::kBeforeFinalNorm && name == "model.norm.weight";
    if (main_layer || unused_copy || unused_norm) {
      EXPECT_TRUE(std::all_of(t.values.begin(), t.values.end(), [](float v) { return v == 0.0f; })) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, MtpGrad,
                         ::testing::Values(MtpCase{false, MtpHidden::kAfterFinalNorm},
                                           MtpCase{true, MtpHidden::kAfterFinalNorm},
                                           MtpCase{true, MtpHidden::kBeforeFinalNorm}),
                         [](const ::testing::TestParamInfo<MtpCase>& i) {
                           return std::string(i.param.shared ? "Shared" : "OwnCopies") +
                                  (i.param.hidden == MtpHidden::kAfterFinalNorm ? "AfterNorm" : "BeforeNorm");
                         });

// ---------------------------------------------------------------------------------------------
// Balance.

// logits [T, E] = ffn_in gate^T, in double.
std::vector<float> recompute_logits(const model::ModelConfig& c, const LayerActivations& a, const ops::LinearWeight& gate,
                                    int64_t T) {
  std::vector<float> logits(static_cast<size_t>(T * c.n_routed_experts));
  ops::linear_reference(a.ffn_in.data(), T, gate, logits.data());
  return logits;
}

TEST(Balance, ExpertLoadEqualsARecountFromTheRouter) {
  auto w = load_model(31);
  ASSERT_NE(w, nullptr);
  const model::ModelConfig& c = w->config();
  const int64_t T = 24, E = c.n_routed_experts;
  ASSERT_EQ(moe_layer_ids(c), (std::vector<int64_t>{1}));
  const Activations act = train_forward(*w, random_tokens(T, c.vocab_size, 1));
  const ExpertLoad load = expert_load(c, act);
  ASSERT_EQ(load.counts.size(), 1u);
  const model::LayerWeights& lw = w->layers[1];
  const std::vector<float> logits = recompute_logits(c, act.layers[1], lw.moe.gate, T);
  std::vector<int64_t> recount(static_cast<size_t>(E), 0);
  for (int64_t t = 0; t < T; ++t)
    for (int32_t e : model::route_token(c, logits.data() + t * E, lw.moe.e_score_correction_bias).experts) ++recount[e];
  EXPECT_EQ(load.counts[0], recount);
  int64_t total = 0;
  for (int64_t n : recount) total += n;
  EXPECT_EQ(total, T * c.num_experts_per_tok);

  ExpertLoad sum;
  add_expert_load(load, &sum);
  add_expert_load(load, &sum);
  for (int64_t e = 0; e < E; ++e) EXPECT_EQ(sum.counts[0][e], 2 * recount[e]);
}

TEST(Balance, SequenceLossMatchesTheDirectFormula) {
  auto w = load_model(41);
  ASSERT_NE(w, nullptr);
  const model::ModelConfig& c = w->config();
  const int64_t T = 16, E = c.n_routed_experts, K = c.num_experts_per_tok;
  const float alpha = 0.25f;
  const Activations act = train_forward(*w, random_tokens(T, c.vocab_size, 2));
  Gradients grads(c);
  const double got = seq_balance_loss_and_backward(*w, act, alpha, &grads);

  // alpha sum_e f_e P_e, f from a recount of the router's choices, P from sigmoid scores.
  const model::LayerWeights& lw = w->layers[1];
  const std::vector<float> logits = recompute_logits(c, act.layers[1], lw.moe.gate, T);
  std::vector<double> P(static_cast<size_t>(E), 0.0), f(static_cast<size_t>(E), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> s(static_cast<size_t>(E));
    double z = 0;
    for (int64_t e = 0; e < E; ++e) z += s[e] = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[t * E + e])));
    for (int64_t e = 0; e < E; ++e) P[e] += s[e] / z / T;
    for (int32_t e : model::route_token(c, logits.data() + t * E, lw.moe.e_score_correction_bias).experts)
      f[e] += static_cast<double>(E) / (K * T);
  }
  double want = 0;
  for (int64_t e = 0; e < E; ++e) want += f[e] * P[e];
  want *= alpha;
  EXPECT_NEAR(got, want, 1e-6 * want);
  // A perfectly uniform router would give alpha exactly; an unbalanced one more.
  EXPECT_GT(want, 0.5 * alpha);

  // Only the routers' gate weights receive gradient.
  for (const auto& [name, t] : grads.tensors()) {
    const bool nonzero = std::any_of(t.values.begin(), t.values.end(), [](float v) { return v != 0.0f; });
    EXPECT_EQ(nonzero, name == "model.layers.1.mlp.gate.weight") << name;
  }
}

TEST(Balance, SequenceLossGradientMatchesFiniteDifferences) {
  auto wp = load_model(51);
  ASSERT_NE(wp, nullptr);
  model::Weights& w = *wp;
  const model::ModelConfig& c = w.config();
  const int64_t T = 16, E = c.n_routed_experts;
  const float alpha = 1.0f;
  Owned owned;
  std::vector<float>& gate = owned.own(&w.layers[1].moe.gate);
  const Activations act = train_forward(w, random_tokens(T, c.vocab_size, 3));
  Gradients grads(c);
  seq_balance_loss_and_backward(w, act, alpha, &grads);

  // The router input (ffn_in) is held fixed (the documented contract); the selection is
  // recomputed and a flip skips the element.
  const LayerActivations& a = act.layers[1];
  auto objective = [&]() -> std::optional<double> {
    std::vector<float> logits(static_cast<size_t>(T * E));
    linear_forward(a.ffn_in.data(), T, w.layers[1].moe.gate, logits.data());
    std::vector<model::Routing> routing;
    for (int64_t t = 0; t < T; ++t)
      routing.push_back(model::route_token(c, logits.data() + t * E, w.layers[1].moe.e_score_correction_bias));
    if (!same_routing(routing, a.moe.routing)) return std::nullopt;
    return seq_balance_loss_layer(c, logits.data(), routing, T, alpha, nullptr);
  };
  int checked = 0;
  const double err = fd_error(gate, grads.at("model.layers.1.mlp.gate.weight"), 1e-2, objective, 100000, &checked);
  EXPECT_LT(err, 2e-3);
  EXPECT_GT(checked, static_cast<int>(gate.size()) / 2);
  std::printf("balance gate FD error %.3g over %d elements\n", err, checked);

  // The per-token formula in isolation, both scoring functions, against differences of the
  // logits themselves (the choice fixed: f is a constant).
  for (model::ScoringFunc sf : {model::ScoringFunc::kSigmoid, model::ScoringFunc::kSoftmax}) {
    model::ModelConfig cs = c;
    cs.scoring_func = sf;
    std::vector<float> logits = a.moe.router_logits;
    std::vector<float> dl(logits.size(), 0.0f);
    seq_balance_loss_layer(cs, logits.data(), a.moe.routing, T, alpha, dl.data());
    auto f = [&]() -> std::optional<double> {
      return seq_balance_loss_layer(cs, logits.data(), a.moe.routing, T, alpha, nullptr);
    };
    const double e2 = fd_error(logits, dl.data(), 1e-2, f, 100000);
    EXPECT_LT(e2, 1e-3) << (sf == model::ScoringFunc::kSigmoid ? "sigmoid" : "softmax");
  }
}

TEST(Balance, BiasMovesByExactlySpeedAgainstTheLoad) {
  auto wp = load_model(61);
  ASSERT_NE(wp, nullptr);
  model::Weights& w = *wp;
  std::vector<float>& bias = w.layers[1].moe.e_score_correction_bias;
  const std::vector<float> before = bias;
  ExpertLoad load;
  load.counts = {{5, 0, 2, 2, 1, 3, 2, 1}};  // mean 2
  const float speed = 0.001f;
  update_expert_bias(load, speed, &w);
  const std::vector<int> sign = {-1, +1, 0, 0, +1, -1, 0, +1};
  for (size_t e = 0; e < bias.size(); ++e) {
    const float want = sign[e] > 0 ? before[e] + speed : sign[e] < 0 ? before[e] - speed : before[e];
    EXPECT_EQ(bias[e], want) << "expert " << e;
  }
  // The next forward routes with the new bias.
  for (float& b : bias) b = 0.0f;
  bias[3] = 100.0f;
  const Activations act = train_forward(w, random_tokens(6, w.config().vocab_size, 4));
  for (const model::Routing& r : act.layers[1].moe.routing)
    EXPECT_NE(std::find(r.experts.begin(), r.experts.end(), 3), r.experts.end());
}

// A fixed router whose logits favour high expert ids by up to 3 (sigmoid space): repeated
// sign updates of the bias bring the max/mean load toward 1.
TEST(Balance, RepeatedBiasUpdatesBalanceASkewedRouter) {
  auto wp = load_model(71);
  ASSERT_NE(wp, nullptr);
  model::Weights& w = *wp;
  const model::ModelConfig& c = w.config();
  const int64_t T = 512, E = c.n_routed_experts, K = c.num_experts_per_tok;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> logits(static_cast<size_t>(T * E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) logits[t * E + e] = nd(rng) + 3.0f * static_cast<float>(e) / (E - 1);
  std::vector<float>& bias = w.layers[1].moe.e_score_correction_bias;
  std::fill(bias.begin(), bias.end(), 0.0f);

  auto ratio = [&](ExpertLoad* out) {
    ExpertLoad load;
    load.counts.assign(1, std::vector<int64_t>(static_cast<size_t>(E), 0));
    for (int64_t t = 0; t < T; ++t)
      for (int32_t e : model::route_token(c, logits.data() + t * E, bias).experts) ++load.counts[0][e];
    *out = load;
    const int64_t mx = *std::max_element(load.counts[0].begin(), load.counts[0].end());
    return static_cast<double>(mx) / (static_cast<double>(T * K) / E);
  };
  ExpertLoad load;
  const double first = ratio(&load);
  double last = first, best_late = 1e9;
  for (int step = 0; step < 400; ++step) {
    update_expert_bias(load, 0.01f, &w);
    last = ratio(&load);
    if (step >= 350) best_late = std::min(best_late, last);
  }
  std::printf("max/mean load: %.3f before, %.3f after 400 updates (best of the last 50 %.3f)\n", first, last,
              best_late);
  EXPECT_GT(first, 2.0);
  EXPECT_LT(last, 1.2);
  EXPECT_GT(bias[0], bias[E - 1]);         // the disfavoured expert got the larger bias
}

}  // namespace
}  // namespace dseek::train
