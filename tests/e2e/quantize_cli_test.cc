// `dseek quantize` as a user runs it: a golden model to q4, then `dseek run` on it (ids and,
// on a model with a tokenizer, text), `dseek info` naming the types; `dseek init --dtype q4`;
// bad input: one "dseek: error:" line and a non-zero exit, nothing overwritten.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../golden/test_util.h"
#include "e2e_util.h"
#include "io/checkpoint.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;

int count_ids(const std::string& out) {
  if (out.empty()) return 0;
  int n = 1;
  for (char c : out) n += c == ',';
  return n;
}

TEST(QuantizeCli, GoldenModelToQ4RunsAndInfoShowsTheTypes) {
  const ScratchDir s("quantize-cli");
  const std::string out = s / "tiny-v3-q4";
  auto r = run_dseek("quantize " + golden_dir() + "/models/tiny-v3 " + out + " --type q4 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("dseek quantize: " + out + ": q4, group 32 (head q8)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("MB -> "), std::string::npos) << r.err;
  const auto config = nlohmann::json::parse(slurp(fs::path(out) / "config.json"));
  EXPECT_EQ(config["quantization_config"]["quant_method"], "dseek");
  EXPECT_EQ(config["quantization_config"]["weight_type"], "q4");
  EXPECT_EQ(config["quantization_config"]["group_size"], 32);

  r = run_dseek("run -m " + out + " --prompt-ids 167,487,79,204,335 -n 8 --temp 0 --ignore-eos --ids -t 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_ids(r.out), 8) << r.out;
  EXPECT_NE(r.err.find("generated: 8 tokens"), std::string::npos) << r.err;

  r = run_dseek("info " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("quantization:     dseek q4, group 32, heads q8"), std::string::npos) << r.out;
  for (const char* type : {"U8", "I8", "F16", "BF16"}) EXPECT_NE(r.out.find(type), std::string::npos) << type;
  r = run_dseek("info --json " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto info = nlohmann::json::parse(r.out);
  EXPECT_GE(info["linears_by_type"]["q8"].get<int>(), 1);  // lm_head (and an MTP head when stored)
  EXPECT_GT(info["linears_by_type"]["q4"].get<int>(), 100);
  EXPECT_EQ(info["linears_by_type"]["BF16"], 3);  // the routers of 2 MoE layers + the MTP layer's
}

TEST(QuantizeCli, ModelWithTokenizerRunsFromText) {
  const ScratchDir s("quantize-cli");
  const std::string out = s / "chat-q4";
  // tiny-chat's q_b_proj has 48 inputs: not a multiple of 32, so it stays in float.
  auto r = run_dseek("quantize " + tiny_chat_model() + " " + out + " --type q4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("kept in float"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(fs::path(out) / "tokenizer.json"));
  r = run_dseek("run -m " + out + " -p 'Tell me a story.' -n 8 --seed 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("generated: 8 tokens"), std::string::npos) << r.err;

  // Full fine-tuning cannot update int codes: a one-line refusal naming the model, not a crash.
  const std::string chats = s / "chats.jsonl";
  std::ofstream(chats) << R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]})"
                       << "\n";
  r = run_dseek("finetune -m " + out + " --data " + chats + " -o " + (s / "ft") + " --steps 1");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(out + ": full fine-tuning needs float or FP8 weights"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(QuantizeCli, InitWritesQ8AndQ4Directly) {
  const ScratchDir s("quantize-cli");
  for (const std::string type : {"q8", "q4"}) {
    auto r = run_dseek("init " + golden_dir() + "/models/tiny-v32/config.json " + (s / type) + " --test-init --dtype " +
                       type);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = run_dseek("info " + (s / type));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("dseek " + type), std::string::npos) << r.out;
    r = run_dseek("run -m " + (s / type) + " --prompt-ids 5,6,7 -n 4 --temp 0 --ignore-eos --ids");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(count_ids(r.out), 4) << r.out;
  }
}

void expect_error(const CommandResult& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_EQ(r.err.rfind("dseek: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(QuantizeCli, BadInputGivesOneLineErrors) {
  const ScratchDir s("quantize-cli");
  const std::string model = golden_dir() + "/models/tiny-v3";
  expect_error(run_dseek("quantize /nonexistent/model " + (s / "a")), "/nonexistent/model");
  EXPECT_FALSE(fs::exists(s / "a"));

  // A corrupt model: config.json that is not JSON, and a truncated shard.
  fs::create_directories(s / "broken");
  for (const auto& f : fs::directory_iterator(model)) fs::copy_file(f.path(), fs::path(s / "broken") / f.path().filename());
  { std::ofstream(s / "broken/config.json") << "{ not json"; }
  expect_error(run_dseek("quantize " + (s / "broken") + " " + (s / "b")), "config.json");
  fs::copy_file(model + "/config.json", s / "broken/config.json", fs::copy_options::overwrite_existing);
  fs::resize_file(s / "broken/model-00002-of-00002.safetensors", 1000);
  expect_error(run_dseek("quantize " + (s / "broken") + " " + (s / "b")), "model-00002-of-00002.safetensors");
  EXPECT_FALSE(fs::exists(s / "b"));

  auto r = run_dseek("quantize " + model + " " + (s / "c") + " --type q3");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--type"), std::string::npos) << r.err;
  expect_error(run_dseek("quantize " + model + " " + (s / "c") + " --group-size 7"), "--group-size");
  expect_error(run_dseek("quantize " + model + " " + (s / "c") + " --group-size 0"), "--group-size");
  EXPECT_FALSE(fs::exists(s / "c"));

  // OUT exists and is not empty: refused, the file left alone.
  fs::create_directories(s / "full");
  { std::ofstream(s / "full/notes.txt") << "keep me"; }
  expect_error(run_dseek("quantize " + model + " " + (s / "full")), "not an empty directory");
  EXPECT_EQ(slurp(s / "full/notes.txt"), "keep me");

  // Already quantized by dseek.
  r = run_dseek("quantize " + model + " " + (s / "q8") + " --type q8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_error(run_dseek("quantize " + (s / "q8") + " " + (s / "again")), "already quantized");
  EXPECT_FALSE(fs::exists(s / "again"));
}

}  // namespace
}  // namespace dseek::testing
