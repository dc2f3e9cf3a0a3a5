// Training V3.2's lightning indexer (train/indexer_backward.h) and sparse attention in the
// training pass: L_I's gradient against central finite differences for every indexer tensor,
// dense and sparse stage; L_I reaches nothing else and the LM loss does not reach the indexer;
// the sparse-masked MLA backward against finite differences with the selection held fixed;
// the training forward's logits on tiny-v32 equal inference's (index_topk 8 < 24 tokens, so
// the selection is really sparse); `dseek train` stages (frozen main model during the dense
// warm-up, indexer loss falling, then LM loss falling; resume mid-warm-up bit-exact); and
// `dseek grad` on tiny-v32.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>

#include "io/safetensors.h"
#include "model/checkpoint_writer.h"
#include "model/deepseek.h"
#include "model/rope.h"
#include "model/tensor_table.h"
#include "model/weights.h"
#include "train/finetune.h"
#include "train/indexer_backward.h"
#include "train/mla_backward.h"
#include "train/model_grad.h"
#include "train/token_data.h"
#include "train/trainer.h"

#include "../e2e/e2e_util.h"
#include "finite_diff.h"
#include "model_fixtures.h"
#include "scratch_dir.h"

namespace dseek::train {
namespace {

using testing::f32_weight;

namespace fs = std::filesystem;

constexpr double kBlockEps = 1e-2;  // float32 blocks, O(1) values, as train_ops_test
constexpr double kBlockTol = 3e-3;

std::vector<float> random_vec(size_t n, uint32_t seed, double scale = 1.0, double mean = 0.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(mean, scale);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(nd(rng));
  return v;
}

model::ModelConfig indexer_config() {
  model::ModelConfig c;
  c.arch = model::Arch::kDeepseekV32;
  c.hidden_size = 8;
  c.num_attention_heads = 2;
  c.q_lora_rank = 6;
  c.kv_lora_rank = 4;
  c.qk_nope_head_dim = 3;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 3;
  c.rope_theta = 10000;
  c.rope_scaling = {true, 4.0, 2, 32.0, 1.0, 1.0, 1.0};
  c.max_position_embeddings = 16;
  c.index_n_heads = 3;
  c.index_head_dim = 128;
  c.index_topk = 3;
  return c;
}

// Some keys <= t for each query (always t itself): a fixed "selection".
model::KeySelection fixed_selection(int64_t T, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  model::KeySelection sel(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> all;
    for (int32_t s = 0; s < t; ++s) all.push_back(s);
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(static_cast<size_t>(std::min<int64_t>(k - 1, t)));
    all.push_back(static_cast<int32_t>(t));
    std::sort(all.begin(), all.end());
    sel[t] = all;
  }
  return sel;
}

class IndexerLoss : public ::testing::TestWithParam<bool> {};  // sparse stage?

TEST_P(IndexerLoss, MatchesFiniteDifferencesForEveryIndexerTensor) {
  const bool sparse = GetParam();
  const model::ModelConfig c = indexer_config();
  const int64_t T = 7, D = c.hidden_size, rq = c.q_lora_rank, H = c.index_n_heads, d = c.index_head_dim;
  uint32_t seed = 300;
  const auto x = random_vec(T * D, ++seed), q_latent = random_vec(T * rq, ++seed);
  auto wq_b = random_vec(H * d * rq, ++seed, 0.3), wk = random_vec(d * D, ++seed, 0.5);
  auto kn_w = random_vec(d, ++seed, 0.3, 1.0), kn_b = random_vec(d, ++seed, 0.3);
  auto wp = random_vec(H * D, ++seed, 1.0);
  const model::KeySelection sel = fixed_selection(T, 3, ++seed);
  const KeySets keys{sparse ? &sel : nullptr};
  // A target distribution over each query's key set (any fixed positive p_t).
  std::vector<std::vector<float>> target(static_cast<size_t>(T));
  std::mt19937 rng(++seed);
  for (int64_t t = 0; t < T; ++t) {
    double sum = 0;
    for (int64_t i = 0; i < keys.count(t); ++i) sum += target[t].emplace_back(0.05f + (rng() % 1000) / 1000.0f);
    for (float& p : target[t]) p = static_cast<float>(p / sum);
  }

  model::IndexerWeights w;
  auto bind = [&] {
    w.wq_b = f32_weight(wq_b, H * d, rq);
    w.wk = f32_weight(wk, d, D);
    w.k_norm_weight = kn_w;
    w.k_norm_bias = kn_b;
    w.weights_proj = f32_weight(wp, H, D);
  };
  const RopeAngles rope = rope_angles(model::RopeTable(c), T);
  // The sign of every q_j . k_s the loss reads: a perturbation that flips one crosses a ReLU
  // kink, where a central difference is not the derivative; those elements are skipped.
  auto signs = [&] {
    IndexerActivations a;
    indexer_train_forward(c, w, rope, x.data(), q_latent.data(), T, &a);
    std::vector<bool> out;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < keys.count(t); ++i)
        for (int64_t j = 0; j < H; ++j) {
          float s = 0;
          for (int64_t e = 0; e < d; ++e) s += a.q[(t * H + j) * d + e] * a.k[keys.key(t, i) * d + e];
          out.push_back(s > 0);
        }
    return out;
  };
  bind();
  const std::vector<bool> base_signs = signs();
  auto loss = [&]() -> std::optional<double> {
    bind();
    if (signs() != base_signs) return std::nullopt;
    return indexer_loss_and_backward(c, w, rope, x.data(), q_latent.data(), T, target, keys, 1.0f, nullptr);
  };

  bind();
  std::vector<float> g_qb(wq_b.size(), 0.0f), g_k(wk.size(), 0.0f), g_nw(d, 0.0f), g_nb(d, 0.0f), g_p(wp.size(), 0.0f);
  const IndexerGrads g{g_qb.data(), g_k.data(), g_nw.data(), g_nb.data(), g_p.data()};
  const double l0 = indexer_loss_and_backward(c, w, rope, x.data(), q_latent.data(), T, target, keys, 1.0f, &g);
  EXPECT_GT(l0, 0.0);

  // Every element of the small tensors; a spread of wq_b's (every 7th).
  std::vector<size_t> some_qb;
  for (size_t i = 0; i < wq_b.size(); i += 7) some_qb.push_back(i);
  auto check = [&](std::vector<float>& p, const std::vector<float>& analytic, std::span<const size_t> idx,
                   const char* name) {
    int checked = 0;
    const double err = testing::finite_difference_error(p, analytic.data(), idx, kBlockEps, loss, &checked);
    EXPECT_LT(err, kBlockTol) << name;
    EXPECT_GT(checked, static_cast<int>(idx.size() * 3 / 4)) << name << ": too many ReLU kinks crossed";
  };
  check(wq_b, g_qb, some_qb, "wq_b");
  check(wk, g_k, testing::all_indices(wk.size()), "wk");
  check(kn_w, g_nw, testing::all_indices(kn_w.size()), "k_norm.weight");
  check(kn_b, g_nb, testing::all_indices(kn_b.size()), "k_norm.bias");
  check(wp, g_p, testing::all_indices(wp.size()), "weights_proj");
}

std::string stage_name(const ::testing::TestParamInfo<bool>& p) { return p.param ? "Sparse" : "Dense"; }
INSTANTIATE_TEST_SUITE_P(Stage, IndexerLoss, ::testing::Values(false, true), stage_name);

TEST(IndexerLoss, TargetIsTheAttentionProbabilitiesSummedOverHeads) {
  // A 2-head attention computed by hand in double against attention_target.
  model::ModelConfig c = indexer_config();
  const int64_t T = 5, H = c.num_attention_heads, dqk = c.qk_head_dim();
  MlaActivations a;
  a.q = random_vec(T * H * dqk, 11);
  a.k = random_vec(T * H * dqk, 12);
  const double scale = c.softmax_scale();
  const model::KeySelection sel = fixed_selection(T, 3, 13);
  a.lse.resize(static_cast<size_t>(H * T));
  auto logit = [&](int64_t t, int64_t s, int64_t h) {
    double v = 0;
    for (int64_t e = 0; e < dqk; ++e) v += static_cast<double>(a.q[(t * H + h) * dqk + e]) * a.k[(s * H + h) * dqk + e];
    return scale * v;
  };
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < T; ++t) {
      double z = 0;
      for (int32_t s : sel[t]) z += std::exp(logit(t, s, h));
      a.lse[h * T + t] = static_cast<float>(std::log(z));
    }
  const auto p = attention_target(c, a, T, KeySets{&sel});
  for (int64_t t = 0; t < T; ++t) {
    ASSERT_EQ(p[t].size(), sel[t].size());
    for (size_t i = 0; i < sel[t].size(); ++i) {
      double want = 0;
      for (int64_t h = 0; h < H; ++h) want += std::exp(logit(t, sel[t][i], h) - a.lse[h * T + t]) / H;
      EXPECT_NEAR(p[t][i], want, 1e-5) << t << " " << i;
    }
  }
}

// A tiny random V3.2 model: byte vocabulary, MLA with q LoRA, one dense and one MoE layer,
// an indexer of 2 heads x 128 keeping the top 8 keys.
std::string tiny_v32_config() {
  return R"({"architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32", "vocab_size": 259,
    "hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16, "num_hidden_layers": 2,
    "num_nextn_predict_layers": 0, "first_k_dense_replace": 1, "num_attention_heads": 2,
    "num_key_value_heads": 2, "q_lora_rank": 24, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
    "v_head_dim": 8, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 2,
    "n_shared_experts": 1, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
    "norm_topk_prob": true, "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 10000,
    "max_position_embeddings": 256, "tie_word_embeddings": false, "initializer_range": 0.02,
    "bos_token_id": 0, "eos_token_id": 1, "index_n_heads": 2, "index_head_dim": 128, "index_topk": 8})";
}

bool is_indexer(const std::string& name) { return name.find(".self_attn.indexer.") != std::string::npos; }

TEST(IndexerLoss, ReachesOnlyTheIndexerAndTheLmLossNeverDoes) {
  const auto golden = testing::load_golden_model("tiny-v32");
  ASSERT_NE(golden, nullptr);
  const model::Weights& w = golden->weights();
  const auto tokens = testing::lcg_tokens(9, 20, w.config().vocab_size);
  for (AttentionStage stage : {AttentionStage::kDense, AttentionStage::kSparse}) {
    const Activations act = train_forward(w, tokens, nullptr, stage);
    Gradients idx(w.config()), lm(w.config());
    const double li = model_indexer_loss(w, act, 1.0f, &idx);
    EXPECT_GT(li, 0.0);
    std::vector<float> dlogits;
    next_token_loss(act, w.config().vocab_size, &dlogits);
    model_backward(w, act, {dlogits.data(), nullptr}, &lm);
    int indexer_tensors = 0;
    for (const auto& [name, g] : idx.tensors()) {
      double sum_idx = 0, sum_lm = 0;
      for (float v : g.values) sum_idx += std::fabs(v);
      for (float v : lm.tensors().at(name).values) sum_lm += std::fabs(v);
      if (is_indexer(name)) {
        ++indexer_tensors;
        EXPECT_GT(sum_idx, 0.0) << name;
        EXPECT_EQ(sum_lm, 0.0) << name << ": the LM loss reached the indexer";
      } else {
        EXPECT_EQ(sum_idx, 0.0) << name << ": L_I reached a main-model weight";
      }
    }
    EXPECT_EQ(indexer_tensors, 5 * w.config().num_hidden_layers);
  }
}

TEST(SparseMla, MatchesFiniteDifferencesWithTheSelectionHeld) {
  const model::ModelConfig c = indexer_config();
  const int64_t T = 7, D = c.hidden_size, H = c.num_attention_heads, r = c.kv_lora_rank;
  const int64_t dqk = c.qk_head_dim(), rq = c.q_lora_rank, dv = c.v_head_dim;
  uint32_t seed = 80;
  auto x = random_vec(T * D, ++seed);
  const double s = 0.5;
  auto q_a = random_vec(rq * D, ++seed, s), q_a_ln = random_vec(rq, ++seed);
  auto q_b = random_vec(H * dqk * rq, ++seed, s);
  auto kv_a = random_vec((r + c.qk_rope_head_dim) * D, ++seed, s), kv_a_ln = random_vec(r, ++seed);
  auto kv_b = random_vec(H * (c.qk_nope_head_dim + dv) * r, ++seed, s);
  auto o = random_vec(D * H * dv, ++seed, s);
  const auto rr = random_vec(T * D, ++seed);
  const model::KeySelection sel = fixed_selection(T, 3, ++seed);

  model::AttentionWeights w;
  const RopeAngles rope = rope_angles(model::RopeTable(c), T);
  auto bind = [&] {
    w.q_a_proj = f32_weight(q_a, rq, D);
    w.q_a_layernorm = q_a_ln;
    w.q_b_proj = f32_weight(q_b, H * dqk, rq);
    w.kv_a_proj_with_mqa = f32_weight(kv_a, r + c.qk_rope_head_dim, D);
    w.kv_a_layernorm = kv_a_ln;
    w.kv_b_proj = f32_weight(kv_b, H * (c.qk_nope_head_dim + dv), r);
    w.o_proj = f32_weight(o, D, H * dv);
  };
  std::vector<float> out(T * D);
  auto loss = [&]() -> std::optional<double> {
    bind();
    MlaActivations act;
    mla_train_forward_with_keys(c, w, rope, x.data(), T, &sel, &act, out.data());
    double l = 0;
    for (size_t i = 0; i < rr.size(); ++i) l += static_cast<double>(rr[i]) * out[i];
    return l;
  };
  bind();
  MlaActivations act;
  mla_train_forward_with_keys(c, w, rope, x.data(), T, &sel, &act, out.data());
  ASSERT_EQ(act.selection, sel);
  std::vector<float> dx(x.size(), 0.0f), g_qa(q_a.size(), 0.0f), g_qaln(rq, 0.0f), g_qb(q_b.size(), 0.0f);
  std::vector<float> g_kva(kv_a.size(), 0.0f), g_kvaln(r, 0.0f), g_kvb(kv_b.size(), 0.0f), g_o(o.size(), 0.0f);
  AttentionGrads g;
  g.q_a_proj = g_qa.data(), g.q_a_layernorm = g_qaln.data(), g.q_b_proj = g_qb.data();
  g.kv_a_proj_with_mqa = g_kva.data(), g.kv_a_layernorm = g_kvaln.data(), g.kv_b_proj = g_kvb.data();
  g.o_proj = g_o.data();
  mla_backward(c, w, rope, x.data(), T, act, rr.data(), dx.data(), g);
  auto err = [&](std::vector<float>& p, const std::vector<float>& a) {
    return testing::finite_difference_error(p, a.data(), testing::all_indices(p.size()), kBlockEps, loss);
  };
  EXPECT_LT(err(x, dx), kBlockTol) << "x";
  EXPECT_LT(err(q_a, g_qa), kBlockTol) << "q_a_proj";
  EXPECT_LT(err(q_a_ln, g_qaln), kBlockTol) << "q_a_layernorm";
  EXPECT_LT(err(q_b, g_qb), kBlockTol) << "q_b_proj";
  EXPECT_LT(err(kv_a, g_kva), kBlockTol) << "kv_a_proj_with_mqa";
  EXPECT_LT(err(kv_a_ln, g_kvaln), kBlockTol) << "kv_a_layernorm";
  EXPECT_LT(err(kv_b, g_kvb), kBlockTol) << "kv_b_proj";
  EXPECT_LT(err(o, g_o), kBlockTol) << "o_proj";

  // The mask matters: the same weights with causal attention give another output.
  MlaActivations dense;
  std::vector<float> out_dense(T * D);
  mla_train_forward_with_keys(c, w, rope, x.data(), T, nullptr, &dense, out_dense.data());
  EXPECT_NE(out, out_dense);
}

TEST(SparseTrainForward, LogitsEqualInferenceOnTinyV32) {
  const auto golden = testing::load_golden_model("tiny-v32");
  ASSERT_NE(golden, nullptr);
  const model::ModelConfig& c = golden->config();
  ASSERT_EQ(c.index_topk, 8);
  const int64_t T = 24, V = c.vocab_size;
  const auto tokens = testing::lcg_tokens(17, T, V);
  auto session = golden->new_session(T);
  std::vector<float> inference;  // [T, V]
  ASSERT_TRUE(golden->forward(*session, tokens, {model::AttentionForm::kAuto, true}, &inference).ok());
  ASSERT_EQ(static_cast<int64_t>(inference.size()), T * V);

  const Activations sparse = train_forward(golden->weights(), tokens);
  for (const LayerActivations& l : sparse.layers)
    for (int64_t t = 0; t < T; ++t) ASSERT_EQ(static_cast<int64_t>(l.attn.selection[t].size()), std::min<int64_t>(8, t + 1));
  double err = 0, ref = 0;
  for (int64_t i = 0; i < T * V; ++i) {
    err = std::max(err, static_cast<double>(std::fabs(sparse.logits[i] - inference[i])));
    ref = std::max(ref, static_cast<double>(std::fabs(inference[i])));
  }
  const Activations dense = train_forward(golden->weights(), tokens, nullptr, AttentionStage::kDense);
  double dense_err = 0;
  for (int64_t i = 0; i < T * V; ++i)
    dense_err = std::max(dense_err, static_cast<double>(std::fabs(dense.logits[i] - inference[i])));
  std::printf("[ sparse   ] max |train - inference| logits %.3g (max |logit| %.3g); dense attention differs by %.3g\n",
              err, ref, dense_err);
  EXPECT_LT(err, 1e-4 * ref + 1e-5);
  EXPECT_GT(dense_err, 100 * err);  // the selection matters at these lengths
}

// --- the trainer's stages ----------------------------------------------------------------------

// A fresh directory NAME inside this process's scratch directory, which goes when the binary ends.
fs::path temp_dir(const std::string& name) {
  static const testing::ScratchDir scratch("indexer");
  const fs::path d = scratch.path() / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string synthetic_text() {
  const std::vector<std::string> subj = {"the cat", "a dog", "my friend", "the old man", "our teacher", "she"};
  const std::vector<std::string> verb = {"sees", "likes", "walks to", "talks about", "finds"};
  const std::vector<std::string> obj = {"the park", "a red ball", "the river", "some bread", "the house"};
  std::mt19937 rng(7);
  std::string text;
  for (int doc = 0; doc < 60; ++doc) {
    for (int s = 0; s < 4; ++s) text += subj[rng() % subj.size()] + " " + verb[rng() % verb.size()] + " " + obj[rng() % obj.size()] + ". ";
    text += "\n\n";
  }
  return text;
}

struct Data {
  fs::path dir;
  std::unique_ptr<TokenData> tokens;
  WindowSampler sampler;
};

Data make_data(const std::string& name, int64_t seq_len) {
  Data f;
  f.dir = temp_dir(name);
  {
    std::ofstream(f.dir / "text.txt", std::ios::binary) << synthetic_text();
  }
  TokenizerHooks bytes;
  bytes.vocab_size = 259;
  bytes.eos_id = 1;
  bytes.encode = [](std::string_view s) -> Expected<std::vector<int32_t>> {
    std::vector<int32_t> ids;
    for (unsigned char ch : s) ids.push_back(3 + ch);
    return ids;
  };
  EXPECT_TRUE(build_token_file({(f.dir / "text.txt").string()}, bytes, 0, (f.dir / "t.tok").string()).ok());
  f.tokens = std::move(TokenData::open((f.dir / "t.tok").string())).value();
  f.sampler = WindowSampler::make(*f.tokens, seq_len, 0.1, 3).value();
  return f;
}

TrainOptions v32_options(int64_t steps, int64_t warmup) {
  TrainOptions o;
  o.steps = steps;
  o.batch = 4;
  o.grad_accum = 1;
  o.seq_len = 24;
  o.lr = 1e-2;
  o.min_lr = 1e-3;
  o.warmup = 3;
  o.seed = 4;
  o.mtp_weight = 0;
  o.indexer_warmup_steps = warmup;
  return o;
}

// Every tensor's bytes as the trainer's weights hold them.
std::map<std::string, std::vector<uint8_t>> snapshot(const Trainer& t) {
  std::map<std::string, std::vector<uint8_t>> out;
  for (const auto& [name, v] : t.weights().checkpoint().tensors()) out[name].assign(v->data, v->data + v->nbytes);
  return out;
}

TEST(IndexerTrainer, WarmupFreezesTheMainModelThenSparseTrainingLearns) {
  Data f = make_data("stages", 24);
  // DeepSeek's warm-up starts from a trained model: at random initialization every attention
  // row is nearly uniform and so is the indexer's, leaving L_I ~ 0 and nothing to learn.
  {
    auto pre = Trainer::create(tiny_v32_config(), v32_options(60, 0), f.sampler);
    ASSERT_TRUE(pre.ok()) << pre.status().message();
    for (int s = 0; s < 60; ++s) (*pre)->train_step();
    ASSERT_TRUE((*pre)->save((f.dir / "pre").string(), "").ok());
  }
  const int64_t steps = 30, warmup = 15;
  auto t = Trainer::init((f.dir / "pre").string(), v32_options(steps, warmup), f.sampler);
  ASSERT_TRUE(t.ok()) << t.status().message();
  const auto before = snapshot(**t);
  std::vector<StepStats> stats;
  for (int64_t s = 0; s < warmup; ++s) stats.push_back((*t)->train_step());
  const auto after = snapshot(**t);
  int changed_indexer = 0;
  for (const auto& [name, bytes] : before) {
    if (is_indexer(name)) changed_indexer += after.at(name) != bytes;
    else EXPECT_EQ(after.at(name), bytes) << name << " changed during the indexer warm-up";
  }
  EXPECT_EQ(changed_indexer, 10);  // 2 layers x 5 tensors
  EXPECT_FALSE((*t)->in_indexer_warmup());
  for (int64_t s = warmup; s < steps; ++s) stats.push_back((*t)->train_step());
  auto mean = [&](int64_t from, int64_t n, bool indexer) {
    double m = 0;
    for (int64_t i = from; i < from + n; ++i) m += (indexer ? stats[i].indexer_loss : stats[i].loss) / n;
    return m;
  };
  std::printf("[ stages   ] indexer loss %.4f -> %.4f over the warm-up; LM loss %.4f -> %.4f after it (idx %.4f)\n",
              mean(0, 3, true), mean(warmup - 3, 3, true), mean(warmup, 3, false), mean(steps - 3, 3, false),
              stats.back().indexer_loss);
  EXPECT_TRUE(stats[0].indexer_warmup && stats[warmup - 1].indexer_warmup && !stats[warmup].indexer_warmup);
  EXPECT_LT(mean(warmup - 3, 3, true), 0.8 * mean(0, 3, true));
  EXPECT_LT(mean(steps - 3, 3, false), mean(warmup, 3, false));
  const Trainer::Heldout h = (*t)->heldout(4);
  EXPECT_TRUE(std::isfinite(h.loss));
  EXPECT_GT(h.indexer_loss, 0.0);
}

TEST(IndexerTrainer, ResumeMidWarmupIsExact) {
  Data f = make_data("resume", 24);
  const int64_t steps = 10, stop = 3;
  const TrainOptions o = v32_options(steps, 5);
  auto curve = [](Trainer& t, int64_t n) {
    std::vector<double> out;
    for (int64_t s = 0; s < n; ++s) {
      const StepStats st = t.train_step();
      out.push_back(st.loss);
      out.push_back(st.indexer_loss);
    }
    return out;
  };
  auto a = Trainer::create(tiny_v32_config(), o, f.sampler);
  auto b = Trainer::create(tiny_v32_config(), o, f.sampler);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::vector<double> full = curve(**a, steps);
  std::vector<double> resumed = curve(**b, stop);
  const std::string ckpt = (f.dir / "step-3").string();
  ASSERT_TRUE((*b)->save(ckpt, "").ok());
  b->reset();
  // The saved options carry the warm-up length and the loss weight.
  auto state = io::SafetensorsFile::open(ckpt + "/trainer_state.safetensors");
  ASSERT_TRUE(state.ok());
  auto saved = options_from_json((*state)->metadata().at("options"), "state");
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(saved->indexer_warmup_steps, 5);
  EXPECT_EQ(saved->indexer_loss_weight, 1.0f);
  auto c = Trainer::resume(ckpt, o, f.sampler);
  ASSERT_TRUE(c.ok()) << c.status().message();
  for (double l : curve(**c, steps - stop)) resumed.push_back(l);
  EXPECT_EQ(full, resumed);  // bit-exact, across the warm-up / sparse boundary
}

TEST(IndexerTrainer, InitStartsFromACheckpointsWeights) {
  Data f = make_data("init", 24);
  const std::string dir = testing::golden_dir() + "/models/tiny-v32";
  TrainOptions o = v32_options(2, 1);
  o.seq_len = 24;
  auto t = Trainer::init(dir, o, f.sampler);
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ((*t)->steps_done(), 0);
  auto loaded = model::load_weights(dir);
  ASSERT_TRUE(loaded.ok());
  const auto tokens = testing::lcg_tokens(3, 20, 259);
  // The trainer's F32 masters hold the stored BF16 values exactly; only the kernels' summation
  // order may differ between F32 and BF16 weights.
  const auto a = train_forward((*t)->weights(), tokens).logits, b = train_forward(**loaded, tokens).logits;
  ASSERT_EQ(a.size(), b.size());
  double err = 0;
  for (size_t i = 0; i < a.size(); ++i) err = std::max(err, static_cast<double>(std::fabs(a[i] - b[i])));
  EXPECT_LT(err, 1e-4);
  auto v3 = TrainOptions{};
  v3.indexer_warmup_steps = 2;
  model::ModelConfig c;  // V3: no indexer
  const Status bad = check_train_options(c, v3);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("--indexer-warmup-steps"), std::string::npos) << bad.message();
}

TEST(IndexerTrainer, InitDecodesAnFp8Checkpoint) {
  Data f = make_data("init-fp8", 24);
  const std::string dir = testing::golden_dir() + "/models/tiny-v3-fp8";
  auto t = Trainer::init(dir, v32_options(2, 0), f.sampler);
  ASSERT_TRUE(t.ok()) << t.status().message();
  auto loaded = model::load_weights(dir);
  ASSERT_TRUE(loaded.ok());
  const auto tokens = testing::lcg_tokens(5, 20, 259);
  const auto a = train_forward((*t)->weights(), tokens).logits, b = train_forward(**loaded, tokens).logits;
  ASSERT_EQ(a.size(), b.size());
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, static_cast<double>(std::fabs(a[i] - b[i])));
    ref = std::max(ref, static_cast<double>(std::fabs(b[i])));
  }
  EXPECT_LT(err, 1e-5 * ref + 1e-6);  // FP8 x block scale decodes exactly into the F32 masters
  EXPECT_GT(ref, 0.0);
}

TEST(IndexerFinetune, FullFinetuningOfV32TrainsTheIndexerByItsLoss) {
  const std::string dir = testing::golden_dir() + "/models/tiny-v32";
  FinetuneOptions o;
  o.lr = 1e-3;
  auto ft = Finetuner::create(dir, o);
  ASSERT_TRUE(ft.ok()) << ft.status().message();
  ChatExample ex;
  ex.tokens = testing::lcg_tokens(31, 20, 512);
  ex.loss_mask.assign(20, 0);
  for (size_t i = 10; i < 20; ++i) ex.loss_mask[i] = 1;
  auto bytes = [&] {
    std::map<std::string, std::vector<uint8_t>> out;
    // The main layers' indexers (the MTP layer's is not trained: the fine-tuner trains the main model).
    const std::string mtp = model::layer_prefix((*ft)->weights().config().num_hidden_layers);
    for (const auto& [name, v] : (*ft)->weights().checkpoint().tensors())
      if (is_indexer(name) && name.rfind(mtp, 0) != 0) out[name].assign(v->data, v->data + v->nbytes);
    return out;
  };
  const auto before = bytes();
  EXPECT_EQ(before.size(), 15u);
  auto loss = (*ft)->step(ex);
  ASSERT_TRUE(loss.ok()) << loss.status().message();
  EXPECT_TRUE(std::isfinite(*loss));
  const auto after = bytes();
  for (const auto& [name, b] : before) EXPECT_NE(after.at(name), b) << name << " did not train";
}

// --- `dseek grad` on tiny-v32 -------------------------------------------------------------------

TEST(IndexerGradCli, GradOnTinyV32) {
  const std::string dir = testing::golden_dir() + "/models/tiny-v32";
  const fs::path tmp = temp_dir("grad");
  const auto tokens = testing::lcg_tokens(21, 24, 512);
  {
    std::ofstream f(tmp / "tokens.json");
    f << "[";
    for (size_t i = 0; i < tokens.size(); ++i) f << (i ? "," : "") << tokens[i];
    f << "]";
  }
  const auto r = testing::run_dseek("grad " + dir + " --tokens " + (tmp / "tokens.json").string() + " --out " +
                                    (tmp / "g.safetensors").string() + " -t 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("indexer loss"), std::string::npos) << r.err;
  auto out = io::SafetensorsFile::open((tmp / "g.safetensors").string());
  ASSERT_TRUE(out.ok()) << out.status().message();

  // The loss: mean next-token cross-entropy of inference's own logits (sparse attention).
  const auto golden = testing::load_golden_model("tiny-v32");
  ASSERT_NE(golden, nullptr);
  const int64_t T = static_cast<int64_t>(tokens.size()), V = golden->config().vocab_size;
  auto session = golden->new_session(T);
  std::vector<float> logits;
  ASSERT_TRUE(golden->forward(*session, tokens, {model::AttentionForm::kAuto, true}, &logits).ok());
  double ce = 0;
  for (int64_t t = 0; t + 1 < T; ++t) {
    const float* row = logits.data() + t * V;
    double mx = row[0], z = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    for (int64_t v = 0; v < V; ++v) z += std::exp(row[v] - mx);
    ce += (mx + std::log(z) - row[tokens[t + 1]]) / static_cast<double>(T - 1);
  }
  const io::TensorView* loss = (*out)->find("loss");
  ASSERT_NE(loss, nullptr);
  float l = 0;
  std::memcpy(&l, loss->data, 4);
  EXPECT_NEAR(l, ce, 1e-4);

  // A gradient for every weight, the indexer's included (non-zero: L_I's).
  int indexer = 0;
  for (const model::TensorSpec& spec : model::build_tensor_table(golden->config())) {
    if (spec.group != model::TensorGroup::kMain || spec.kind == model::TensorKind::kBias) continue;
    const io::TensorView* g = (*out)->find("grad." + spec.name);
    ASSERT_NE(g, nullptr) << spec.name;
    if (!is_indexer(spec.name)) continue;
    ++indexer;
    const float* v = reinterpret_cast<const float*>(g->data);
    double sum = 0;
    for (size_t i = 0; i < g->nbytes / 4; ++i) sum += std::fabs(v[i]);
    EXPECT_GT(sum, 0.0) << spec.name;
    EXPECT_TRUE(std::isfinite(sum)) << spec.name;
  }
  EXPECT_EQ(indexer, 15);
}

}  // namespace
}  // namespace dseek::train
