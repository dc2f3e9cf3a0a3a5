// `dseek tokenizer-train CORPUS... --vocab N -o DIR [--min-frequency F] [--threads T]
//  [--model-max-length L]`: learns a byte-level BPE with DeepSeek-V3's pre-tokenizer and special
// tokens and writes DIR/tokenizer.json + DIR/tokenizer_config.json (Hugging Face layout).
// --vocab is the total number of ids, special tokens included (the model's vocab_size).
// Progress goes to stderr (phase, merges done, speed) and ends with a one-line summary.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "base/check.h"
#include "base/timer.h"
#include "commands.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer_writer.h"

namespace dseek::cli {
namespace {

struct TrainArgs {
  std::vector<std::string> corpora;
  std::string out;
  size_t vocab = 16384;
  uint64_t min_frequency = 2;
  int threads = 0;
  size_t model_max_length = 131072;
};

// Peak resident memory of this process in MiB (Linux VmHWM), or -1 when unknown.
double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return -1;
}

void progress(const std::string& line) { std::fprintf(stderr, "tokenizer-train: %s\n", line.c_str()); }

int run_tokenizer_train(const TrainArgs& a) {
  using namespace tokenizer;
  const size_t n_special = deepseek_special_tokens().size();
  if (a.vocab < 256 + n_special)
    return fail(fmt::format("--vocab {} is too small: at least {} (256 byte tokens + {} special tokens)",
                            a.vocab, 256 + n_special, n_special));
  for (const std::string& path : a.corpora) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return fail(path + ": cannot open corpus file");
  }
  // Before the long part: an unwritable -o fails now, not after training.
  if (Status s = check_output_dir(a.out); !s.ok()) return fail("-o " + s.message());

  Stopwatch total;
  auto pre = PreTokenizer::from_json(nlohmann::json::parse(deepseek_v3_pre_tokenizer_json().dump()));
  DSEEK_CHECK(pre.ok() && pre->fast_path(), "the written pre-tokenizer must be DeepSeek-V3's");
  WordCounter counter(pre.value(), a.threads);
  for (const std::string& path : a.corpora) {
    Stopwatch sw;
    const uint64_t bytes0 = counter.bytes_counted(), pieces0 = counter.pieces_counted();
    if (Status s = counter.add_file(path); !s.ok()) return fail(s.message());
    const double mb = static_cast<double>(counter.bytes_counted() - bytes0) / 1e6;
    progress(fmt::format("counted {}: {:.1f} MB, {} pieces in {:.2f} s ({:.1f} MB/s)", path, mb,
                         counter.pieces_counted() - pieces0, sw.seconds(), mb / std::max(sw.seconds(), 1e-9)));
  }
  const double count_s = total.seconds();
  std::vector<WordCount> words = counter.words();
  progress(fmt::format("{} distinct words; merging up to {} tokens (min frequency {})", words.size(),
                       a.vocab - n_special, a.min_frequency));

  BpeTrainOptions opt;
  opt.max_tokens = a.vocab - n_special;
  opt.min_frequency = a.min_frequency;
  Stopwatch last_print;
  opt.on_progress = [&](const BpeProgress& p) {
    if (!p.finished && last_print.seconds() < 2.0) return;
    last_print.reset();
    progress(fmt::format("merges {} ({}/{} tokens), last pair count {}, {:.0f} merges/s", p.merges,
                         p.tokens, p.max_tokens, p.last_count, p.merges / std::max(p.seconds, 1e-9)));
  };
  Stopwatch merge_sw;
  auto bpe = learn_bpe(words, opt);
  if (!bpe.ok()) return fail(bpe.status().message());
  const double merge_s = merge_sw.seconds();
  words.clear();
  words.shrink_to_fit();

  const size_t ids = trained_vocab_size(bpe.value());
  if (Status s = write_tokenizer_files(a.out, make_tokenizer_files(bpe.value(), a.model_max_length)); !s.ok())
    return fail(s.message());
  std::string short_by;
  if (!bpe->reached_max_tokens)
    short_by = fmt::format(" (fewer than --vocab {}: no pair left with count >= {})", a.vocab, a.min_frequency);
  progress(fmt::format("wrote {}/tokenizer.json: {} ids{} = {} bytes + {} merges + {} special; "
                       "{:.1f} MB of text in {:.1f} s (counting {:.1f} s, merging {:.1f} s), peak memory {:.0f} MiB",
                       a.out, ids, short_by, 256, bpe->merges.size(), n_special,
                       static_cast<double>(counter.bytes_counted()) / 1e6, total.seconds(), count_s, merge_s,
                       peak_rss_mib()));
  return 0;
}

}  // namespace

void register_tokenizer_train(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand(
      "tokenizer-train", "Learn a byte-level BPE tokenizer (DeepSeek pre-tokenizer and special tokens)");
  auto a = std::make_shared<TrainArgs>();
  cmd->add_option("CORPUS", a->corpora, "UTF-8 text files")->required();
  cmd->add_option("--vocab", a->vocab, "Total ids, special tokens included")->capture_default_str();
  cmd->add_option("-o,--output", a->out, "Output directory (tokenizer.json, tokenizer_config.json)")->required();
  cmd->add_option("--min-frequency", a->min_frequency, "Never merge a pair seen fewer times")
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "Threads for counting words (0: all cores)")->capture_default_str();
  cmd->add_option("--model-max-length", a->model_max_length, "tokenizer_config.json model_max_length")
      ->capture_default_str();
  cmd->callback([=] { *run = [=] { return run_tokenizer_train(*a); }; });
}

}  // namespace dseek::cli
