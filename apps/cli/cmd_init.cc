// `dseek init CONFIG.json OUT_DIR [--dtype bf16|fp8|f32|q8|q4] [--seed N] [--tokenizer DIR]`:
// a checkpoint with random weights in the exact Hugging Face layout, initialized as DeepSeek
// trains (normal, std = initializer_range), for tests, benchmarks and training from scratch.
#include <cstdio>
#include <filesystem>

#include "base/timer.h"
#include "commands.h"
#include "io/mapped_file.h"
#include "model/checkpoint_writer.h"
#include "model/model_info.h"
#include "model/weights.h"

namespace dseek::cli {

namespace fs = std::filesystem;

namespace {

struct InitArgs {
  std::string config, out, dtype = "bf16", tokenizer;
  uint64_t seed = 0;
  double shard_gb = 4.0;
  bool test_init = false;
};

Status run_init(const InitArgs& a) {
  Stopwatch clock;
  DSEEK_ASSIGN_OR_RETURN(std::string config_json, io::read_text_file(a.config));
  model::RandomCheckpointOptions o;
  o.dtype = a.dtype == "fp8"   ? model::StoredDType::kFP8
            : a.dtype == "f32" ? model::StoredDType::kF32
            : a.dtype == "q8"  ? model::StoredDType::kQ8
            : a.dtype == "q4"  ? model::StoredDType::kQ4
                               : model::StoredDType::kBF16;
  o.seed = a.seed;
  o.init = a.test_init ? model::InitStyle::kTest : model::InitStyle::kTraining;
  o.max_shard_bytes = static_cast<uint64_t>(a.shard_gb * 1e9);
  o.progress = [](uint64_t done, uint64_t total) {
    std::fprintf(stderr, "\rdseek init: %.2f / %.2f GB drawn   ", done / 1e9, total / 1e9);
  };
  std::error_code ec;
  if (fs::exists(a.out, ec) && !fs::is_empty(a.out, ec))
    return Status::errorf("{}: output directory exists and is not empty", a.out);
  Status written = model::write_random_checkpoint(config_json, a.out, o);
  std::fprintf(stderr, "\n");
  DSEEK_RETURN_IF_ERROR(written.with_context("dseek init"));

  if (!a.tokenizer.empty()) {  // tokenizer.json, tokenizer_config.json (and any chat encoder files)
    const fs::path src = fs::is_directory(a.tokenizer, ec) ? fs::path(a.tokenizer) : fs::path(a.tokenizer).parent_path();
    bool copied = false;
    for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
      if (!fs::exists(src / name, ec)) continue;
      fs::copy_file(src / name, fs::path(a.out) / name, fs::copy_options::overwrite_existing, ec);
      if (ec) return Status::errorf("{}: cannot copy into {}: {}", (src / name).string(), a.out, ec.message());
      copied = true;
    }
    if (!copied) return Status::errorf("{}: no tokenizer.json found", a.tokenizer);
  }
  DSEEK_ASSIGN_OR_RETURN(auto weights, model::load_weights(a.out));  // what was written must load
  const auto info = model::compute_model_info(*weights);
  std::fprintf(stderr, "dseek init: %s: %s, %.3fB parameters (%.3fB active), %.2f GB in %.1f s\n", a.out.c_str(),
               info.architecture.c_str(), info.params_total / 1e9, info.params_active / 1e9,
               info.bytes_total / 1e9, clock.seconds());
  return {};
}

}  // namespace

void register_init(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand("init", "Write a random-weight checkpoint in the Hugging Face layout");
  auto a = std::make_shared<InitArgs>();
  cmd->add_option("CONFIG", a->config, "config.json of the model to create")->required();
  cmd->add_option("OUT_DIR", a->out, "Output model directory (created; must be empty)")->required();
  cmd->add_option("--dtype", a->dtype,
                  "Weight format: bf16, fp8 (e4m3, 128x128 block scales), f32, or q8/q4 (dseek int8/int4 linears, "
                  "group 32, as `dseek quantize` writes them)")
      ->check(CLI::IsMember({"bf16", "fp8", "f32", "q8", "q4"}));
  cmd->add_option("--seed", a->seed, "Random seed (same seed, same weights)");
  cmd->add_option("--tokenizer", a->tokenizer, "Directory (or tokenizer.json) whose tokenizer files are copied in");
  cmd->add_option("--shard-size", a->shard_gb, "Largest shard, in GB")->check(CLI::PositiveNumber);
  cmd->add_flag("--test-init", a->test_init,
                "Initialize for forward-pass tests (std 1/sqrt(fan_in), perturbed norms) instead of as in training");
  cmd->callback([=] {
    *run = [=] {
      return exit_code(run_init(*a));
    };
  });
}

}  // namespace dseek::cli
