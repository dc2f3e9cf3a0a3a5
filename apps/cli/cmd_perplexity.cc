// `dseek perplexity [-m MODEL] --file TEXT [--ctx N] [--stride N] [--max-tokens N] [--json]`:
// mean next-token cross-entropy (nats) and perplexity of a model over a text file, in windows
// (runtime/perplexity.h), plus the evaluation speed. The text is tokenized as `dseek train`
// tokenizes a .txt (documents split on blank lines, EOS after each), so the number is
// comparable with the held-out loss that training prints.
#include <unistd.h>

#include <omp.h>

#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "generation_setup.h"
#include "io/mapped_file.h"
#include "runtime/loader.h"
#include "runtime/perplexity.h"
#include "tokenizer/tokenizer.h"

namespace dseek::cli {

namespace {

namespace fs = std::filesystem;

struct PerplexityArgs {
  std::string model, file;
  std::string cache_type_k = "f32";
  std::string dtype = "f32";
  int64_t ctx = 256, stride = 0, max_tokens = 0;
  int threads = 0;
  bool json = false, no_mmap = false;
};

Status run_perplexity(const PerplexityArgs& a) {
  if (a.stride > a.ctx) return Status::errorf("--stride {}: expected at most --ctx ({})", a.stride, a.ctx);
  DSEEK_ASSIGN_OR_RETURN(const std::string dir, resolve_model_dir(a.model));
  std::error_code ec;
  if (!fs::exists(fs::path(dir) / "tokenizer.json", ec))
    return Status::errorf("{}: no tokenizer.json in the model directory (needed to tokenize --file)", dir);
  // Read the text first: a wrong --file fails before the model is loaded.
  DSEEK_ASSIGN_OR_RETURN(const std::string text, io::read_text_file(a.file));
  DSEEK_ASSIGN_OR_RETURN(const tokenizer::Tokenizer tok, tokenizer::Tokenizer::load(dir));
  if (tok.eos_id() < 0) return Status::errorf("{}: the tokenizer has no EOS token to end documents", dir);
  auto tokens = runtime::tokenize_documents(text, tok.eos_id(), [&tok](std::string_view s) { return tok.encode(s); });
  if (!tokens.ok()) return tokens.status().with_context(a.file);
  if (a.max_tokens > 0 && static_cast<int64_t>(tokens->size()) > a.max_tokens) tokens->resize(a.max_tokens);
  if (tokens->size() < 2)
    return Status::errorf("{}: {} token(s) of text; at least 2 are needed to score one", a.file, tokens->size());

  const bool tty = isatty(STDERR_FILENO);
  // The loader's progress and summary only on a terminal: in logs and tests, stderr stays the
  // progress lines and at most one error line.
  DSEEK_ASSIGN_OR_RETURN(auto m, runtime::load_model(dir, {.verify = true, .progress = tty && !a.json, .mmap = !a.no_mmap}));
  DSEEK_RETURN_IF_ERROR(apply_cache_type(a.cache_type_k, *m));
  DSEEK_RETURN_IF_ERROR(apply_dtype(a.dtype));
  const int64_t vocab = m->config().vocab_size;
  for (size_t i = 0; i < tokens->size(); ++i)
    if ((*tokens)[i] >= vocab)
      return Status::errorf("{}: token {} (at {}) is outside the model's vocabulary of {}; tokenizer and model differ",
                            a.file, (*tokens)[i], i, vocab);
  runtime::PerplexityOptions o;
  o.ctx = a.ctx;
  o.stride = a.stride;
  int last_tenth = 0;
  o.progress = [&](int64_t done, int64_t total) {
    // A live line on a terminal, else a line every 10% (logs of long runs stay short).
    if (tty) {
      std::fprintf(stderr, "\rdseek perplexity: %lld/%lld tokens scored\x1b[K", static_cast<long long>(done),
                   static_cast<long long>(total));
    } else if (const int tenth = static_cast<int>(10 * done / total); tenth > last_tenth && done < total) {
      last_tenth = tenth;
      std::fprintf(stderr, "dseek perplexity: %d%% (%lld/%lld tokens)\n", 10 * tenth, static_cast<long long>(done),
                   static_cast<long long>(total));
    }
  };
  auto r = runtime::perplexity(*m, *tokens, o);
  if (tty) std::fprintf(stderr, "\r\x1b[K");
  if (!r.ok()) return r.status();  // flag errors (--ctx beyond the model's context)
  const int64_t stride = a.stride == 0 ? a.ctx : a.stride;
  const double tps = r->scored / std::max(r->seconds, 1e-9);
  if (a.json) {
    nlohmann::ordered_json j;
    j["model"] = dir;
    j["file"] = a.file;
    j["tokens"] = r->tokens;
    j["scored_tokens"] = r->scored;
    j["windows"] = r->windows;
    j["ctx"] = a.ctx;
    j["stride"] = stride;
    j["nll"] = r->nll;
    j["perplexity"] = r->perplexity;
    j["bits_per_byte"] = r->nll * static_cast<double>(r->scored) / std::log(2.0) / static_cast<double>(text.size());
    j["seconds"] = r->seconds;
    j["tokens_per_second"] = tps;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s: nll %.4f nats/token, perplexity %.3f over %lld of %lld tokens (%lld windows, ctx %lld, stride %lld), "
                "%.0f tok/s, %.1f s\n",
                a.file.c_str(), r->nll, r->perplexity, static_cast<long long>(r->scored),
                static_cast<long long>(r->tokens), static_cast<long long>(r->windows), static_cast<long long>(a.ctx),
                static_cast<long long>(stride), tps, r->seconds);
  }
  return {};
}

}  // namespace

void register_perplexity(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand("perplexity", "Mean next-token loss and perplexity of a model over a text file");
  auto a = std::make_shared<PerplexityArgs>();
  cmd->add_option("-m,--model", a->model, "Model directory with tokenizer.json (default: $DSEEK_MODEL, else the default model)");
  cmd->add_option("-f,--file", a->file, "UTF-8 text file (documents separated by blank lines)")->required();
  cmd->add_option("-c,--ctx", a->ctx, "Tokens per window")->check(CLI::Range(int64_t{2}, int64_t{1} << 24));
  cmd->add_option("--stride", a->stride, "Window start step (default: --ctx, non-overlapping windows)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-tokens", a->max_tokens, "Score only the first N tokens of the file (0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--threads", a->threads, "Threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", a->json, "Print the result as JSON");
  add_cache_type_flag(cmd, &a->cache_type_k);
  add_dtype_flag(cmd, &a->dtype);
  add_no_mmap_flag(cmd, &a->no_mmap);
  cmd->callback([=] {
    *run = [=] {
      if (a->threads > 0) omp_set_num_threads(a->threads);
      return exit_code(run_perplexity(*a));
    };
  });
}

}  // namespace dseek::cli
