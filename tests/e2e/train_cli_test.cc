// `dseek train` end to end on a tiny MLA + MoE + MTP model with a small BPE tokenizer made by
// `dseek tokenizer-train`: progress lines and summary, checkpoints that `dseek run` loads,
// --resume from step-N giving byte-identical final weights, and one-line errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "e2e_util.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;

struct TrainSetup {
  fs::path dir;
  std::string config, tokenizer, text;
};

const TrainSetup& train_setup() {
  static const ScratchDir scratch("train-cli");
  static const TrainSetup s = [] {
    TrainSetup s;
    s.dir = scratch.path();
    const char* subj[] = {"the cat", "a dog", "my friend", "the old man", "she"};
    const char* verb[] = {"sees", "likes", "walks to", "finds"};
    const char* obj[] = {"the park", "a red ball", "the river", "the house"};
    std::mt19937 rng(3);
    std::ofstream text(s.dir / "text.txt");
    for (int d = 0; d < 200; ++d) {
      for (int k = 0; k < 4; ++k) text << subj[rng() % 5] << " " << verb[rng() % 4] << " " << obj[rng() % 4] << ". ";
      text << "\n\n";
    }
    text.close();
    s.text = (s.dir / "text.txt").string();
    s.tokenizer = (s.dir / "tok").string();
    const auto r = run_dseek("tokenizer-train " + s.text + " --vocab 300 -o " + s.tokenizer);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    s.config = (s.dir / "config.json").string();
    std::ofstream(s.config) << tiny_train_config(256);
    return s;
  }();
  return s;
}

std::string base_args(const TrainSetup& s, const fs::path& out) {
  return "train --config " + s.config + " --tokenizer " + s.tokenizer + " --data " + s.text + " -o " + out.string() +
         " --batch 4 --seq-len 32 --lr 5e-3 --warmup 3 -t 2";
}

TEST(TrainCli, TrainsSavesLoadsAndResumesExactly) {
  const TrainSetup& s = train_setup();
  const fs::path out = s.dir / "run";
  const auto r = run_dseek(base_args(s, out) + " --steps 20 --eval-every 10 --save-every 10");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("tokenized"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("step 20/20 | loss "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tok/s | eta"), std::string::npos);
  EXPECT_NE(r.err.find("| held-out "), std::string::npos);
  EXPECT_NE(r.err.find("(with MTP)"), std::string::npos);
  EXPECT_NE(r.err.find("dseek train: 20 steps"), std::string::npos);
  EXPECT_EQ(r.err.find('\r'), std::string::npos);  // not a TTY: plain lines
  for (const char* f : {"config.json", "model.safetensors", "trainer_state.safetensors", "tokenizer.json"}) {
    EXPECT_TRUE(fs::exists(out / "final" / f)) << f;
    EXPECT_TRUE(fs::exists(out / "step-10" / f)) << f;
  }
  EXPECT_FALSE(fs::exists(out / "step-20"));  // the last step is `final`

  const auto gen = run_dseek("run -m " + (out / "final").string() + " --raw -p 'the cat' -n 8 --temp 0");
  EXPECT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_FALSE(gen.out.empty());

  // Resume from step 10 with only --resume: the saved options, the same data windows.
  const fs::path out2 = s.dir / "resumed";
  const auto res = run_dseek("train --data " + s.text + " -o " + out2.string() + " --resume " +
                             (out / "step-10").string() + " -t 1");
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_NE(res.err.find("from step 10"), std::string::npos) << res.err;
  EXPECT_EQ(slurp(out / "final" / "model.safetensors"), slurp(out2 / "final" / "model.safetensors"));
  EXPECT_EQ(slurp(out / "final" / "trainer_state.safetensors"), slurp(out2 / "final" / "trainer_state.safetensors"));
}

TEST(TrainCli, BadFlagsAndFilesAreOneLineErrors) {
  const TrainSetup& s = train_setup();
  // Errors found by dseek: one "dseek: error:" line; flag syntax errors: CLI11's message.
  auto expect_error = [](const std::string& args, const std::string& needle, bool one_line = true) {
    const auto r = run_dseek(args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
    if (!one_line) return;
    EXPECT_EQ(r.err.rfind("dseek: error: ", 0), 0u) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line expected:\n" << r.err;
  };
  const fs::path out = s.dir / "bad";
  expect_error("train --config " + s.config + " --tokenizer " + s.tokenizer + " --data " + (s.dir / "nope.txt").string() +
                   " -o " + out.string(), "nope.txt");
  expect_error("train --config " + s.config + " --tokenizer " + s.tokenizer + " --data " + s.text + " -o " +
                   out.string() + " --batch 3 --grad-accum 2", "--grad-accum 2");
  std::ofstream(s.dir / "bad.json") << "{\"vocab_size\": 300";
  expect_error("train --config " + (s.dir / "bad.json").string() + " --tokenizer " + s.tokenizer + " --data " + s.text +
                   " -o " + out.string(), "bad.json");
  expect_error("train --tokenizer " + s.tokenizer + " --data " + s.text + " -o " + out.string(), "--config");
  expect_error("train --data " + s.text + " -o " + out.string() + " --resume " + (s.dir / "missing").string(),
               "missing");
  expect_error("train --config " + s.config + " --tokenizer " + s.tokenizer + " --data " + s.text + " -o " +
                   out.string() + " --seq-len 1000", "--seq-len: 1000 tokens exceed the context of 256");
  std::ofstream(s.dir / "junk.tok") << "DSEEKTOK but broken";
  expect_error("train --config " + s.config + " --tokenizer " + s.tokenizer + " --data " +
                   (s.dir / "junk.tok").string() + " -o " + out.string(), "junk.tok");
  expect_error(base_args(s, out) + " --dtype fp8", "--dtype", /*one_line=*/false);
}

}  // namespace
}  // namespace dseek::testing
