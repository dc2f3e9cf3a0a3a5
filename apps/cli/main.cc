// dseek: the command-line entry point. Thin: parses flags and calls into the libraries.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "base/log.h"
#include "commands.h"

namespace {

// llama.cpp spells some long options with one dash and several letters ("-ctk fp8"), which
// CLI11 cannot declare; they are rewritten to dseek's names before parsing. Only whole words
// are rewritten (a value that happens to read "-ctk" after "-p" stays a value: CLI11 takes the
// next word as -p's value either way, and "-ctk" is not a prompt anyone types).
std::vector<std::string> with_llama_spellings(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "-ctk") args[i] = "--cache-type-k";
    else if (args[i].rfind("-ctk=", 0) == 0) args[i] = "--cache-type-k=" + args[i].substr(5);
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dseek: run and train DeepSeek-architecture models on your own machine"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "dseek 0.1.0");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Print progress and details on stderr");

  dseek::cli::Runner run;
  dseek::cli::register_info(app, &run);
  dseek::cli::register_logits(app, &run);
  dseek::cli::register_grad(app, &run);
  dseek::cli::register_tokenize(app, &run);
  dseek::cli::register_chat_format(app, &run);
  dseek::cli::register_init(app, &run);
  dseek::cli::register_run(app, &run);
  dseek::cli::register_chat(app, &run);
  dseek::cli::register_bench(app, &run);
  dseek::cli::register_serve(app, &run);
  dseek::cli::register_tokenizer_train(app, &run);
  dseek::cli::register_train(app, &run);
  dseek::cli::register_finetune(app, &run);
  dseek::cli::register_perplexity(app, &run);
  dseek::cli::register_quantize(app, &run);

  try {
    std::vector<std::string> args = with_llama_spellings(argc, argv);
    std::vector<char*> arg_ptrs;
    for (std::string& a : args) arg_ptrs.push_back(a.data());
    app.parse(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (verbose) dseek::set_log_level(dseek::LogLevel::kInfo);
  try {
    return run ? run() : 1;
  } catch (const std::exception& e) {
    // Library code reports bad input as Status; reaching here means an unexpected failure
    // (e.g. out of memory). Still one line and a non-zero exit, never a crash.
    return dseek::cli::fail(e.what());
  }
}
