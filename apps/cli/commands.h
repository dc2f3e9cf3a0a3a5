// Each `dseek` subcommand lives in its own cmd_<name>.cc and registers itself here.
// A command's callback returns the process exit code; errors are printed as one line on stderr.
#pragma once

#include <cstdio>
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "base/status.h"

namespace dseek::cli {

// Sets *exit_code when the subcommand runs.
using Runner = std::function<int()>;

// The one way a command reports failure: one "dseek: error: ..." line on stderr, exit code 1.
inline int fail(const std::string& message) {
  std::fprintf(stderr, "dseek: error: %s\n", message.c_str());
  return 1;
}
// 0 for success, else fail() with the status's message.
inline int exit_code(const Status& s) { return s.ok() ? 0 : fail(s.message()); }

void register_info(CLI::App& app, Runner* run);
void register_logits(CLI::App& app, Runner* run);
void register_grad(CLI::App& app, Runner* run);  // loss and gradients (training parity)
void register_tokenize(CLI::App& app, Runner* run);  // tokenize and detokenize
void register_chat_format(CLI::App& app, Runner* run);
void register_init(CLI::App& app, Runner* run);
void register_run(CLI::App& app, Runner* run);
void register_chat(CLI::App& app, Runner* run);
void register_bench(CLI::App& app, Runner* run);
void register_serve(CLI::App& app, Runner* run);  // OpenAI-compatible HTTP server
void register_tokenizer_train(CLI::App& app, Runner* run);  // learn a BPE tokenizer
void register_train(CLI::App& app, Runner* run);  // train a model (AdamW, HF checkpoints)
void register_finetune(CLI::App& app, Runner* run);  // fine-tune on chats (full or LoRA)
void register_perplexity(CLI::App& app, Runner* run);  // held-out loss and perplexity of a text file
void register_quantize(CLI::App& app, Runner* run);  // int8/int4 group-quantized copy of a model

}  // namespace dseek::cli
