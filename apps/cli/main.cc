// dseek: the command-line entry point. Thin: parses flags and calls into the libraries.
#include <cstdio>
#include <exception>

#include "base/log.h"
#include "commands.h"

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
    app.parse(argc, argv);
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
