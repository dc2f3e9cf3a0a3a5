// What `dseek run` and `dseek chat` share: the llama.cpp-style model and sampling flags, and
// turning them into a loaded model, tokenizer, chat format and sampling parameters (the
// model's generation_config.json defaults, overridden by the flags the user gave).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/status.h"
#include "model/deepseek.h"
#include "runtime/generator.h"
#include "sample/sampler.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/chat_parser.h"
#include "tokenizer/tokenizer.h"

namespace dseek::cli {

struct GenerationFlags {
  std::string model;
  int threads = 0;
  int64_t ctx_size = 0;
  int64_t n_predict = -1;
  sample::SamplingParams sampling;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool no_verify = false;
  bool no_mmap = false;
  std::string system;
  std::string think = "auto";  // auto | on | off
  std::string format;          // chat format override: v3, r1, v3.1, v3.2
  std::string lora;            // PEFT adapter directory merged in at load (dseek finetune --lora)
  std::string cache_type_k = "f32";  // latent KV cache element type: f32 | bf16 | fp8
  std::string dtype = "f32";         // matrix-product compute type: f32 | bf16 (cpu/compute_type.h)
  // Which sampling flags were given (they override generation_config.json).
  std::vector<CLI::Option*> sampling_options;
  CLI::Option* temp_option = nullptr;
};

void add_generation_flags(CLI::App* cmd, GenerationFlags* f, int64_t default_n_predict);

// --no-mmap (llama.cpp's flag): runtime::LoadOptions::mmap = false.
void add_no_mmap_flag(CLI::App* cmd, bool* value);

// `--cache-type-k` (also `--ctk`): element type of the latent KV cache, f32 (default), bf16 or
// fp8 (kv/cache_type.h). MLA caches one latent per token that serves as both key and value, so
// there is no --cache-type-v. (llama.cpp's `-ctk` spelling needs CLI11 >= 2.4.)
void add_cache_type_flag(CLI::App* cmd, std::string* value);
// Parses the flag's value and makes it the cache type of the model's sessions and pools.
Status apply_cache_type(const std::string& value, model::Model& m);

// `--dtype` (vLLM's name): f32/float32 (default, reference precision) or bf16/bfloat16
// (activations rounded to bfloat16 in every matrix product, float32 sums; cpu/compute_type.h).
void add_dtype_flag(CLI::App* cmd, std::string* value);
// Parses the flag's value and makes it the process's compute type.
Status apply_dtype(const std::string& value);

struct Generation {
  std::shared_ptr<void> lora_keep_alive;  // base checkpoint + merged adapters; outlives `model`
  std::unique_ptr<model::Model> model;
  std::optional<tokenizer::Tokenizer> tokenizer;  // absent: the model directory has none
  tokenizer::ChatFormat format = tokenizer::ChatFormat::kV3;
  runtime::GenerateOptions options;
  int64_t ctx_size = 0;
  bool thinking = false;
};

// The model directory: -m, else $DSEEK_MODEL, else the default model made by scripts/setup.sh.
Expected<std::string> resolve_model_dir(const std::string& flag);

Expected<Generation> setup_generation(GenerationFlags& f);

// Prints a parsed answer as it streams: reasoning dimmed on a terminal (between <think> tags
// otherwise) or hidden, then the content, then any tool calls.
class AnswerPrinter {
 public:
  AnswerPrinter(bool tty, bool hide_reasoning) : tty_(tty), hide_reasoning_(hide_reasoning) {}
  void show(const tokenizer::ChatOutputParser::Delta& d);
  void finish();  // closes an open reasoning block

 private:
  bool tty_, hide_reasoning_;
  bool in_reasoning_ = false;
};

// One-line summary for stderr: prompt and generation speed, peak memory.
std::string generation_summary(const runtime::GenerateStats& s, runtime::FinishReason finish);

// Peak resident memory of this process, bytes.
uint64_t peak_rss_bytes();

}  // namespace dseek::cli
