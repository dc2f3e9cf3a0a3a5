// The engine on DeepSeek checkpoints the golden fixtures never show: other widths, head
// counts, expert counts and group settings, every router, rope_scaling null, tied
// embeddings, moe_layer_freq, FP8 everywhere with partial edge blocks, longer prompts.
// Each checkpoint is written with random weights in the HF layout, loaded like any other,
// and compared with ReferenceModel (independent, double precision) at the golden tolerance;
// prefill, decode steps, chunked prefill and both MLA forms must all agree.
#include <filesystem>
#include <random>
#include <span>

#include <nlohmann/json.hpp>

#include "model/checkpoint_writer.h"
#include "model/deepseek.h"
#include "reference_model.h"
#include "test_util.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using model::AttentionForm;

json base_config() {
  return json{{"architectures", {"DeepseekV3ForCausalLM"}},
              {"model_type", "deepseek_v3"},
              {"vocab_size", 300},
              {"hidden_size", 192},
              {"intermediate_size", 256},
              {"moe_intermediate_size", 48},
              {"num_hidden_layers", 3},
              {"num_nextn_predict_layers", 1},
              {"first_k_dense_replace", 1},
              {"num_attention_heads", 3},
              {"num_key_value_heads", 3},
              {"q_lora_rank", 96},
              {"kv_lora_rank", 48},
              {"qk_nope_head_dim", 24},
              {"qk_rope_head_dim", 8},
              {"v_head_dim", 20},
              {"n_routed_experts", 12},
              {"num_experts_per_tok", 3},
              {"n_group", 4},
              {"topk_group", 2},
              {"n_shared_experts", 1},
              {"routed_scaling_factor", 1.75},
              {"scoring_func", "sigmoid"},
              {"topk_method", "noaux_tc"},
              {"norm_topk_prob", true},
              {"hidden_act", "silu"},
              {"rms_norm_eps", 1e-6},
              {"rope_theta", 10000},
              {"rope_scaling",
               {{"type", "yarn"},
                {"factor", 8},
                {"original_max_position_embeddings", 32},
                {"beta_fast", 32},
                {"beta_slow", 1},
                {"mscale", 0.9},
                {"mscale_all_dim", 0.9}}},
              {"max_position_embeddings", 1024},
              {"tie_word_embeddings", false},
              {"bos_token_id", 0},
              {"eos_token_id", 1}};
}

struct Case {
  std::string name;
  json config;
  model::StoredDType dtype;
  int64_t prompt_len;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  // V3 shape: sigmoid noaux_tc, groups, YaRN with mscale 0.9, long enough for the naive form.
  out.push_back({"v3_noaux_yarn", base_config(), model::StoredDType::kBF16, 80});

  json v2 = base_config();  // V2: no q LoRA, softmax group-limited routing, no renormalization
  v2["architectures"] = {"DeepseekV2ForCausalLM"};
  v2["model_type"] = "deepseek_v2";
  v2["q_lora_rank"] = nullptr;
  v2["scoring_func"] = "softmax";
  v2["topk_method"] = "group_limited_greedy";
  v2["norm_topk_prob"] = false;
  v2["routed_scaling_factor"] = 16.0;
  v2["n_group"] = 3;
  v2["topk_group"] = 2;
  v2["num_attention_heads"] = v2["num_key_value_heads"] = 5;
  v2["rope_scaling"] = nullptr;
  v2["num_nextn_predict_layers"] = 0;
  out.push_back({"v2_group_limited_no_rope_scaling", v2, model::StoredDType::kBF16, 70});

  json lite = v2;  // V2-Lite: greedy softmax, 2 shared experts, MoE every other layer, tied
  lite["topk_method"] = "greedy";
  lite["n_group"] = 1;
  lite["topk_group"] = 1;
  lite["n_shared_experts"] = 2;
  lite["routed_scaling_factor"] = 1.0;
  lite["moe_layer_freq"] = 2;
  lite["num_hidden_layers"] = 4;
  lite["first_k_dense_replace"] = 0;
  lite["tie_word_embeddings"] = true;
  lite["rope_scaling"] = {{"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 16},
                          {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 0.707}, {"mscale_all_dim", 0.707}};
  out.push_back({"v2lite_greedy_tied_moe_freq", lite, model::StoredDType::kF32, 50});

  json fp8 = base_config();  // FP8 everywhere, widths that leave partial 128x128 edge blocks
  fp8["hidden_size"] = 320;
  fp8["kv_lora_rank"] = 160;
  fp8["q_lora_rank"] = 200;
  fp8["intermediate_size"] = 400;
  fp8["moe_intermediate_size"] = 136;
  fp8["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                                {"weight_block_size", {128, 128}}};
  out.push_back({"v3_fp8_partial_blocks", fp8, model::StoredDType::kFP8, 40});

  json wide = base_config();  // many experts and groups, more experts per token, 8 heads
  wide["n_routed_experts"] = 32;
  wide["n_group"] = 8;
  wide["topk_group"] = 3;
  wide["num_experts_per_tok"] = 6;
  wide["num_attention_heads"] = wide["num_key_value_heads"] = 8;
  wide["first_k_dense_replace"] = 2;
  wide["num_hidden_layers"] = 4;
  out.push_back({"v3_many_experts", wide, model::StoredDType::kBF16, 30});

  json v32 = base_config();  // V3.2: lightning indexer, sparse for every query past index_topk
  v32["architectures"] = {"DeepseekV32ForCausalLM"};
  v32["model_type"] = "deepseek_v32";
  v32["index_n_heads"] = 4;
  v32["index_head_dim"] = 128;
  v32["index_topk"] = 12;
  out.push_back({"v32_sparse", v32, model::StoredDType::kBF16, 48});
  return out;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class UnseenCheckpoint : public ::testing::TestWithParam<Case> {};

std::vector<float> run(const model::Model& m, const std::vector<int32_t>& tokens, AttentionForm form,
                       int64_t chunk) {
  auto s = m.new_session(static_cast<int64_t>(tokens.size()));
  std::vector<float> all, part;
  for (size_t pos = 0; pos < tokens.size(); pos += static_cast<size_t>(chunk)) {
    const size_t n = std::min(static_cast<size_t>(chunk), tokens.size() - pos);
    Status st = m.forward(*s, std::span(tokens.data() + pos, n), {form, true}, &part);
    EXPECT_TRUE(st.ok()) << st.message();
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

TEST_P(UnseenCheckpoint, MatchesIndependentReference) {
  const Case& c = GetParam();
  const ScratchDir scratch("unseen-" + c.name);
  const fs::path dir = scratch.path() / "model";
  model::RandomCheckpointOptions opts;
  opts.dtype = c.dtype;
  opts.seed = 1234;
  opts.max_shard_bytes = 400'000;  // several shards, as real checkpoints have
  ASSERT_TRUE(model::write_random_checkpoint(c.config.dump(2), dir.string(), opts).ok());

  auto m = model::Model::load(dir.string());
  ASSERT_TRUE(m.ok()) << m.status().message();
  const model::Model& engine = *m.value();
  EXPECT_EQ(engine.weights().mtp.size(), static_cast<size_t>(c.config.value("num_nextn_predict_layers", 0)));

  std::mt19937 rng(7);
  std::vector<int32_t> tokens(static_cast<size_t>(c.prompt_len));
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % c.config["vocab_size"].get<uint32_t>());

  const ReferenceModel ref(dir.string());
  const std::vector<double> want = ref.logits(tokens);

  const auto prefill = run(engine, tokens, AttentionForm::kAuto, c.prompt_len);
  EXPECT_LE(relative_error(prefill, want), kGoldenTolerance) << "one prefill";
  const auto steps = run(engine, tokens, AttentionForm::kAuto, 1);
  EXPECT_LE(relative_error(steps, want), kGoldenTolerance) << "one token at a time";
  const auto chunked = run(engine, tokens, AttentionForm::kAuto, 13);
  EXPECT_LE(relative_error(chunked, prefill), 1e-5) << "chunks of 13 vs one prefill";
  const auto absorbed = run(engine, tokens, AttentionForm::kAbsorbed, c.prompt_len);
  EXPECT_LE(relative_error(absorbed, want), kGoldenTolerance) << "absorbed form";
  if (!engine.config().has_indexer()) {
    const auto naive = run(engine, tokens, AttentionForm::kNaive, c.prompt_len);
    EXPECT_LE(relative_error(naive, want), kGoldenTolerance) << "naive form";
    EXPECT_LE(relative_error(naive, absorbed), 1e-5) << "naive vs absorbed";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, UnseenCheckpoint, ::testing::ValuesIn(cases()),
                         [](const auto& test_info) { return test_info.param.name; });

}  // namespace
}  // namespace dseek::testing
