// `dseek logits` and `dseek info` run as a user runs them, on the golden checkpoints.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <span>
#include <sstream>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>
#include <nlohmann/json.hpp>

#include "e2e_util.h"

#include "../golden/test_util.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/deepseek.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;

using dseek::testing::CommandResult;
using dseek::testing::run_dseek;

// What `dseek logits` computes for prompt i of the golden prompts, in this process with 2
// threads (as the command below runs): "prefill_logits" (every position of one prefill) or
// "step_logits" (the prefix, then one token per step).
std::vector<float> in_process_logits(const std::string& fixture, size_t i, const std::string& which) {
  auto m = model::Model::load(golden_dir() + "/models/" + fixture);
  EXPECT_TRUE(m.ok()) << m.status().message();
  auto prompts = io::read_json_file(golden_dir() + "/prompts.json");
  EXPECT_TRUE(prompts.ok());
  if (!m.ok() || !prompts.ok()) return {};
  const auto tokens = (*prompts)[i]["tokens"].get<std::vector<int32_t>>();
  const auto prefill = (*prompts)[i]["prefill"].get<int64_t>();
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  std::vector<float> out, logits;
  auto session = (*m)->new_session(static_cast<int64_t>(tokens.size()));
  if (which == "prefill_logits") {
    EXPECT_TRUE((*m)->forward(*session, tokens, {model::AttentionForm::kAuto, true}, &out).ok());
  } else {
    EXPECT_TRUE((*m)->forward(*session, std::span(tokens.data(), prefill), {}, &out).ok());
    for (size_t t = static_cast<size_t>(prefill); t < tokens.size(); ++t) {
      EXPECT_TRUE((*m)->forward(*session, std::span(tokens.data() + t, 1), {}, &logits).ok());
      out.insert(out.end(), logits.begin(), logits.end());
    }
  }
  omp_set_num_threads(saved);
  return out;
}

TEST(CliLogits, WritesTheGoldenTensorsWithinTolerance) {
  const ScratchDir scratch("logits");
  const fs::path out = scratch.path() / "logits.safetensors";
  for (const std::string name : {"tiny-v3-fp8", "tiny-v32"}) {
    const CommandResult r = run_dseek("logits " + golden_dir() + "/models/" + name + " --prompts " + golden_dir() +
                            "/prompts.json --out " + out.string() + " -t 2");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto got = io::SafetensorsFile::open(out.string());
    auto want = io::SafetensorsFile::open(golden_dir() + "/expected/" + name + ".safetensors");
    ASSERT_TRUE(got.ok() && want.ok());
    // Exactly the tensors of the golden file, same dtypes and shapes.
    ASSERT_EQ(got.value()->tensors().size(), want.value()->tensors().size());
    for (const auto& [tensor, view] : want.value()->tensors()) {
      const io::TensorView* g = got.value()->find(tensor);
      ASSERT_NE(g, nullptr) << tensor;
      EXPECT_EQ(g->dtype, view.dtype) << tensor;
      EXPECT_EQ(g->shape, view.shape) << tensor;
      // tiny-v32's prompt 2 meets an FP8 near-tie of the indexer's top-k (4.9e-4 apart) that
      // the engine resolves the other way from the reference: its logits differ by ~0.16 of
      // max|logit|. parity_test shows, in process, that flipping that one choice gives the
      // reference within tolerance; here the command must write exactly what the engine
      // computes in process for the same prompt.
      if (name == "tiny-v32" && tensor.rfind("p2.", 0) == 0 && view.dtype == DType::kF32) {
        EXPECT_LE(relative_error(read_f32(*got.value(), tensor), in_process_logits(name, 2, tensor.substr(3))), 1e-6)
            << name << " " << tensor;
        continue;
      }
      if (view.dtype == DType::kI32)
        EXPECT_EQ(read_i32(*got.value(), tensor), read_i32(*want.value(), tensor)) << name << " " << tensor;
      else
        EXPECT_LE(relative_error(read_f32(*got.value(), tensor), read_f32(*want.value(), tensor)), kGoldenTolerance)
            << name << " " << tensor;
    }
  }
}

// Parameter counts worked out by hand from each fixture's config.json (golden README table).
struct Shape {
  int64_t D = 256, V = 512, layers = 3, dense = 1, inter = 384, E = 16, F = 64, shared = 1, topk = 4;
  int64_t q_lora = 128, kv_lora = 64, nope = 32, rope = 16, v = 32, H = 4;
  bool bias = true;
  int64_t index_heads = 0, index_dim = 0;
};

int64_t attention_params(const Shape& s) {
  const int64_t q = s.q_lora ? s.q_lora * s.D + s.q_lora + s.H * (s.nope + s.rope) * s.q_lora
                             : s.H * (s.nope + s.rope) * s.D;
  const int64_t kv = (s.kv_lora + s.rope) * s.D + s.kv_lora + s.H * (s.nope + s.v) * s.kv_lora;
  const int64_t indexer = s.index_heads ? s.index_heads * s.index_dim * s.q_lora + s.index_dim * s.D +
                                              2 * s.index_dim + s.index_heads * s.D
                                        : 0;
  return q + kv + s.D * s.H * s.v + indexer;
}

void expect_counts(const std::string& name, const Shape& s) {
  const CommandResult r = run_dseek("info --json " + golden_dir() + "/models/" + name);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const int64_t per_layer = attention_params(s) + 2 * s.D;
  const int64_t dense_ffn = 3 * s.inter * s.D;
  const int64_t expert = 3 * s.F * s.D;
  const int64_t moe_fixed = s.E * s.D + (s.bias ? s.E : 0) + s.shared * expert;
  const int64_t moe_layers = s.layers - s.dense;
  const int64_t total = 2 * s.V * s.D + s.D + s.layers * per_layer + s.dense * dense_ffn +
                        moe_layers * (moe_fixed + s.E * expert);
  const int64_t active = s.D + s.V * s.D + s.D + s.layers * per_layer + s.dense * dense_ffn +
                         moe_layers * (moe_fixed + s.topk * expert);
  EXPECT_EQ(j["params_total"].get<int64_t>(), total) << name;
  EXPECT_EQ(j["params_active"].get<int64_t>(), active) << name;
  EXPECT_EQ(j["layers"].get<int64_t>(), s.layers);
  EXPECT_EQ(j["dense_layers"].get<int64_t>(), s.dense);
  EXPECT_EQ(j["kv_values_per_layer"].get<int64_t>(), s.kv_lora + s.rope);
  EXPECT_EQ(j["kv_bytes_per_token_bf16"].get<int64_t>(), (s.kv_lora + s.rope) * 2 * s.layers);
  EXPECT_EQ(j["indexer_bytes_per_token"].get<int64_t>(), s.index_dim ? (s.index_dim + 4) * s.layers : 0);

  // Weight bytes: the data sections of the shards, measured from the files themselves.
  uint64_t data_bytes = 0;
  for (const auto& f : fs::directory_iterator(golden_dir() + "/models/" + name)) {
    if (f.path().extension() != ".safetensors") continue;
    std::ifstream in(f.path(), std::ios::binary);
    uint64_t header = 0;
    in.read(reinterpret_cast<char*>(&header), 8);
    data_bytes += fs::file_size(f.path()) - 8 - header;
  }
  EXPECT_EQ(j["bytes_total"].get<uint64_t>(), data_bytes) << name;
  uint64_t by_dtype = 0;
  for (const auto& [dtype, bytes] : j["bytes_by_dtype"].items()) by_dtype += bytes.get<uint64_t>();
  EXPECT_EQ(by_dtype, data_bytes);
}

TEST(CliInfo, CountsMatchHandComputation) {
  expect_counts("tiny-v3", Shape{});
  expect_counts("tiny-v3-fp8", Shape{});
  Shape lite;  // no q LoRA, 3 of 16 experts, 2 shared, no correction bias, no MTP
  lite.q_lora = 0;
  lite.topk = 3;
  lite.shared = 2;
  lite.bias = false;
  expect_counts("tiny-v2lite", lite);
  Shape v32;  // kv_lora 128, indexer 16 heads x 128
  v32.kv_lora = 128;
  v32.index_heads = 16;
  v32.index_dim = 128;
  expect_counts("tiny-v32", v32);
}

TEST(CliInfo, TextReportNamesArchitectureAndSizes) {
  const CommandResult r = run_dseek("info " + golden_dir() + "/models/tiny-v3-fp8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("DeepseekV3ForCausalLM"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("F8_E4M3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("+ 1 MTP"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("480 bytes at BF16"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dseek::testing
