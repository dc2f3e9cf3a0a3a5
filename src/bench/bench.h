// `dseek bench`: times prefill and decode of a model on random tokens and sets the figures
// against what this machine can do (measured by bench/machine.h) and what the model costs per
// token (bench/model_cost.h). The command-line wrapper is apps/cli/cmd_bench.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "bench/machine.h"
#include "bench/model_cost.h"
#include "model/deepseek.h"
#include "ops/product_clock.h"

namespace dseek::bench {

struct RunOptions {
  int64_t prompt = 512;   // prefill length (>= 1)
  int64_t decode = 128;   // tokens decoded one at a time after the prompt (>= 0)
  int64_t context = 0;    // tokens prefilled (untimed) before the prompt, for long-context runs
  bool random_context = false;  // context rows drawn at random (Session::append_random_rows), not computed
  int reps = 1;           // each measurement repeated; the fastest repetition is reported
  uint64_t seed = 1234;   // the random prompt and context token ids
  // Called right before the first repetition's decode (false) and right after the last one's
  // (true): `dseek bench` measures the weights' read bandwidth there, because this machine's
  // memory speed changes from minute to minute and an efficiency needs the speed of the same
  // minutes. Not timed.
  std::function<void(bool after)> around_decode;
  // Paired decode (`dseek bench --paired K`): the first repetition's decode runs in blocks of K
  // tokens, and probe() (a short read of the weights' memory, bytes/s, not timed) runs before the
  // first block and after each one, so that every block has a bandwidth measured on both sides
  // of it, seconds apart. 0: off.
  int64_t paired_block = 0;
  std::function<double()> probe;
};

// One block of a paired decode: its tokens, their time, and the probes around it.
struct DecodeBlock {
  int64_t tokens = 0;
  double seconds = 0;
  double bandwidth_before = 0, bandwidth_after = 0;  // bytes/s
};

struct RunResult {
  double context_seconds = 0;  // the untimed context prefill, for information
  double prefill_seconds = 0;  // best repetition
  double decode_seconds = 0;   // best repetition, all `decode` tokens
  double prefill_tokens_per_second = 0;
  double decode_tokens_per_second = 0;
  int64_t kv_cache_bytes = 0;  // the session's latent cache at its fullest, as stored
  std::string kv_cache_type;   // f32 | bf16 | fp8 (--cache-type-k)
  int64_t kv_bytes_per_token = 0;     // latent rows (+ V3.2 indexer keys) of one token, all layers
  int64_t kv_resident_bytes = 0;      // page storage that exists at the end (pages are lazy)
  std::vector<DecodeBlock> blocks;    // paired decode only (RunOptions::paired_block)
  // The matrix products inside the reported prefill and decode (ops/product_clock.h): their own
  // time, multiply-adds and weight bytes, for the split between products and everything else.
  ops::ProductTotals prefill_products, decode_products;
};

// The paired decode's summary: each block's efficiency is its weight bytes per second over the
// mean of the two probes around it. "Fast" blocks are those whose probes both reached 80% of
// the fastest probe of the run (this VM's memory switches between two speeds).
struct PairedSummary {
  int blocks = 0, fast_blocks = 0;
  double median = 0, min = 0, max = 0, fast_median = 0;  // efficiencies, 0..1
  double slowest_probe = 0, fastest_probe = 0;           // bytes/s
};

// After an untimed one-token warm-up in a scratch session. Prefill: one forward call over `prompt` random ids (logits of the last token only) after
// `context` random ids. Decode: `decode` forward calls of one token each, each fed the argmax
// of the previous logits (greedy; EOS is not a stop). Repetition r truncates the session back
// to the context. Errors: context + prompt + decode past max_position_embeddings.
Expected<RunResult> run_model(const model::Model& m, const RunOptions& o);

// Every figure `dseek bench` prints.
struct Report {
  std::string model_dir, architecture;
  int threads = 0;
  std::string compute_type = "f32";  // --dtype: f32 | bf16
  std::string kernels;               // cpu::describe_linear_kernels of the active family
  RunOptions options;
  RunResult run;
  double load_seconds = 0;
  bool weights_in_memory = false;   // --no-mmap: copied into anonymous memory, else mapped files
  uint64_t weight_bytes_total = 0;  // all tensors of the checkpoint
  std::map<std::string, uint64_t> bytes_by_dtype;  // of the checkpoint, FP8 scales included
  ActiveBytes active;
  PrefillFlops flops;
  BandwidthResult bandwidth;          // an anonymous 1 GiB buffer
  BandwidthResult weights_bandwidth;  // the model's own tensors: the better of the two below (0 bytes: not measured)
  BandwidthResult weights_bandwidth_before, weights_bandwidth_after;  // right before / after the decode
  FmaResult fma;
  uint64_t peak_rss_bytes = 0;  // after the model run, before the machine measurements
  double load_average_1m = -1;  // of the machine when the measurements ended

  // decode: tokens/s x active bytes per token / bandwidth; prefill: FLOP/s / peak FLOP/s.
  double decode_bytes_per_second() const;
  double decode_efficiency() const;          // against `bandwidth`
  double decode_weights_efficiency() const;  // against `weights_bandwidth`
  PairedSummary paired() const;              // all zero without a paired decode
  double prefill_flops_per_second() const;
  double prefill_efficiency() const;
  // The matrix products alone (RunResult::prefill_products, decode_products): prefill 2 x their
  // multiply-adds over their own time, against the peak; decode their weight bytes over their own
  // time, against the weights' read bandwidth.
  double prefill_product_efficiency() const;
  double decode_product_bytes_per_second() const;
  double decode_product_weights_efficiency() const;
};

std::string format_report(const Report& r);
std::string report_json(const Report& r);  // one JSON object, raw (unrounded) numbers

}  // namespace dseek::bench
