// `dseek finetune -m MODEL --data chat.jsonl -o OUT [--lora RANK]`: fine-tunes an existing
// checkpoint on OpenAI-format conversations, the loss on assistant turns only, in the model's
// chat format. With --lora the base stays frozen (FP8 or BF16 as stored) and OUT is a PEFT
// adapter directory for `dseek run --lora OUT`; --merge (or full fine-tuning) writes a whole
// checkpoint instead. The loop is train/finetune.h; this file is flags, progress and summary.
#include <omp.h>

#include <cstdio>
#include <filesystem>

#include "base/timer.h"
#include "commands.h"
#include "generation_setup.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"
#include "train/chat_data.h"
#include "train/finetune.h"

namespace dseek::cli {

namespace fs = std::filesystem;

namespace {

struct FinetuneArgs {
  std::string model, data, out, targets = "all", format;
  train::FinetuneOptions o;
  int64_t epochs = 1, steps = 0;
  std::string schedule = "cosine";
  bool merge = false;
  int threads = 0;
};

int run_finetune_command(FinetuneArgs& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  if (a.merge && a.o.lora_rank == 0) return fail("--merge needs --lora RANK (full fine-tuning always writes a checkpoint)");
  a.o.cosine = a.schedule == "cosine";
  if (a.epochs < 1) return fail(fmt::format("--epochs {}: must be at least 1", a.epochs));
  Expected<uint32_t> targets = train::lora_targets_from_name(a.targets);
  if (!targets.ok()) return fail(targets.status().message());
  a.o.lora_targets = targets.value();
  Expected<std::string> dir = resolve_model_dir(a.model);
  if (!dir.ok()) return fail(dir.status().message());
  if (!fs::exists(fs::path(dir.value()) / "tokenizer.json"))
    return fail(fmt::format("{}/tokenizer.json: missing (fine-tuning renders chats with the model's tokenizer)", dir.value()));
  Expected<tokenizer::Tokenizer> tok = tokenizer::Tokenizer::load(dir.value());
  if (!tok.ok()) return fail(tok.status().message());
  Expected<tokenizer::ChatFormat> format =
      a.format.empty() ? tokenizer::detect_chat_format(dir.value()) : tokenizer::chat_format_from_name(a.format);
  if (!format.ok()) return fail(format.status().message());
  Expected<std::vector<train::ChatExample>> data = train::load_chat_jsonl(a.data, tok.value(), format.value());
  if (!data.ok()) return fail(data.status().message());

  Expected<std::unique_ptr<train::Finetuner>> ft = train::Finetuner::create(dir.value(), a.o);
  if (!ft.ok()) return fail(ft.status().message());
  train::Finetuner& f = *ft.value();
  int64_t masked = 0;
  for (const auto& ex : data.value())
    for (uint8_t m : ex.loss_mask) masked += m;
  const int64_t n_conv = static_cast<int64_t>(data.value().size());
  const int64_t steps = a.steps > 0 ? a.steps : (a.epochs * n_conv + a.o.batch - 1) / a.o.batch;
  std::fprintf(stderr, "finetune: %s, %zu conversations (%lld assistant tokens), %s, %lld trainable parameters, %lld steps\n",
               tokenizer::chat_format_name(format.value()), data.value().size(), static_cast<long long>(masked),
               f.lora() ? fmt::format("LoRA r={} alpha={:g}", f.adapters()->rank(), f.adapters()->alpha()).c_str()
                        : "full",
               static_cast<long long>(f.trainable_parameters()), static_cast<long long>(steps));

  auto mean_loss = [&]() -> Expected<double> {
    double sum = 0;
    for (const auto& ex : data.value()) {
      DSEEK_ASSIGN_OR_RETURN(const double l, f.loss(ex));
      sum += l;
    }
    return sum / static_cast<double>(data.value().size());
  };
  Expected<double> before = mean_loss();
  if (!before.ok()) return fail(before.status().message());
  Stopwatch clock;
  const Status st = train::run_finetune(f, data.value(), steps, a.o.seed, [&](const train::FinetuneProgress& p) {
    if (p.step == p.total || p.step % 10 == 0 || p.step == 1)
      std::fprintf(stderr, "step %lld/%lld  loss %.4f  (line %lld)  %.1f s\n", static_cast<long long>(p.step),
                   static_cast<long long>(p.total), p.loss, static_cast<long long>(p.line), clock.seconds());
  });
  if (!st.ok()) return fail(st.message());
  Expected<double> after = mean_loss();
  if (!after.ok()) return fail(after.status().message());
  if (Status s = f.save(a.out, a.merge); !s.ok()) return fail(s.message());
  std::printf("loss on the assistant turns: %.4f -> %.4f; wrote %s (%s)\n", before.value(), after.value(), a.out.c_str(),
              f.lora() && !a.merge ? "LoRA adapter" : "checkpoint");
  return 0;
}

}  // namespace

void register_finetune(CLI::App& app, Runner* run) {
  auto a = std::make_shared<FinetuneArgs>();
  CLI::App* cmd = app.add_subcommand("finetune", "Fine-tune a model on chat conversations (full or LoRA)");
  cmd->add_option("-m,--model", a->model, "Base model directory (default: $DSEEK_MODEL, else the project's default model)");
  cmd->add_option("--data", a->data, "JSONL of conversations in OpenAI message format")->required();
  cmd->add_option("-o,--output", a->out, "Output: LoRA adapter directory, or a checkpoint (full / --merge)")->required();
  cmd->add_option("--lora", a->o.lora_rank, "LoRA rank (0 or absent: full fine-tuning)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--lora-alpha", a->o.lora_alpha, "LoRA alpha; scale = alpha / rank (default 2 x rank)");
  cmd->add_option("--lora-targets", a->targets, "Adapted linears: attn, experts or all (default all)");
  cmd->add_flag("--merge", a->merge, "Write the base with the adapters merged in (float32 adapted tensors)");
  auto* epochs = cmd->add_option("--epochs", a->epochs, "Passes over the data (default 1)");
  cmd->add_option("--steps", a->steps, "Optimizer steps of --batch conversations each (overrides --epochs)")
      ->check(CLI::PositiveNumber)
      ->excludes(epochs);
  cmd->add_option("--lr", a->o.lr, "Peak learning rate (default 1e-3 LoRA, 1e-4 full)")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", a->o.batch, "Conversations per optimizer step, gradients averaged (default 1)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", a->o.warmup, "Linear learning-rate warm-up steps (default 0)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--lr-schedule", a->schedule, "After warm-up: cosine (decay to lr/10 at the last step, default) or constant")
      ->check(CLI::IsMember({"cosine", "constant"}));
  cmd->add_option("--seed", a->o.seed, "Adapter initialization and data order");
  cmd->add_option("--chat-format", a->format, "Chat format override: v3, r1, v3.1, v3.2");
  cmd->add_option("-t,--threads", a->threads, "Threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->callback([run, a] { *run = [a] { return run_finetune_command(*a); }; });
}

}  // namespace dseek::cli
