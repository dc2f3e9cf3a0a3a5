// `dseek finetune` end to end (issue 7) on a tiny random model with a byte-level tokenizer:
// --lora then `dseek run --lora` and --lora --merge then `dseek run` give the same greedy
// tokens (and differ from the base), and bad inputs give one-line errors with a non-zero exit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "e2e_util.h"
#include "../unit/lora_test_util.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;

struct FinetuneFiles {
  std::string dir, model, other, chats;
};

const FinetuneFiles& setup() {
  static const FinetuneFiles s = [] {
    FinetuneFiles f;
    f.dir = temp_dir("finetune-cli");
    fs::create_directories(f.dir);
    f.model = f.dir + "/model";
    f.other = f.dir + "/other";
    EXPECT_EQ(write_tiny_chat_model(f.model, model::StoredDType::kBF16, 5), "");
    EXPECT_EQ(write_tiny_chat_model(f.other, model::StoredDType::kBF16, 5, /*hidden=*/48), "");
    f.chats = f.dir + "/chats.jsonl";
    std::ofstream(f.chats) << tiny_chats_jsonl();
    return f;
  }();
  return s;
}

void expect_one_line_error(const CommandResult& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("dseek: error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  const size_t at = r.err.find("dseek: error: ");
  EXPECT_EQ(r.err.find('\n', at), r.err.size() - 1) << "one line: " << r.err;
}

TEST(FinetuneCli, LoraAdapterAndMergedCheckpointGenerateTheSameTokens) {
  const FinetuneFiles& s = setup();
  const std::string adapter = s.dir + "/adapter", merged = s.dir + "/merged";
  const std::string common = " -m " + s.model + " --data " + s.chats + " --lora 4 --steps 24 --lr 0.01 --seed 2 -t 2";
  auto r = run_dseek("finetune" + common + " -o " + adapter);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("loss on the assistant turns"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(adapter + "/adapter_config.json"));
  EXPECT_TRUE(fs::exists(adapter + "/adapter_model.safetensors"));
  r = run_dseek("finetune" + common + " --merge -o " + merged);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"}) EXPECT_TRUE(fs::exists(merged + "/" + f)) << f;

  const std::string gen = " -p 'hi' -n 12 --temp 0 --ignore-eos -t 2";
  const auto with_lora = run_dseek("run -m " + s.model + " --lora " + adapter + gen);
  const auto with_merge = run_dseek("run -m " + merged + gen);
  const auto base = run_dseek("run -m " + s.model + gen);
  ASSERT_EQ(with_lora.exit_code, 0) << with_lora.err;
  ASSERT_EQ(with_merge.exit_code, 0) << with_merge.err;
  ASSERT_EQ(base.exit_code, 0) << base.err;
  EXPECT_EQ(with_lora.out, with_merge.out);
  EXPECT_NE(with_lora.out, base.out) << "the adapter should change what the model says";
}

TEST(FinetuneCli, BadInputsGiveOneLineErrors) {
  const FinetuneFiles& s = setup();
  const std::string bad = s.dir + "/bad.jsonl";
  std::ofstream(bad) << tiny_chats_jsonl() << "{\"messages\": [oops\n";
  expect_one_line_error(run_dseek("finetune -m " + s.model + " --data " + bad + " --lora 2 -o " + s.dir + "/x"),
                        bad + ":5: not a valid JSON value");
  const std::string role = s.dir + "/role.jsonl";
  std::ofstream(role) << R"({"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]})" << "\n";
  expect_one_line_error(run_dseek("finetune -m " + s.model + " --data " + role + " --lora 2 -o " + s.dir + "/x"),
                        role + ":1: messages[0].role: unknown role 'robot'");
  // An adapter trained on one model applied to another of a different width.
  const std::string adapter = s.dir + "/adapter-small";
  ASSERT_EQ(run_dseek("finetune -m " + s.model + " --data " + s.chats + " --lora 2 --steps 1 -o " + adapter).exit_code, 0);
  expect_one_line_error(run_dseek("run -m " + s.other + " --lora " + adapter + " -p hi -n 2"),
                        "adapter_model.safetensors: tensors 'base_model.model.model.layers.0.");
  fs::remove(adapter + "/adapter_model.safetensors");
  expect_one_line_error(run_dseek("run -m " + s.model + " --lora " + adapter + " -p hi -n 2"),
                        "adapter_model.safetensors");
  expect_one_line_error(run_dseek("finetune -m " + s.model + " --data " + s.chats + " --lora 2 --lora-targets mlp -o " +
                                  s.dir + "/x"),
                        "--lora-targets 'mlp'");
}

}  // namespace
}  // namespace dseek::testing
