#include "generation_setup.h"

#include <sys/resource.h>

#include <cstdlib>
#include <filesystem>

#include <omp.h>

#include "cpu/compute_type.h"
#include "runtime/loader.h"
#include "sample/generation_config.h"
#include "train/lora.h"

namespace dseek::cli {

namespace fs = std::filesystem;

void add_generation_flags(CLI::App* cmd, GenerationFlags* f, int64_t default_n_predict) {
  f->n_predict = default_n_predict;
  cmd->add_option("-m,--model", f->model, "Model directory (default: $DSEEK_MODEL, else the project's default model)");
  cmd->add_option("-t,--threads", f->threads, "Threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--lora", f->lora, "LoRA adapter directory (dseek finetune --lora) applied to the model at load");
  cmd->add_option("-c,--ctx-size", f->ctx_size, "Context size in tokens (default: min(4096, model maximum))")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-n,--n-predict", f->n_predict, "Tokens to generate (-1: until EOS or the context is full)");
  auto& s = f->sampling;
  f->temp_option = cmd->add_option("--temp", s.temperature, "Temperature (0: greedy)");
  f->sampling_options = {
      f->temp_option,
      cmd->add_option("--top-k", s.top_k, "Top-k sampling (0: off)"),
      cmd->add_option("--top-p", s.top_p, "Top-p (nucleus) sampling (1: off)"),
      cmd->add_option("--min-p", s.min_p, "Min-p sampling (0: off)"),
      cmd->add_option("--repeat-penalty", s.repetition_penalty, "Repetition penalty (1: off)"),
      cmd->add_option("--repeat-last-n", s.penalty_last_n, "Tokens the penalties look back at (-1: all)"),
      cmd->add_option("--frequency-penalty", s.frequency_penalty, "Frequency penalty (0: off)"),
      cmd->add_option("--presence-penalty", s.presence_penalty, "Presence penalty (0: off)"),
      cmd->add_option("-s,--seed", s.seed, "Random seed (same seed and settings, same text)"),
  };
  cmd->add_option("--stop", f->stop, "Stop string (repeatable)");
  cmd->add_flag("--ignore-eos", f->ignore_eos, "Keep generating past end-of-sequence tokens");
  cmd->add_flag("--no-verify", f->no_verify, "Skip reading every weight once at load (faster start, lazy paging)");
  add_no_mmap_flag(cmd, &f->no_mmap);
  cmd->add_option("--system", f->system, "System prompt");
  cmd->add_option("--think", f->think, "Thinking mode for models that have one: auto, on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  cmd->add_option("--chat-format", f->format, "Override the chat format: v3, r1, v3.1, v3.2");
  add_cache_type_flag(cmd, &f->cache_type_k);
  add_dtype_flag(cmd, &f->dtype);
}

void add_no_mmap_flag(CLI::App* cmd, bool* value) {
  cmd->add_flag("--no-mmap", *value,
                "Copy the weights into memory (huge pages) instead of mapping the files: slower start, the whole "
                "model in private RAM, faster decoding");
}

void add_cache_type_flag(CLI::App* cmd, std::string* value) {
  cmd->add_option("--cache-type-k,--ctk", *value,
                  "KV cache type (also -ctk, as in llama.cpp): f32 (default), bf16, fp8 (DeepSeek's FP8 latent "
                  "layout); MLA has one latent cache, so there is no --cache-type-v")
      ->check(CLI::IsMember({"f32", "bf16", "fp8"}));
}

Status apply_cache_type(const std::string& value, model::Model& m) {
  DSEEK_ASSIGN_OR_RETURN(const kv::CacheType type, kv::parse_cache_type(value));
  m.set_cache_type(type);
  return {};
}

void add_dtype_flag(CLI::App* cmd, std::string* value) {
  cmd->add_option("--dtype", *value,
                  "Compute type of the matrix products: f32 (default, reference precision) or bf16 (activations "
                  "rounded to bfloat16, float32 sums; faster where the CPU has AVX512_BF16); also float32, bfloat16")
      ->check(CLI::IsMember({"f32", "float32", "bf16", "bfloat16"}));
}

Status apply_dtype(const std::string& value) {
  DSEEK_ASSIGN_OR_RETURN(const cpu::ComputeType type, cpu::parse_compute_type(value));
  cpu::set_active_compute_type(type);
  return {};
}

Expected<std::string> resolve_model_dir(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("DSEEK_MODEL"); env && *env) return std::string(env);
  const std::string fallback = DSEEK_DEFAULT_MODEL;
  std::error_code ec;
  if (!fs::exists(fs::path(fallback) / "config.json", ec))
    return Status::errorf(
        "no model given (-m) and the default model {} does not exist (it ships in the repository; rebuild it "
        "with scripts/train_demo.sh --install)",
        fallback);
  return fallback;
}

Expected<Generation> setup_generation(GenerationFlags& f) {
  if (f.threads > 0) omp_set_num_threads(f.threads);
  DSEEK_RETURN_IF_ERROR(apply_dtype(f.dtype));
  DSEEK_ASSIGN_OR_RETURN(const std::string dir, resolve_model_dir(f.model));
  Generation g;
  if (f.lora.empty()) {
    DSEEK_ASSIGN_OR_RETURN(g.model, runtime::load_model(dir, {.verify = !f.no_verify, .progress = true, .mmap = !f.no_mmap}));
  } else {
    DSEEK_ASSIGN_OR_RETURN(train::AdaptedWeights adapted, train::load_weights_with_lora(dir, f.lora));
    g.lora_keep_alive = std::move(adapted.keep_alive);
    g.model = std::make_unique<model::Model>(std::move(adapted.weights));
  }
  DSEEK_RETURN_IF_ERROR(apply_cache_type(f.cache_type_k, *g.model));
  const model::ModelConfig& c = g.model->config();

  std::error_code ec;
  if (fs::exists(fs::path(dir) / "tokenizer.json", ec)) {
    DSEEK_ASSIGN_OR_RETURN(auto tok, tokenizer::Tokenizer::load(dir));
    g.tokenizer = std::move(tok);
    if (!f.format.empty()) {
      DSEEK_ASSIGN_OR_RETURN(g.format, tokenizer::chat_format_from_name(f.format));
    } else {
      DSEEK_ASSIGN_OR_RETURN(g.format, tokenizer::detect_chat_format(dir));
    }
  }

  // Sampling: defaults < generation_config.json < flags given on the command line.
  sample::SamplingParams from_flags = f.sampling;
  DSEEK_ASSIGN_OR_RETURN(sample::SamplingParams params, sample::load_generation_config(dir));
  for (CLI::Option* o : f.sampling_options) {
    if (o->count() == 0) continue;
    const std::string name = o->get_name();
    if (name == "--temp") params.temperature = from_flags.temperature;
    else if (name == "--top-k") params.top_k = from_flags.top_k;
    else if (name == "--top-p") params.top_p = from_flags.top_p;
    else if (name == "--min-p") params.min_p = from_flags.min_p;
    else if (name == "--repeat-penalty") params.repetition_penalty = from_flags.repetition_penalty;
    else if (name == "--repeat-last-n") params.penalty_last_n = from_flags.penalty_last_n;
    else if (name == "--frequency-penalty") params.frequency_penalty = from_flags.frequency_penalty;
    else if (name == "--presence-penalty") params.presence_penalty = from_flags.presence_penalty;
    else if (name == "-s" || name == "--seed") params.seed = from_flags.seed;
  }
  DSEEK_RETURN_IF_ERROR(sample::validate(params));
  g.options.sampling = params;
  g.options.max_tokens = f.n_predict;
  g.options.stop = f.stop;
  if (!f.ignore_eos) {
    for (int64_t id : c.eos_token_ids) g.options.eos_ids.push_back(static_cast<int32_t>(id));
    if (g.tokenizer && g.tokenizer->eos_id() >= 0) g.options.eos_ids.push_back(g.tokenizer->eos_id());
  }
  g.ctx_size = f.ctx_size > 0 ? f.ctx_size : std::min<int64_t>(4096, c.max_position_embeddings);
  g.thinking = f.think == "on" || (f.think == "auto" && g.format == tokenizer::ChatFormat::kR1);
  return g;
}

void AnswerPrinter::show(const tokenizer::ChatOutputParser::Delta& d) {
  if (!d.reasoning.empty() && !hide_reasoning_) {
    if (!in_reasoning_) std::fputs(tty_ ? "\x1b[2m" : "<think>\n", stdout);
    in_reasoning_ = true;
    std::fputs(d.reasoning.c_str(), stdout);
  }
  if (!d.content.empty()) {
    finish();
    std::fputs(d.content.c_str(), stdout);
  }
  for (const auto& call : d.tool_calls)
    std::fprintf(stdout, "\n[tool call] %s(%s)\n", call.name.c_str(), call.arguments.c_str());
  std::fflush(stdout);
}

void AnswerPrinter::finish() {
  if (in_reasoning_) std::fputs(tty_ ? "\x1b[0m\n" : "\n</think>\n", stdout);
  in_reasoning_ = false;
}

uint64_t peak_rss_bytes() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<uint64_t>(u.ru_maxrss) * 1024;
}

std::string generation_summary(const runtime::GenerateStats& s, runtime::FinishReason finish) {
  const int64_t fed = s.prompt_tokens - s.cached_tokens;
  return fmt::format(
      "prompt: {} tokens ({} cached) in {:.2f} s, {:.1f} tokens/s | generated: {} tokens in {:.2f} s, {:.1f} tokens/s "
      "| peak memory {:.0f} MB | finish: {}",
      s.prompt_tokens, s.cached_tokens, s.prompt_seconds, fed / std::max(s.prompt_seconds, 1e-9), s.generated_tokens,
      s.generate_seconds, s.generated_tokens / std::max(s.generate_seconds, 1e-9), peak_rss_bytes() / 1e6,
      finish == runtime::FinishReason::kContextFull ? "context full" : runtime::finish_reason_name(finish));
}

}  // namespace dseek::cli
