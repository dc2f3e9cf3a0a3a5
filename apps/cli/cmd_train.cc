// `dseek train --config MODEL_CONFIG.json --tokenizer DIR --data FILES... -o OUT_DIR`: trains a
// DeepSeek model from scratch (or from a trained checkpoint's weights with --init MODEL_DIR, or
// continues one with --resume DIR) on text/JSONL files, which
// are tokenized once into OUT_DIR/train.tok (reused while the inputs are unchanged). Writes
// OUT_DIR/step-N/ every --save-every steps and OUT_DIR/final/: Hugging Face directories that
// `dseek run -m` loads, plus trainer_state.safetensors for an exact --resume. The loop itself
// is train/trainer.h; this file is flags, data preparation, progress and the summary.
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "base/timer.h"
#include "bench/machine.h"
#include "bench/model_cost.h"
#include "commands.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"
#include "train/token_data.h"
#include "train/trainer.h"

namespace dseek::cli {

namespace fs = std::filesystem;

namespace {

struct TrainArgs {
  std::string config, tokenizer, out, resume, init, dtype = "f32";
  std::vector<std::string> data;
  train::TrainOptions o;
  int64_t eval_every = 0, eval_batches = 4, save_every = 0;
  int threads = 0;
  bool flops = false;
  CLI::App* cmd = nullptr;  // to tell the flags given from the defaults (--resume keeps the saved ones)
};

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t / 60) % 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

std::string rate(double tokens_per_second) {
  return tokens_per_second >= 1e3 ? fmt::format("{:.1f}k", tokens_per_second / 1e3)
                                  : fmt::format("{:.0f}", tokens_per_second);
}

bool is_token_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char magic[8] = {};
  const bool ok = std::fread(magic, 1, 8, f) == 8 && std::string(magic, 8) == "DSEEKTOK";
  std::fclose(f);
  return ok;
}

// --resume: the saved options, overridden by the flags given on this command line.
Status merge_resumed_options(TrainArgs* a) {
  const std::string state_path = (fs::path(a->resume) / "trainer_state.safetensors").string();
  DSEEK_ASSIGN_OR_RETURN(auto state, io::SafetensorsFile::open(state_path));
  auto it = state->metadata().find("options");
  if (it == state->metadata().end()) return Status::errorf("{}: metadata 'options' is missing", state_path);
  DSEEK_ASSIGN_OR_RETURN(train::TrainOptions saved, train::options_from_json(it->second, state_path));
  auto given = [&](const char* flag) { return a->cmd->count(flag) > 0; };
  train::TrainOptions& o = a->o;
  if (!given("--steps")) o.steps = saved.steps;
  if (!given("--batch")) o.batch = saved.batch;
  if (!given("--grad-accum")) o.grad_accum = saved.grad_accum;
  if (!given("--seq-len")) o.seq_len = saved.seq_len;
  if (!given("--lr")) o.lr = saved.lr;
  if (!given("--min-lr")) o.min_lr = saved.min_lr;
  if (!given("--warmup")) o.warmup = saved.warmup;
  if (!given("--weight-decay")) o.adam.weight_decay = saved.adam.weight_decay;
  if (!given("--clip")) o.clip = saved.clip;
  if (!given("--seed")) o.seed = saved.seed;
  if (!given("--heldout")) o.heldout_fraction = saved.heldout_fraction;
  if (!given("--dtype")) o.dtype = saved.dtype;
  if (!given("--mtp-weight")) o.mtp_weight = saved.mtp_weight;
  if (!given("--bias-update-speed")) o.bias_update_speed = saved.bias_update_speed;
  if (!given("--seq-aux-alpha")) o.seq_aux_alpha = saved.seq_aux_alpha;
  if (!given("--indexer-warmup-steps")) o.indexer_warmup_steps = saved.indexer_warmup_steps;
  if (!given("--indexer-loss-weight")) o.indexer_loss_weight = saved.indexer_loss_weight;
  o.adam.beta1 = saved.adam.beta1;
  o.adam.beta2 = saved.adam.beta2;
  o.adam.eps = saved.adam.eps;
  return {};
}

// The token file for --data: a prepared one as is, else OUT/train.tok, rebuilt only when the
// inputs or the tokenizer changed.
Expected<std::unique_ptr<train::TokenData>> prepare_data(const TrainArgs& a, const tokenizer::Tokenizer& tok) {
  if (a.data.size() == 1 && is_token_file(a.data[0])) return train::TokenData::open(a.data[0]);
  const uint64_t salt = tok.vocab_size() * 1000003ull + static_cast<uint64_t>(tok.eos_id() + 1);
  DSEEK_ASSIGN_OR_RETURN(uint64_t fingerprint, train::fingerprint_sources(a.data, salt));
  const std::string path = (fs::path(a.out) / "train.tok").string();
  std::error_code ec;
  if (fs::exists(path, ec)) {
    auto existing = train::TokenData::open(path);
    if (existing.ok() && (*existing)->fingerprint() == fingerprint) return existing;
  }
  if (tok.eos_id() < 0) return Status::errorf("{}: the tokenizer has no EOS token to separate documents", a.tokenizer);
  train::TokenizerHooks hooks;
  hooks.vocab_size = static_cast<int32_t>(tok.vocab_size());
  hooks.eos_id = tok.eos_id();
  hooks.encode = [&tok](std::string_view text) { return tok.encode(text); };
  Stopwatch clock;
  DSEEK_ASSIGN_OR_RETURN(train::TokenFileStats stats, train::build_token_file(a.data, hooks, fingerprint, path));
  std::fprintf(stderr, "dseek train: tokenized %lld documents into %lld tokens -> %s in %.1f s\n",
               static_cast<long long>(stats.documents), static_cast<long long>(stats.tokens), path.c_str(),
               clock.seconds());
  return train::TokenData::open(path);
}

Status run_train(TrainArgs a) {
  const int starts = !a.config.empty() + !a.resume.empty() + !a.init.empty();
  if (starts == 0) return Status::error("--config is required (or --init MODEL_DIR, or --resume DIR)");
  if (starts > 1) return Status::error("--config, --init and --resume are mutually exclusive: give one");
  if (!a.resume.empty()) DSEEK_RETURN_IF_ERROR(merge_resumed_options(&a));
  else a.o.dtype = a.dtype == "bf16" ? model::StoredDType::kBF16 : model::StoredDType::kF32;
  std::string config_json;  // checked before any tokenizing, so a bad config fails at once
  if (!a.config.empty() || !a.init.empty()) {
    const std::string path = a.config.empty() ? (fs::path(a.init) / "config.json").string() : a.config;
    DSEEK_ASSIGN_OR_RETURN(config_json, io::read_text_file(path));
    DSEEK_ASSIGN_OR_RETURN(model::ModelConfig config, model::parse_model_config(config_json, path));
    DSEEK_RETURN_IF_ERROR(train::check_train_options(config, a.o).with_context(path));
  }
  std::string tokenizer_dir = !a.tokenizer.empty() ? a.tokenizer : !a.resume.empty() ? a.resume : a.init;
  if (fs::is_regular_file(tokenizer_dir)) tokenizer_dir = fs::path(tokenizer_dir).parent_path().string();
  DSEEK_ASSIGN_OR_RETURN(tokenizer::Tokenizer tok, tokenizer::Tokenizer::load(tokenizer_dir));
  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec) return Status::errorf("{}: cannot create the output directory: {}", a.out, ec.message());

  DSEEK_ASSIGN_OR_RETURN(auto data, prepare_data(a, tok));
  DSEEK_ASSIGN_OR_RETURN(train::WindowSampler sampler,
                         train::WindowSampler::make(*data, a.o.seq_len, a.o.heldout_fraction, a.o.seed));
  std::unique_ptr<train::Trainer> trainer;
  if (!a.resume.empty()) {
    DSEEK_ASSIGN_OR_RETURN(trainer, train::Trainer::resume(a.resume, a.o, sampler));
  } else if (!a.init.empty()) {
    DSEEK_ASSIGN_OR_RETURN(trainer, train::Trainer::init(a.init, a.o, sampler));
  } else {
    auto created = train::Trainer::create(config_json, a.o, sampler);
    if (!created.ok()) return created.status().with_context(a.config);
    trainer = std::move(created).value();
  }
  if (static_cast<int64_t>(tok.vocab_size()) > trainer->config().vocab_size)
    return Status::errorf("{}: the tokenizer has {} ids but config.json's vocab_size is {}", tokenizer_dir,
                          tok.vocab_size(), trainer->config().vocab_size);
  if (trainer->steps_done() >= a.o.steps)
    return Status::errorf("{}: already at step {} of --steps {}", a.resume, trainer->steps_done(), a.o.steps);

  std::fprintf(stderr,
               "dseek train: %.2fM parameters%s, %lld train / %lld held-out tokens, batch %lld x %lld tokens "
               "(%lld micro-batches), %d threads, %s, from step %lld\n",
               trainer->parameter_count() / 1e6, trainer->trains_mtp() ? " (with MTP)" : "",
               static_cast<long long>(sampler.train_tokens()), static_cast<long long>(sampler.heldout_tokens()),
               static_cast<long long>(a.o.batch), static_cast<long long>(a.o.seq_len),
               static_cast<long long>(a.o.grad_accum), omp_get_max_threads(),
               a.o.dtype == model::StoredDType::kBF16 ? "bf16" : "f32", static_cast<long long>(trainer->steps_done()));

  const bool tty = isatty(STDERR_FILENO);
  const int64_t plain_every = std::max<int64_t>(1, a.o.steps / 20);
  Stopwatch clock;
  double seconds = 0, last_heldout = NAN, loss_ema = NAN;
  int64_t tokens = 0, first = trainer->steps_done();
  train::StepStats s;
  auto end_line = [&] { if (tty) std::fprintf(stderr, "\n"); };
  while (trainer->steps_done() < a.o.steps) {
    s = trainer->train_step();
    seconds += s.seconds;
    tokens += s.tokens;
    loss_ema = std::isnan(loss_ema) ? s.loss : 0.9 * loss_ema + 0.1 * s.loss;
    const int64_t step = s.step;
    const double tps = tokens / std::max(seconds, 1e-9);
    const double eta = seconds / static_cast<double>(step - first) * static_cast<double>(a.o.steps - step);
    std::string line = fmt::format("step {}/{} | loss {:.4f} | lr {:.2e} | {} tok/s | eta {}", step, a.o.steps,
                                   s.loss, s.lr, rate(tps), duration(eta));
    if (trainer->trains_mtp()) line += fmt::format(" | mtp {:.4f}", s.mtp_loss);
    if (trainer->config().has_indexer())
      line += fmt::format(" | idx {:.4f}{}", s.indexer_loss, s.indexer_warmup ? " (dense warm-up)" : "");
    if (s.max_over_mean_load > 0) line += fmt::format(" | load max/mean {:.2f}", s.max_over_mean_load);
    const bool eval = a.eval_every > 0 && (step % a.eval_every == 0 || step == a.o.steps);
    if (eval) {
      const train::Trainer::Heldout h = trainer->heldout(a.eval_batches * a.o.batch);
      last_heldout = h.loss;
      line += fmt::format(" | held-out {:.4f}", last_heldout);
      if (trainer->config().has_indexer()) line += fmt::format(" idx {:.4f}", h.indexer_loss);
    }
    if (tty) std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
    else if (eval || step % plain_every == 0 || step == a.o.steps) std::fprintf(stderr, "%s\n", line.c_str());
    if (eval && tty) std::fprintf(stderr, "\n");
    if (a.save_every > 0 && step % a.save_every == 0 && step < a.o.steps) {
      const std::string dir = (fs::path(a.out) / fmt::format("step-{}", step)).string();
      Status saved = trainer->save(dir, tokenizer_dir);
      if (!saved.ok()) {
        end_line();
        return saved;
      }
    }
  }
  end_line();
  if (std::isnan(last_heldout)) last_heldout = trainer->heldout_loss(a.eval_batches * a.o.batch);
  const std::string final_dir = (fs::path(a.out) / "final").string();
  DSEEK_RETURN_IF_ERROR(trainer->save(final_dir, tokenizer_dir));
  std::fprintf(stderr,
               "dseek train: %lld steps, %.2fM tokens in %s (%s tok/s); final loss %.4f (smoothed %.4f), held-out "
               "%.4f (ppl %.2f)%s -> %s\n",
               static_cast<long long>(trainer->steps_done() - first), tokens / 1e6, duration(clock.seconds()).c_str(),
               rate(tokens / std::max(seconds, 1e-9)).c_str(), s.loss, loss_ema, last_heldout, std::exp(last_heldout),
               s.max_over_mean_load > 0 ? fmt::format(", expert load max/mean {:.2f}", s.max_over_mean_load).c_str()
                                        : "",
               final_dir.c_str());
  if (a.flops) {
    // Training FLOPs per token = 3 x forward (backward ~ 2 x forward): the forward's matmuls
    // and causal attention over a seq_len window (bench/model_cost.h), with logits at every
    // position (prefill_flops counts the head once). The MTP module is not counted.
    const model::ModelConfig& c = trainer->config();
    const bench::PrefillFlops pf = bench::prefill_flops(c, a.o.seq_len, 0);
    const double forward = (pf.matmul + pf.attention) / static_cast<double>(a.o.seq_len) +
                           2.0 * static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size);
    const double achieved = 3.0 * forward * tokens / std::max(seconds, 1e-9);
    const bench::FmaResult peak = bench::measure_peak_fma(omp_get_max_threads(), 0.2, 3);
    std::fprintf(stderr,
                 "dseek train: %.3f GFLOP/token (3 x forward %.3f), %.2f GFLOP/s = %.2f%% of the measured peak "
                 "%.1f GFLOP/s (%s, %d threads)\n",
                 3.0 * forward / 1e9, forward / 1e9, achieved / 1e9, 100.0 * achieved / peak.flops_per_second,
                 peak.flops_per_second / 1e9, peak.isa.c_str(), peak.threads);
  }
  return {};
}

}  // namespace

void register_train(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand("train", "Train a DeepSeek model on text/JSONL files (AdamW, HF checkpoints)");
  auto a = std::make_shared<TrainArgs>();
  a->cmd = cmd;
  train::TrainOptions& o = a->o;
  cmd->add_option("--config", a->config, "config.json of the model to train from scratch");
  cmd->add_option("--init", a->init, "Start from this checkpoint's weights (any stored dtype, FP8 included) and "
                                     "config.json, with fresh optimizer state at step 0");
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer directory (tokenizer.json); copied into checkpoints");
  cmd->add_option("--data", a->data, "Training files: .txt (documents split on blank lines), .jsonl ({\"text\"}), "
                                     "or one prepared .tok file")->required();
  cmd->add_option("-o,--out", a->out, "Output directory (train.tok, step-N/, final/)")->required();
  cmd->add_option("--steps", o.steps, "Optimizer steps in the whole run")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", o.batch, "Sequences per optimizer step")->check(CLI::PositiveNumber);
  cmd->add_option("--seq-len", o.seq_len, "Tokens per sequence")->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--grad-accum", o.grad_accum, "Micro-batches per step (divides --batch)")->check(CLI::PositiveNumber);
  cmd->add_option("--lr", o.lr, "Peak learning rate")->check(CLI::PositiveNumber);
  cmd->add_option("--min-lr", o.min_lr, "Learning rate at the end of the cosine decay")->check(CLI::NonNegativeNumber);
  cmd->add_option("--warmup", o.warmup, "Linear warm-up steps")->check(CLI::NonNegativeNumber);
  cmd->add_option("--weight-decay", o.adam.weight_decay, "AdamW decoupled weight decay (not on norms/biases)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--clip", o.clip, "Global gradient-norm clip (0: off)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", o.seed, "Seed of the initialization and the data order");
  cmd->add_option("--heldout", o.heldout_fraction, "Fraction of the tokens held out for evaluation")
      ->check(CLI::Range(0.0, 0.9));
  cmd->add_option("--eval-every", a->eval_every, "Held-out loss every N steps (0: at the end only)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-batches", a->eval_batches, "Held-out batches (of --batch sequences) per evaluation")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--save-every", a->save_every, "Checkpoint OUT/step-N every N steps (0: final only)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--resume", a->resume, "Continue exactly from a checkpoint directory written by dseek train");
  cmd->add_option("--dtype", a->dtype, "Model weights: f32 or bf16 (master copies and AdamW state stay f32)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("--mtp-weight", o.mtp_weight, "MTP loss weight lambda (DeepSeek-V3: 0.3, later 0.1; 0: off)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--bias-update-speed", o.bias_update_speed, "Expert-bias update speed gamma (0: off)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seq-aux-alpha", o.seq_aux_alpha, "Sequence-wise balance loss alpha (0: off)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--indexer-warmup-steps", o.indexer_warmup_steps,
                  "V3.2: the first N steps train only the lightning indexer, with dense attention (default 0)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--indexer-loss-weight", o.indexer_loss_weight, "V3.2: weight of the indexer's KL loss (default 1)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--threads", a->threads, "Threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--flops", a->flops, "At the end, measure the peak FMA throughput and report the fraction reached");
  cmd->callback([=] {
    *run = [=] {
      if (a->threads > 0) omp_set_num_threads(a->threads);
      return exit_code(run_train(*a));
    };
  });
}

}  // namespace dseek::cli
