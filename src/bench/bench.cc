#include "bench/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "base/timer.h"

namespace dseek::bench {

namespace {

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = pick(rng);
  return ids;
}

int32_t argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

double ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

std::string human(double v, const char* unit) {
  const char* prefixes[] = {"", "K", "M", "G", "T", "P"};
  int i = 0;
  while (v >= 1000.0 && i < 5) {
    v /= 1000.0;
    ++i;
  }
  return fmt::format("{:.3g} {}{}", v, prefixes[i], unit);
}

}  // namespace

Expected<RunResult> run_model(const model::Model& m, const RunOptions& o) {
  const model::ModelConfig& c = m.config();
  if (o.prompt < 1) return Status::errorf("bench: the prompt needs at least 1 token (-p {})", o.prompt);
  if (o.decode < 0 || o.context < 0) return Status::error("bench: -n and --ctx must not be negative");
  const int64_t total = o.context + o.prompt + o.decode;
  if (total > c.max_position_embeddings)
    return Status::errorf("bench: --ctx {} + -p {} + -n {} = {} tokens, past the model's max_position_embeddings {}",
                          o.context, o.prompt, o.decode, total, c.max_position_embeddings);
  std::mt19937_64 rng(o.seed);
  const std::vector<int32_t> context = random_tokens(rng, o.context, c.vocab_size);
  const std::vector<int32_t> prompt = random_tokens(rng, o.prompt, c.vocab_size);

  RunResult r;
  std::vector<float> logits;
  const model::ForwardOptions fwd;  // automatic attention form, last-token logits
  {
    // Warm-up, untimed: one token in a scratch session starts the OpenMP threads and touches
    // whatever the first forward call initializes, so that the first repetition is not slower.
    auto scratch = m.new_session(1);
    const int32_t first = prompt.front();
    DSEEK_RETURN_IF_ERROR(m.forward(*scratch, std::span<const int32_t>(&first, 1), fwd, &logits));
  }
  auto session = m.new_session(total);
  if (!context.empty()) {
    Stopwatch clock;
    if (o.random_context) {
      DSEEK_RETURN_IF_ERROR(session->append_random_rows(context, o.seed));
    } else {
      DSEEK_RETURN_IF_ERROR(m.forward(*session, context, fwd, &logits));
    }
    r.context_seconds = clock.seconds();
  }
  r.prefill_seconds = r.decode_seconds = std::numeric_limits<double>::infinity();
  ops::set_product_clock(true);
  struct ClockOff {
    ~ClockOff() { ops::set_product_clock(false); }
  } clock_off;
  for (int rep = 0; rep < std::max(o.reps, 1); ++rep) {
    session->truncate(o.context);
    ops::reset_product_totals();
    Stopwatch prefill;
    DSEEK_RETURN_IF_ERROR(m.forward(*session, prompt, fwd, &logits));
    const double prefill_seconds = prefill.seconds();
    if (prefill_seconds < r.prefill_seconds) r.prefill_products = ops::product_totals();
    r.prefill_seconds = std::min(r.prefill_seconds, prefill_seconds);
    if (rep == 0 && o.around_decode) o.around_decode(false);
    const bool paired = rep == 0 && o.paired_block > 0 && o.probe;
    double bandwidth = paired ? o.probe() : 0.0;
    double decode_seconds = 0;  // the probes between blocks are not decode time
    ops::reset_product_totals();
    for (int64_t done = 0; done < o.decode;) {
      const int64_t k = paired ? std::min(o.paired_block, o.decode - done) : o.decode - done;
      Stopwatch block;
      for (int64_t i = 0; i < k; ++i) {
        const int32_t next = argmax(logits);
        DSEEK_RETURN_IF_ERROR(m.forward(*session, std::span<const int32_t>(&next, 1), fwd, &logits));
      }
      const double seconds = block.seconds();
      decode_seconds += seconds;
      done += k;
      if (paired) {
        const double after = o.probe();
        r.blocks.push_back({k, seconds, bandwidth, after});
        bandwidth = after;
      }
    }
    if (decode_seconds < r.decode_seconds) r.decode_products = ops::product_totals();
    r.decode_seconds = std::min(r.decode_seconds, decode_seconds);
    if (rep + 1 == std::max(o.reps, 1) && o.around_decode) o.around_decode(true);
    r.kv_cache_bytes = std::max(r.kv_cache_bytes, session->length() * session->cache().bytes_per_token());
  }
  r.kv_cache_type = std::string(kv::cache_type_name(session->cache().cache_type()));
  r.kv_bytes_per_token = session->cache().bytes_per_token();
  r.kv_resident_bytes = session->cache().pool().resident_bytes();
  r.prefill_tokens_per_second = ratio(static_cast<double>(o.prompt), r.prefill_seconds);
  r.decode_tokens_per_second = o.decode > 0 ? ratio(static_cast<double>(o.decode), r.decode_seconds) : 0.0;
  if (o.decode == 0) r.decode_seconds = 0;
  return r;
}

double Report::decode_bytes_per_second() const {
  return run.decode_tokens_per_second * static_cast<double>(active.total());
}
double Report::decode_efficiency() const { return ratio(decode_bytes_per_second(), bandwidth.bytes_per_second); }
double Report::decode_weights_efficiency() const {
  return ratio(decode_bytes_per_second(), weights_bandwidth.bytes_per_second);
}
PairedSummary Report::paired() const {
  PairedSummary p;
  const std::vector<DecodeBlock>& blocks = run.blocks;
  if (blocks.empty()) return p;
  p.slowest_probe = std::numeric_limits<double>::infinity();
  for (const DecodeBlock& b : blocks)
    for (const double bw : {b.bandwidth_before, b.bandwidth_after})
      p.slowest_probe = std::min(p.slowest_probe, bw), p.fastest_probe = std::max(p.fastest_probe, bw);
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n == 0 ? 0.0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  };
  std::vector<double> all, fast;
  for (const DecodeBlock& b : blocks) {
    const double e = ratio(static_cast<double>(b.tokens) * static_cast<double>(active.total()) / b.seconds,
                           (b.bandwidth_before + b.bandwidth_after) / 2);
    all.push_back(e);
    if (std::min(b.bandwidth_before, b.bandwidth_after) >= 0.8 * p.fastest_probe) fast.push_back(e);
  }
  p.blocks = static_cast<int>(all.size());
  p.fast_blocks = static_cast<int>(fast.size());
  p.median = median(all);
  p.fast_median = median(fast);
  p.min = *std::min_element(all.begin(), all.end());
  p.max = *std::max_element(all.begin(), all.end());
  return p;
}

double Report::prefill_flops_per_second() const { return ratio(flops.total(), run.prefill_seconds); }
double Report::prefill_efficiency() const { return ratio(prefill_flops_per_second(), fma.flops_per_second); }
double Report::prefill_product_efficiency() const {
  return ratio(ratio(2 * run.prefill_products.macs, run.prefill_products.seconds), fma.flops_per_second);
}
double Report::decode_product_bytes_per_second() const {
  return ratio(run.decode_products.weight_bytes, run.decode_products.seconds);
}
double Report::decode_product_weights_efficiency() const {
  return ratio(decode_product_bytes_per_second(), weights_bandwidth.bytes_per_second);
}

std::string format_report(const Report& r) {
  const RunOptions& o = r.options;
  std::string dtypes;
  for (const auto& [dtype, bytes] : r.bytes_by_dtype)
    dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", dtype, human(static_cast<double>(bytes), "B"));
  std::string s;
  s += fmt::format("model:       {} ({}), weights {}, {}, loaded in {:.1f} s\n", r.model_dir, r.architecture, dtypes,
                   r.weights_in_memory ? "copied into memory (--no-mmap)" : "mapped from the files", r.load_seconds);
  s += fmt::format("threads:     {}, compute {}, kernels {}\n", r.threads, r.compute_type, r.kernels);
  if (o.context > 0)
    s += fmt::format("context:     {} tokens {} first ({:.2f} s, not timed below)\n", o.context,
                     o.random_context ? "of random cache rows written" : "prefilled", r.run.context_seconds);
  s += fmt::format("prefill:     {:>10.2f} tokens/s   {} tokens in {:.3f} s (best of {})\n",
                   r.run.prefill_tokens_per_second, o.prompt, r.run.prefill_seconds, std::max(o.reps, 1));
  s += fmt::format("decode:      {:>10.2f} tokens/s   {} tokens in {:.3f} s, {:.1f} ms/token, after {} tokens\n",
                   r.run.decode_tokens_per_second, o.decode, r.run.decode_seconds,
                   o.decode > 0 ? 1e3 * r.run.decode_seconds / static_cast<double>(o.decode) : 0.0,
                   o.context + o.prompt);
  s += fmt::format("active weight bytes / token: {} ({} bytes: non-expert {}, routed experts {}, embedding row {}; "
                   "FP8 scales {})\n",
                   human(static_cast<double>(r.active.total()), "B"), r.active.total(),
                   human(static_cast<double>(r.active.non_expert), "B"), human(static_cast<double>(r.active.routed), "B"),
                   human(static_cast<double>(r.active.embedding_row), "B"),
                   human(static_cast<double>(r.active.scales), "B"));
  s += fmt::format("prefill FLOPs: {}FLOP ({} matmul = {} x 2 x {} params/token, {} attention, {} lm_head)\n",
                   human(r.flops.total(), ""), human(r.flops.matmul, ""), o.prompt,
                   human(r.flops.matmul_params_per_token, ""), human(r.flops.attention, ""), human(r.flops.lm_head, ""));
  s += fmt::format("memory read bandwidth: {:.2f} GB/s ({} threads, {:.2f} GiB buffer, best of {})\n",
                   r.bandwidth.bytes_per_second / 1e9, r.bandwidth.threads,
                   static_cast<double>(r.bandwidth.buffer_bytes) / (1024.0 * 1024 * 1024), r.bandwidth.passes);
  if (r.weights_bandwidth.buffer_bytes > 0)
    s += fmt::format("weights read bandwidth: {:.2f} GB/s (the model's {} of tensors, {} threads, best of {} "
                     "passes: {:.2f} GB/s right before the decode, {:.2f} GB/s right after)\n",
                     r.weights_bandwidth.bytes_per_second / 1e9,
                     human(static_cast<double>(r.weights_bandwidth.buffer_bytes), "B"), r.weights_bandwidth.threads,
                     r.weights_bandwidth.passes, r.weights_bandwidth_before.bytes_per_second / 1e9,
                     r.weights_bandwidth_after.bytes_per_second / 1e9);
  s += fmt::format("peak FP32 FMA:         {:.1f} GFLOP/s ({}, {} threads, best of {})\n", r.fma.flops_per_second / 1e9,
                   r.fma.isa, r.fma.threads, r.fma.runs);
  s += fmt::format("decode efficiency:     {:.2f}% ({:.2f} tokens/s x {} = {:.2f} GB/s of {:.2f} GB/s)\n",
                   100 * r.decode_efficiency(), r.run.decode_tokens_per_second,
                   human(static_cast<double>(r.active.total()), "B"), r.decode_bytes_per_second() / 1e9,
                   r.bandwidth.bytes_per_second / 1e9);
  if (r.weights_bandwidth.buffer_bytes > 0)
    s += fmt::format("decode efficiency against the weights' own memory: {:.2f}% ({:.2f} GB/s of {:.2f} GB/s)\n",
                     100 * r.decode_weights_efficiency(), r.decode_bytes_per_second() / 1e9,
                     r.weights_bandwidth.bytes_per_second / 1e9);
  if (const PairedSummary p = r.paired(); p.blocks > 0)
    s += fmt::format("paired decode: median {:.1f}% (range {:.1f}-{:.1f}%) over {} blocks of {} tokens, each against "
                     "the mean of the weights' read bandwidth measured right before and after it ({:.1f}-{:.1f} "
                     "GB/s); the {} blocks with both reads >= 80% of the fastest: median {:.1f}%\n",
                     100 * p.median, 100 * p.min, 100 * p.max, p.blocks, o.paired_block, p.slowest_probe / 1e9,
                     p.fastest_probe / 1e9, p.fast_blocks, 100 * p.fast_median);
  if (const ops::ProductTotals& d = r.run.decode_products; o.decode > 0 && d.calls > 0) {
    const double tokens = static_cast<double>(o.decode);
    s += fmt::format("decode matrix products: {:.1f} of {:.1f} ms a token ({:.0f}%), {} products streaming {} of "
                     "weights a token at {:.2f} GB/s",
                     1e3 * d.seconds / tokens, 1e3 * r.run.decode_seconds / tokens,
                     100 * ratio(d.seconds, r.run.decode_seconds), static_cast<double>(d.calls) / tokens,
                     human(d.weight_bytes / tokens, "B"), r.decode_product_bytes_per_second() / 1e9);
    if (r.weights_bandwidth.buffer_bytes > 0)
      s += fmt::format(" ({:.1f}% of the weights' read bandwidth)", 100 * r.decode_product_weights_efficiency());
    s += "\n";
  }
  s += fmt::format("prefill efficiency:    {:.2f}% ({:.2f} GFLOP/s of {:.1f} GFLOP/s)\n", 100 * r.prefill_efficiency(),
                   r.prefill_flops_per_second() / 1e9, r.fma.flops_per_second / 1e9);
  if (const ops::ProductTotals& p = r.run.prefill_products; p.calls > 0)
    s += fmt::format("prefill matrix products: {:.3f} of {:.3f} s ({:.0f}%), {}FLOP in {} products at {:.2f} GFLOP/s "
                     "= {:.2f}% of peak FMA\n",
                     p.seconds, r.run.prefill_seconds, 100 * ratio(p.seconds, r.run.prefill_seconds),
                     human(2 * p.macs, ""), p.calls, ratio(2 * p.macs, p.seconds) / 1e9,
                     100 * r.prefill_product_efficiency());
  s += fmt::format("peak RSS:    {} (weights {}, KV cache {})\n", human(static_cast<double>(r.peak_rss_bytes), "B"),
                   human(static_cast<double>(r.weight_bytes_total), "B"),
                   human(static_cast<double>(r.run.kv_cache_bytes), "B"));
  s += fmt::format("KV cache:    {}, {} bytes/token (all layers, indexer keys included), {} resident (pages are "
                   "allocated as they fill)\n",
                   r.run.kv_cache_type, r.run.kv_bytes_per_token, human(static_cast<double>(r.run.kv_resident_bytes), "B"));
  if (r.load_average_1m >= 0) s += fmt::format("load average (1 min): {:.2f}\n", r.load_average_1m);
  s += fmt::format("summary: decode {:.2f} tok/s = {:.1f}% of {:.1f} GB/s ({:.1f}% of the weights' {:.1f} GB/s); prefill {:.1f} tok/s = {:.1f}% of {:.0f} "
                   "GFLOP/s; peak RSS {}\n",
                   r.run.decode_tokens_per_second, 100 * r.decode_efficiency(), r.bandwidth.bytes_per_second / 1e9,
                   100 * r.decode_weights_efficiency(), r.weights_bandwidth.bytes_per_second / 1e9,
                   r.run.prefill_tokens_per_second, 100 * r.prefill_efficiency(), r.fma.flops_per_second / 1e9,
                   human(static_cast<double>(r.peak_rss_bytes), "B"));
  if (const PairedSummary p = r.paired(); p.blocks > 0) {
    s.pop_back();  // the summary stays one line
    s += fmt::format("; paired decode {:.1f}% (fast-memory blocks {:.1f}%, {} of {})\n", 100 * p.median,
                     100 * p.fast_median, p.fast_blocks, p.blocks);
  }
  return s;
}

std::string report_json(const Report& r) {
  const RunOptions& o = r.options;
  nlohmann::json j = {
      {"model", r.model_dir},
      {"architecture", r.architecture},
      {"threads", r.threads},
      {"prompt_tokens", o.prompt},
      {"decode_tokens", o.decode},
      {"context_tokens", o.context},
      {"context_fill", o.random_context ? "random" : "compute"},
      {"reps", std::max(o.reps, 1)},
      {"seed", o.seed},
      {"load_seconds", r.load_seconds},
      {"weights_memory", r.weights_in_memory ? "anonymous" : "mmap"},
      {"context_seconds", r.run.context_seconds},
      {"prefill_seconds", r.run.prefill_seconds},
      {"prefill_tokens_per_s", r.run.prefill_tokens_per_second},
      {"decode_seconds", r.run.decode_seconds},
      {"decode_tokens_per_s", r.run.decode_tokens_per_second},
      {"active_bytes_per_token", r.active.total()},
      {"active_bytes_non_expert", r.active.non_expert},
      {"active_bytes_routed", r.active.routed},
      {"active_bytes_embedding_row", r.active.embedding_row},
      {"active_bytes_fp8_scales", r.active.scales},
      {"prefill_flops", r.flops.total()},
      {"prefill_flops_matmul", r.flops.matmul},
      {"prefill_flops_attention", r.flops.attention},
      {"prefill_flops_lm_head", r.flops.lm_head},
      {"matmul_params_per_token", r.flops.matmul_params_per_token},
      {"prefill_flops_per_s", r.prefill_flops_per_second()},
      {"decode_bytes_per_s", r.decode_bytes_per_second()},
      {"mem_read_bandwidth_bytes_per_s", r.bandwidth.bytes_per_second},
      {"mem_read_buffer_bytes", r.bandwidth.buffer_bytes},
      {"mem_read_passes", r.bandwidth.passes},
      {"peak_fma_flops_per_s", r.fma.flops_per_second},
      {"fma_isa", r.fma.isa},
      {"decode_efficiency", r.decode_efficiency()},
      {"weights_read_bytes_per_s", r.weights_bandwidth.bytes_per_second},
      {"weights_read_bytes", r.weights_bandwidth.buffer_bytes},
      {"weights_read_bytes_per_s_before_decode", r.weights_bandwidth_before.bytes_per_second},
      {"weights_read_bytes_per_s_after_decode", r.weights_bandwidth_after.bytes_per_second},
      {"decode_weights_efficiency", r.decode_weights_efficiency()},
      {"prefill_efficiency", r.prefill_efficiency()},
      {"peak_rss_bytes", r.peak_rss_bytes},
      {"weight_bytes_total", r.weight_bytes_total},
      {"weight_bytes_by_dtype", r.bytes_by_dtype},
      {"kv_cache_bytes", r.run.kv_cache_bytes},
      {"kv_cache_type", r.run.kv_cache_type},
      {"compute_type", r.compute_type},
      {"kernels", r.kernels},
      {"kv_bytes_per_token", r.run.kv_bytes_per_token},
      {"kv_resident_bytes", r.run.kv_resident_bytes},
      {"load_average_1m", r.load_average_1m},
      {"prefill_product_seconds", r.run.prefill_products.seconds},
      {"prefill_product_flops", 2 * r.run.prefill_products.macs},
      {"prefill_product_calls", r.run.prefill_products.calls},
      {"prefill_product_efficiency", r.prefill_product_efficiency()},
      {"decode_product_seconds", r.run.decode_products.seconds},
      {"decode_product_weight_bytes", r.run.decode_products.weight_bytes},
      {"decode_product_calls", r.run.decode_products.calls},
      {"decode_product_weights_efficiency", r.decode_product_weights_efficiency()},
  };
  if (const PairedSummary p = r.paired(); p.blocks > 0) {
    nlohmann::json blocks = nlohmann::json::array();
    for (const DecodeBlock& b : r.run.blocks)
      blocks.push_back({{"tokens", b.tokens}, {"seconds", b.seconds}, {"bytes_per_s_before", b.bandwidth_before},
                        {"bytes_per_s_after", b.bandwidth_after}});
    j["paired_block_tokens"] = o.paired_block;
    j["paired_blocks"] = blocks;
    j["paired_decode_efficiency_median"] = p.median;
    j["paired_decode_efficiency_min"] = p.min;
    j["paired_decode_efficiency_max"] = p.max;
    j["paired_fast_blocks"] = p.fast_blocks;
    j["paired_decode_efficiency_fast_median"] = p.fast_median;
  }
  return j.dump(2);
}

}  // namespace dseek::bench
