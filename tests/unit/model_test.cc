// Model pieces on synthetic inputs, each checked against numbers that come from outside the
// code: the architecture document's sanity values (YaRN frequencies, softmax scales),
// DeepSeek's published parameter counts, and hand-worked routing cases.
#include <cmath>
#include <filesystem>
#include <limits>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/checkpoint_writer.h"
#include "model/config.h"
#include "model/deepseek.h"
#include "model/mla.h"
#include "model/moe.h"
#include "model/rope.h"
#include "model/tensor_table.h"
#include "scratch_dir.h"

namespace dseek::model {
namespace {

using nlohmann::json;

// DeepSeek-V3's config.json (the values of docs/deepseek-architecture.md §1.1).
json v3_671b() {
  return json{{"architectures", {"DeepseekV3ForCausalLM"}}, {"model_type", "deepseek_v3"},
              {"vocab_size", 129280}, {"hidden_size", 7168}, {"intermediate_size", 18432},
              {"moe_intermediate_size", 2048}, {"num_hidden_layers", 61}, {"num_nextn_predict_layers", 1},
              {"first_k_dense_replace", 3}, {"num_attention_heads", 128}, {"num_key_value_heads", 128},
              {"q_lora_rank", 1536}, {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64},
              {"v_head_dim", 128}, {"n_routed_experts", 256}, {"num_experts_per_tok", 8}, {"n_group", 8},
              {"topk_group", 4}, {"n_shared_experts", 1}, {"routed_scaling_factor", 2.5},
              {"scoring_func", "sigmoid"}, {"topk_method", "noaux_tc"}, {"norm_topk_prob", true},
              {"rope_theta", 10000}, {"max_position_embeddings", 163840},
              {"rope_scaling", {{"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 4096},
                                {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}}}};
}

json v2_lite() {
  return json{{"architectures", {"DeepseekV2ForCausalLM"}}, {"model_type", "deepseek_v2"},
              {"vocab_size", 102400}, {"hidden_size", 2048}, {"intermediate_size", 10944},
              {"moe_intermediate_size", 1408}, {"num_hidden_layers", 27}, {"first_k_dense_replace", 1},
              {"num_attention_heads", 16}, {"num_key_value_heads", 16}, {"q_lora_rank", nullptr},
              {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64}, {"v_head_dim", 128},
              {"n_routed_experts", 64}, {"num_experts_per_tok", 6}, {"n_group", 1}, {"topk_group", 1},
              {"n_shared_experts", 2}, {"routed_scaling_factor", 1.0}, {"scoring_func", "softmax"},
              {"topk_method", "greedy"}, {"norm_topk_prob", false}, {"max_position_embeddings", 163840},
              {"rope_scaling", {{"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 4096},
                                {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 0.707}, {"mscale_all_dim", 0.707}}}};
}

ModelConfig parse(const json& j) {
  auto c = parse_model_config(j.dump(), "config.json");
  EXPECT_TRUE(c.ok()) << c.status().message();
  return c.ok() ? c.value() : ModelConfig{};
}

TEST(Config, SoftmaxScaleIncludesYarnMscaleSquared) {
  EXPECT_NEAR(parse(v3_671b()).softmax_scale(), 0.1352338, 1e-7);  // doc §3.2
  EXPECT_NEAR(parse(v2_lite()).softmax_scale(), 0.1147214, 1e-7);
  json plain = v3_671b();
  plain["rope_scaling"] = nullptr;
  EXPECT_NEAR(parse(plain).softmax_scale(), 0.0721688, 1e-7);
}

TEST(Config, RejectsWhatIsNotImplementedNamingTheKey) {
  auto expect_error = [](json j, const std::string& phrase) {
    auto c = parse_model_config(j.dump(), "m/config.json");
    ASSERT_FALSE(c.ok()) << phrase;
    EXPECT_NE(c.status().message().find(phrase), std::string::npos) << c.status().message();
    EXPECT_EQ(c.status().message().rfind("m/config.json", 0), 0u) << c.status().message();
  };
  json j = v3_671b();
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  expect_error(j, "unknown architecture 'LlamaForCausalLM'");
  j = v3_671b(); j["topk_method"] = "random"; expect_error(j, "'topk_method'");
  j = v3_671b(); j["scoring_func"] = "tanh"; expect_error(j, "'scoring_func'");
  j = v3_671b(); j["n_group"] = 7; expect_error(j, "'n_group'");
  j = v3_671b(); j["hidden_act"] = "gelu"; expect_error(j, "'hidden_act'");
  j = v3_671b(); j["rope_scaling"]["type"] = "dynamic"; expect_error(j, "rope_scaling.type");
  j = v3_671b(); j["hidden_size"] = "big"; expect_error(j, "'hidden_size' must be an integer");
  j = v3_671b(); j.erase("kv_lora_rank"); expect_error(j, "'kv_lora_rank' is missing");
  j = v3_671b(); j["num_key_value_heads"] = 8; expect_error(j, "'num_key_value_heads'");
  j = v3_671b(); j["quantization_config"] = {{"quant_method", "gptq"}}; expect_error(j, "quant_method");
  j = v3_671b(); j["num_experts_per_tok"] = 300; expect_error(j, "'num_experts_per_tok'");
}

// Parameter counts from the tensor table against DeepSeek's published figures:
// V3 671B main + 14B MTP ("685B"), 36.7B activated; V2-Lite 15.7B total, 2.4B activated.
// Active counts a token's routed experts and one embedding row, as those figures do.
int64_t count(const std::vector<TensorSpec>& table, TensorGroup g, bool active, const ModelConfig& c) {
  int64_t n = 0;
  for (const auto& s : table) {
    if (s.group != g) continue;
    int64_t k = 1;
    for (int64_t d : s.shape) k *= d;
    if (active && s.usage == Usage::kRoutedExpert) k = k * c.num_experts_per_tok / c.n_routed_experts;
    if (active && s.kind == TensorKind::kEmbedding) k = c.hidden_size;
    n += k;
  }
  return n;
}

TEST(TensorTable, ParameterCountsMatchPublishedFigures) {
  const ModelConfig v3 = parse(v3_671b());
  const auto t3 = build_tensor_table(v3);
  EXPECT_NEAR(count(t3, TensorGroup::kMain, false, v3) / 1e9, 671.0, 1.0);
  EXPECT_NEAR(count(t3, TensorGroup::kMtp, false, v3) / 1e9, 14.0, 1.0);  // 11.5B unique + shared copies
  EXPECT_NEAR(count(t3, TensorGroup::kMain, true, v3) / 1e9, 36.7, 0.15);
  const ModelConfig lite = parse(v2_lite());
  const auto tl = build_tensor_table(lite);
  EXPECT_NEAR(count(tl, TensorGroup::kMain, false, lite) / 1e9, 15.7, 0.1);
  EXPECT_NEAR(count(tl, TensorGroup::kMain, true, lite) / 1e9, 2.4, 0.1);
}

TEST(TensorTable, DeclaresV3ShapesOfTheRealCheckpoint) {
  const auto table = build_tensor_table(parse(v3_671b()));
  auto shape_of = [&](const std::string& name) {
    for (const auto& s : table)
      if (s.name == name) return s.shape;
    return std::vector<int64_t>{};
  };  // doc §12
  EXPECT_EQ(shape_of("model.layers.0.self_attn.q_b_proj.weight"), (std::vector<int64_t>{24576, 1536}));
  EXPECT_EQ(shape_of("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"), (std::vector<int64_t>{576, 7168}));
  EXPECT_EQ(shape_of("model.layers.0.self_attn.kv_b_proj.weight"), (std::vector<int64_t>{32768, 512}));
  EXPECT_EQ(shape_of("model.layers.0.self_attn.o_proj.weight"), (std::vector<int64_t>{7168, 16384}));
  EXPECT_EQ(shape_of("model.layers.2.mlp.down_proj.weight"), (std::vector<int64_t>{7168, 18432}));
  EXPECT_EQ(shape_of("model.layers.3.mlp.gate.e_score_correction_bias"), (std::vector<int64_t>{256}));
  EXPECT_EQ(shape_of("model.layers.60.mlp.experts.255.up_proj.weight"), (std::vector<int64_t>{2048, 7168}));
  EXPECT_EQ(shape_of("model.layers.61.eh_proj.weight"), (std::vector<int64_t>{7168, 14336}));
  EXPECT_TRUE(shape_of("model.layers.2.mlp.gate.weight").empty());  // dense layer
}

TEST(Rope, YarnFrequenciesMatchDocumentedValues) {
  const RopeTable rope(parse(v3_671b()));  // doc §4.1 sanity values
  const auto& f = rope.inv_freq();
  ASSERT_EQ(f.size(), 32u);
  EXPECT_NEAR(f[0], 1.0, 1e-7);
  EXPECT_NEAR(f[1], 0.749894, 1e-6);
  EXPECT_NEAR(f[10], 0.056234, 1e-6);
  EXPECT_NEAR(f[11], 0.039007, 1e-6);
  EXPECT_NEAR(f[22] / 1.77828e-4, 1.0, 1e-5);
  EXPECT_NEAR(f[23] / 3.33380e-5, 1.0, 1e-5);
  EXPECT_NEAR(f[31] / (std::pow(10000.0, -62.0 / 64) / 40), 1.0, 1e-6);
}

TEST(Rope, InterleavedAndHalfSplitPairings) {
  json j = v3_671b();
  j["qk_rope_head_dim"] = 4;
  j["rope_scaling"] = nullptr;
  const RopeTable rope(parse(j));  // theta = {1, 0.01}
  const double p = 3;
  float a[4] = {1, 2, 3, 4};
  rope.rotate_interleaved(a, 3);  // pairs (0,1) at theta 1, (2,3) at 0.01
  EXPECT_NEAR(a[0], 1 * std::cos(p) - 2 * std::sin(p), 1e-6);
  EXPECT_NEAR(a[1], 1 * std::sin(p) + 2 * std::cos(p), 1e-6);
  EXPECT_NEAR(a[2], 3 * std::cos(0.01 * p) - 4 * std::sin(0.01 * p), 1e-6);
  float b[4] = {1, 2, 3, 4};
  rope.rotate_half_split(b, 3);  // pairs (0,2) at theta 1, (1,3) at 0.01
  EXPECT_NEAR(b[0], 1 * std::cos(p) - 3 * std::sin(p), 1e-6);
  EXPECT_NEAR(b[2], 1 * std::sin(p) + 3 * std::cos(p), 1e-6);
  EXPECT_NEAR(b[1], 2 * std::cos(0.01 * p) - 4 * std::sin(0.01 * p), 1e-6);
}

// The strided form rotates each of the vectors exactly as a call on it alone, and leaves the
// floats between them (MLA's no-RoPE part of each head) alone.
TEST(Rope, StridedHeadsRotateAsEachAlone) {
  json j = v3_671b();
  j["qk_rope_head_dim"] = 8;
  const RopeTable rope(parse(j));
  constexpr int64_t kHeads = 3, kStride = 11, kPos = 1234;
  std::vector<float> x(static_cast<size_t>(kHeads * kStride));
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * static_cast<float>(i) - 1.0f;
  const std::vector<float> original = x;
  std::vector<float> want = x;
  for (int64_t h = 0; h < kHeads; ++h) rope.rotate_interleaved(want.data() + h * kStride + 2, kPos);
  rope.rotate_interleaved(x.data() + 2, kHeads, kStride, kPos);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(x[i], want[i]) << "interleaved, float " << i;
  EXPECT_NE(x[2], original[2]) << "rotated at all";
  EXPECT_EQ(x[0], original[0]) << "the gap before the first vector";
  // The V3.2 indexer's pairing.
  x = want = original;
  for (int64_t h = 0; h < kHeads; ++h) rope.rotate_half_split(want.data() + h * kStride + 2, kPos);
  rope.rotate_half_split(x.data() + 2, kHeads, kStride, kPos);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(x[i], want[i]) << "half-split, float " << i;
  EXPECT_NE(x[2], original[2]) << "rotated at all";
  EXPECT_EQ(x[kStride], original[kStride]) << "the gap after the first vector";
}

// Routers on hand-worked inputs.
ModelConfig router_config(const std::string& scoring, const std::string& method, int groups, int topk_group, int k,
                          bool norm, double scale) {
  json j = v3_671b();
  j["n_routed_experts"] = 8;
  j["n_group"] = groups;
  j["topk_group"] = topk_group;
  j["num_experts_per_tok"] = k;
  j["scoring_func"] = scoring;
  j["topk_method"] = method;
  j["norm_topk_prob"] = norm;
  j["routed_scaling_factor"] = scale;
  return parse(j);
}

float sigmoid(float x) { return 1 / (1 + std::exp(-x)); }

TEST(Router, NoauxTcUsesBiasForSelectionOnlyAndTopTwoGroupSums) {
  const ModelConfig c = router_config("sigmoid", "noaux_tc", 4, 2, 2, true, 2.5);
  // Groups {0,1} {2,3} {4,5} {6,7}. Expert 7 has the best raw score, but the bias sinks group 3.
  const float logits[8] = {0.0f, 0.1f, 1.0f, -3.0f, 0.5f, 0.6f, -1.0f, 3.0f};
  const std::vector<float> bias = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, -2.0f, -2.0f};
  // biased: g0 = s(0)+s(.1) = 1.025, g1 = s(1)+s(-3) = 0.778, g2 = s(.5)+s(.6) = 1.268,
  // g3 = s(-1)-2 + s(3)-2 = -2.78 -> keep g2, g0; best two of {0,1,4,5}: 5 then 4.
  const Routing r = route_token(c, logits, bias);
  ASSERT_EQ(r.experts, (std::vector<int32_t>{5, 4}));
  const float s5 = sigmoid(0.6f), s4 = sigmoid(0.5f);
  EXPECT_NEAR(r.weights[0], s5 / (s4 + s5) * 2.5f, 1e-6);  // raw scores, renormalized, scaled
  EXPECT_NEAR(r.weights[1], s4 / (s4 + s5) * 2.5f, 1e-6);
}

TEST(Router, MaskedGroupsAreMinusInfinityNotZero) {
  // Every biased score in the kept groups is negative; with masked experts filled with 0 (as
  // HF does) an expert of a dropped group would win. It must not.
  const ModelConfig c = router_config("sigmoid", "noaux_tc", 4, 1, 2, true, 1.0);
  const float logits[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const std::vector<float> bias = {-0.9f, -0.8f, -2, -2, -2, -2, -2, -2};
  const Routing r = route_token(c, logits, bias);
  EXPECT_EQ(r.experts, (std::vector<int32_t>{1, 0}));
}

TEST(Router, SoftmaxGreedyDoesNotRenormalize) {
  const ModelConfig c = router_config("softmax", "greedy", 1, 1, 3, false, 1.0);
  const float logits[8] = {1, 2, 3, 4, 0, 0, 0, 0};
  double z = 0;
  for (float l : logits) z += std::exp(l);
  const Routing r = route_token(c, logits, {});
  EXPECT_EQ(r.experts, (std::vector<int32_t>{3, 2, 1}));
  EXPECT_NEAR(r.weights[0], std::exp(4) / z, 1e-6);
  EXPECT_NEAR(r.weights[2], std::exp(2) / z, 1e-6);
}

TEST(Router, GroupLimitedGreedyScoresGroupsByTheirBestExpert) {
  const ModelConfig c = router_config("softmax", "group_limited_greedy", 4, 2, 2, false, 16.0);
  // Group maxima: g0 = 2 (expert 0), g1 = 1.9, g2 = 1.5 + 1.4 (sum would win), g3 = 0.
  const float logits[8] = {2.0f, -5.0f, 1.9f, -5.0f, 1.5f, 1.4f, 0.0f, 0.0f};
  double z = 0;
  for (float l : logits) z += std::exp(l);
  const Routing r = route_token(c, logits, {});
  EXPECT_EQ(r.experts, (std::vector<int32_t>{0, 2}));
  EXPECT_NEAR(r.weights[0], std::exp(2.0) / z * 16, 1e-5);
}

// One small V3 attention layer (3 heads, latent 32) for comparing the attention forms.
json small_mla_layer() {
  json j = v3_671b();
  for (auto [k, v] : {std::pair{"vocab_size", 64}, {"hidden_size", 96}, {"intermediate_size", 64},
                      {"moe_intermediate_size", 16}, {"num_hidden_layers", 1}, {"num_nextn_predict_layers", 0},
                      {"first_k_dense_replace", 1}, {"num_attention_heads", 3}, {"num_key_value_heads", 3},
                      {"q_lora_rank", 48}, {"kv_lora_rank", 32}, {"qk_nope_head_dim", 16}, {"qk_rope_head_dim", 8},
                      {"v_head_dim", 12}})
    j[k] = v;
  j["rope_scaling"]["original_max_position_embeddings"] = 16;
  return j;
}

// A random checkpoint of config j written under scratch and loaded; null (with a test failure)
// if either step fails.
std::unique_ptr<Model> load_random_checkpoint(const json& j, const testing::ScratchDir& scratch) {
  const auto dir = scratch.path() / "model";
  const Status written = write_random_checkpoint(j.dump(), dir.string(), {});
  EXPECT_TRUE(written.ok()) << written.message();
  if (!written.ok()) return nullptr;
  auto m = Model::load(dir.string());
  EXPECT_TRUE(m.ok()) << m.status().message();
  return m.ok() ? std::move(m.value()) : nullptr;
}

// The two MLA forms compute the same attention, also over a sparse selection: run one V3.2
// layer on identical inputs and cache in both forms.
TEST(Mla, NaiveAndAbsorbedFormsAgreeWithSparseSelection) {
  json j = small_mla_layer();
  j["architectures"] = {"DeepseekV32ForCausalLM"};
  j["model_type"] = "deepseek_v32";
  for (auto [k, v] : {std::pair{"index_n_heads", 2}, {"index_head_dim", 128}, {"index_topk", 5}}) j[k] = v;
  const testing::ScratchDir scratch("mla");
  const std::unique_ptr<Model> m = load_random_checkpoint(j, scratch);
  ASSERT_TRUE(m);
  const ModelConfig& c = m->config();
  const LayerWeights& lw = m->weights().layers[0];
  const RopeTable rope(c);
  const int64_t T = 20, D = c.hidden_size;
  std::vector<float> x(static_cast<size_t>(T * D));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37 * i);
  std::vector<float> out_naive(x.size()), out_absorbed(x.size());
  for (auto [form, out] : {std::pair{AttentionForm::kNaive, &out_naive}, {AttentionForm::kAbsorbed, &out_absorbed}}) {
    kv::LatentCache cache(c, T);
    ASSERT_TRUE(cache.reserve_next(T).ok());
    const MlaSegment segment{0, T, 0, kv::LayerView{&cache, 0}};
    mla_forward(c, lw.attn, rope, x.data(), T, std::span(&segment, 1), cache.latent_width(), form, out->data());
  }
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err = std::max(err, std::fabs(double(out_naive[i]) - out_absorbed[i]));
    ref = std::max(ref, std::fabs(double(out_absorbed[i])));
  }
  EXPECT_LE(err, 1e-5 * ref);
}

// The naive form's blocked core (from blocked_attention_min_tokens() new tokens: packed products a
// block of 128 queries at a time) against the absorbed form and against the key-by-key loop, on
// a second segment after 37 cached tokens: 259 new tokens make two full query blocks and a
// 3-query tail (the matrix-vector path).
TEST(Mla, BlockedNaiveCoreAgreesWithAbsorbedAndKeyByKey) {
  const testing::ScratchDir scratch("mla_blocked");
  const std::unique_ptr<Model> m = load_random_checkpoint(small_mla_layer(), scratch);
  ASSERT_TRUE(m);
  const ModelConfig& c = m->config();
  const LayerWeights& lw = m->weights().layers[0];
  const RopeTable rope(c);
  const int64_t p0 = 37, T = 259, D = c.hidden_size;
  ASSERT_GE(T, blocked_attention_min_tokens());
  std::vector<float> x(static_cast<size_t>((p0 + T) * D));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37 * i) + 0.5f * std::cos(0.011 * i);
  auto run = [&](AttentionForm form, int64_t blocked_min) {
    const int64_t saved = blocked_attention_min_tokens();
    set_blocked_attention_min_tokens(blocked_min);
    kv::LatentCache cache(c, p0 + T);
    std::vector<float> first(static_cast<size_t>(p0 * D)), out(static_cast<size_t>(T * D));
    EXPECT_TRUE(cache.reserve_next(p0).ok());
    const MlaSegment prefix{0, p0, 0, kv::LayerView{&cache, 0}};
    mla_forward(c, lw.attn, rope, x.data(), p0, std::span(&prefix, 1), cache.latent_width(), form, first.data());
    cache.commit(p0);
    EXPECT_TRUE(cache.reserve_next(T).ok());
    const MlaSegment segment{0, T, p0, kv::LayerView{&cache, 0}};
    mla_forward(c, lw.attn, rope, x.data() + p0 * D, T, std::span(&segment, 1), cache.latent_width(), form,
                out.data());
    set_blocked_attention_min_tokens(saved);
    return out;
  };
  const std::vector<float> blocked = run(AttentionForm::kNaive, blocked_attention_min_tokens());
  const std::vector<float> key_by_key = run(AttentionForm::kNaive, T + 1);
  const std::vector<float> absorbed = run(AttentionForm::kAbsorbed, blocked_attention_min_tokens());
  for (const auto* other : {&key_by_key, &absorbed}) {
    double err = 0, ref = 0;
    for (size_t i = 0; i < blocked.size(); ++i) {
      err = std::max(err, std::fabs(double(blocked[i]) - (*other)[i]));
      ref = std::max(ref, std::fabs(double((*other)[i])));
    }
    EXPECT_LE(err, 1e-5 * ref) << (other == &absorbed ? "against the absorbed form" : "against key by key");
    EXPECT_GT(ref, 0.0);
  }
}

}  // namespace
}  // namespace dseek::model
