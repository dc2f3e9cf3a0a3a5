// dseek run and dseek init as a user runs them.
#include <filesystem>
#include <set>

#include <gtest/gtest.h>

#include "../golden/test_util.h"
#include "base/float_types.h"
#include "e2e_util.h"
#include "io/checkpoint.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;

std::string join(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// Greedy `dseek run` on every golden checkpoint and prompt reproduces DeepSeek's tokens, in float32
// and in BF16-compute mode (--dtype bf16: the golden README's bar for a faster mode), and with
// the weights copied into memory (--no-mmap).
TEST(Run, GreedyReproducesGoldenTokens) {
  const std::vector<std::vector<int32_t>> prompts = {
      {167, 487, 79, 204, 335},
      {26, 39, 422, 276, 50, 189, 300, 31, 467, 261, 111, 21, 46, 224, 216, 37, 125, 48, 284, 219, 32, 425, 291, 65}};
  for (const std::string name : {"tiny-v3", "tiny-v3-fp8", "tiny-v2lite", "tiny-v32"}) {
    auto expected = io::SafetensorsFile::open(golden_dir() + "/expected/" + name + ".safetensors");
    ASSERT_TRUE(expected.ok());
    for (size_t i = 0; i < prompts.size(); ++i) {
      for (const std::string flags : {"--dtype f32", "--dtype bf16", "--dtype f32 --no-mmap"}) {
        const auto r = run_dseek("run -m " + golden_dir() + "/models/" + name + " --prompt-ids " + join(prompts[i]) +
                                 " -n 12 --temp 0 --ignore-eos --ids -t 1 " + flags);
        ASSERT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(r.out, join(read_i32(*expected.value(), "p" + std::to_string(i) + ".greedy")) + "\n")
            << name << " p" << i << " " << flags;
        EXPECT_NE(r.err.find("generated: 12 tokens"), std::string::npos) << r.err;
        EXPECT_NE(r.err.find("peak memory"), std::string::npos) << r.err;
      }
    }
  }
}

TEST(Run, SameSeedSameTextAndSummaryLine) {
  const std::string model = tiny_chat_model();
  ASSERT_TRUE(fs::exists(model + "/config.json")) << model;
  const std::string args = "run -m " + model + " -p 'Tell me a story.' -n 16 --temp 1.0 --top-p 0.95 ";
  const auto a = run_dseek(args + "--seed 7");
  const auto b = run_dseek(args + "--seed 7");
  const auto c = run_dseek(args + "--seed 8");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  EXPECT_FALSE(a.out.empty());
  // One summary line: prompt and generation speed, peak memory.
  EXPECT_NE(a.err.find("prompt: "), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("tokens/s"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("generated: 16 tokens"), std::string::npos) << a.err;
}

// Without -m, run uses $DSEEK_MODEL, else the demo model shipped in models/demo.
TEST(Run, UsesTheDefaultModelWithoutM) {
  const std::string default_model = std::string(DSEEK_SOURCE_DIR) + "/models/demo";
  ASSERT_TRUE(fs::exists(default_model + "/config.json")) << "the repository ships it";
  auto r = run_dseek("run -p 'Hello' -n 4 --seed 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("loaded " + default_model), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("generated: 4 tokens"), std::string::npos) << r.err;
  r = run_dseek("run -m " + tiny_chat_model() + " -p 'Hello' -n 4 --seed 1");  // -m wins
  EXPECT_NE(r.err.find("loaded " + tiny_chat_model()), std::string::npos) << r.err;
  setenv("DSEEK_MODEL", "/nonexistent-dseek-model", 1);
  r = run_dseek("run -p 'Hello' -n 4");
  unsetenv("DSEEK_MODEL");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent-dseek-model"), std::string::npos) << r.err;
}

TEST(Run, BadInputGivesClearErrors) {
  const std::string model = tiny_chat_model();
  auto r = run_dseek("run -m /nonexistent/model -p hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("dseek: error: /nonexistent/model"), std::string::npos) << r.err;

  r = run_dseek("run -m " + model + " -p hi --bogus-flag");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--bogus-flag"), std::string::npos) << r.err;

  r = run_dseek("run -m " + model + " -p 'a long prompt that will not fit in eight tokens of context at all' -c 8");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("ctx-size"), std::string::npos) << r.err;

  r = run_dseek("run -m " + model + " -p hi --temp -1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--temp"), std::string::npos) << r.err;

  r = run_dseek("run -m " + model + " -p hi --dtype fp16");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--dtype"), std::string::npos) << r.err;

  r = run_dseek("run -m " + golden_dir() + "/models/tiny-v3 --prompt-ids 1,2,99999");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("99999"), std::string::npos) << r.err;
}

// A full context ends generation with a message, not a crash.
TEST(Run, FullContextEndsCleanly) {
  const auto r = run_dseek("run -m " + golden_dir() + "/models/tiny-v3 --prompt-ids 5,6,7 -c 10 -n -1 --temp 0 "
                           "--ignore-eos --ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("finish: context full"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("raise -c/--ctx-size"), std::string::npos) << r.err;
}

TEST(Init, WritesALoadableCheckpointInTheHfLayout) {
  const ScratchDir scratch("init");
  const fs::path dir = scratch.path() / "model";
  auto r = run_dseek("init " + golden_dir() + "/models/tiny-v3/config.json " + dir.string() + " --seed 1 --shard-size 0.002");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir / "model-00001-of-00005.safetensors"));  // ~8 MB in shards of 2 MB
  // The same tensor names, shapes and dtypes as the golden checkpoint, which DeepSeek's code wrote.
  auto mine = io::Checkpoint::open(dir.string());
  auto theirs = io::Checkpoint::open(golden_dir() + "/models/tiny-v3");
  ASSERT_TRUE(mine.ok() && theirs.ok()) << mine.status().message();
  ASSERT_EQ(mine.value()->tensors().size(), theirs.value()->tensors().size());
  for (const auto& [name, t] : theirs.value()->tensors()) {
    const io::TensorView* m = mine.value()->find(name);
    ASSERT_NE(m, nullptr) << name;
    EXPECT_EQ(m->shape, t->shape) << name;
    EXPECT_EQ(m->dtype, t->dtype) << name;
  }
  r = run_dseek("info " + dir.string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Initialized as DeepSeek trains: N(0, initializer_range = 0.02), norms 1.
  const io::TensorView* w = mine.value()->find("model.layers.0.mlp.up_proj.weight");
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < w->numel(); ++i) {
    const double v = bf16_to_f32(load_u16(w->data + 2 * i));
    sum += v;
    sq += v * v;
  }
  EXPECT_NEAR(std::sqrt(sq / w->numel() - std::pow(sum / w->numel(), 2)), 0.02, 0.001);
  const io::TensorView* n = mine.value()->find("model.norm.weight");
  EXPECT_EQ(bf16_to_f32(load_u16(n->data)), 1.0f);
  // Refuses to overwrite.
  r = run_dseek("init " + golden_dir() + "/models/tiny-v3/config.json " + dir.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not empty"), std::string::npos) << r.err;
}

// An FP8 checkpoint holds the same weights as the BF16 one of the same seed, within FP8
// precision (half an e4m3 step: 2^-4 relative, plus the subnormal floor of each block).
TEST(Init, Fp8RoundTripsWeightsWithinFp8Precision) {
  const ScratchDir scratch("fp8");
  const fs::path base = scratch.path();
  const std::string config = std::string(DSEEK_TEST_DATA) + "/configs/tiny-fp8.json";
  ASSERT_EQ(run_dseek("init " + config + " " + (base / "fp8").string() + " --dtype fp8 --seed 9").exit_code, 0);
  ASSERT_EQ(run_dseek("init " + config + " " + (base / "bf16").string() + " --dtype f32 --seed 9").exit_code, 0);
  auto q = io::Checkpoint::open((base / "fp8").string());
  auto f = io::Checkpoint::open((base / "bf16").string());
  ASSERT_TRUE(q.ok() && f.ok());
  int fp8_tensors = 0;
  for (const auto& [name, t] : q.value()->tensors()) {
    if (t->dtype != DType::kF8E4M3) continue;
    ++fp8_tensors;
    const io::TensorView* scale = q.value()->find(name + "_scale_inv");
    const io::TensorView* ref = f.value()->find(name);
    ASSERT_TRUE(scale && ref) << name;
    const int64_t rows = t->shape[0], cols = t->shape[1], sc = (cols + 127) / 128;
    EXPECT_EQ(scale->shape, (std::vector<int64_t>{(rows + 127) / 128, sc})) << name;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        const float s = load_f32(scale->data + 4 * ((i / 128) * sc + j / 128));
        const float got = fp8e4m3_to_f32(t->data[i * cols + j]) * s;
        const float want = load_f32(ref->data + 4 * (i * cols + j));
        ASSERT_LE(std::fabs(got - want), std::fabs(want) / 16 + s * std::pow(2.0f, -10)) << name << " " << i << "," << j;
      }
  }
  EXPECT_GT(fp8_tensors, 10);
  const auto r = run_dseek("info " + (base / "fp8").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("F8_E4M3"), std::string::npos);
}

}  // namespace
}  // namespace dseek::testing
