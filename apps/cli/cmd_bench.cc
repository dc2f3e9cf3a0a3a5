// `dseek bench -m MODEL [-p 512] [-n 128] [-t THREADS] [--ctx N] [--ctx-fill compute|random] [--reps R]
//  [--cache-type-k T] [--dtype f32|bf16] [--paired K] [--json]`:
// prefill and decode speed on random tokens, set against this machine's measured memory read
// bandwidth and peak FMA throughput (see docs/bench.md for the method of each figure).
#include <omp.h>

#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "base/timer.h"
#include "bench/bench.h"
#include "commands.h"
#include "cpu/compute_type.h"
#include "cpu/cpu_features.h"
#include "cpu/linear_kernels.h"
#include "generation_setup.h"
#include "model/model_info.h"
#include "runtime/loader.h"

namespace dseek::cli {

namespace {

struct BenchArgs {
  std::string model;
  std::string cache_type_k = "f32";
  std::string dtype = "f32";
  std::string ctx_fill = "compute";
  bench::RunOptions run;
  int threads = 0;
  bool json = false, no_verify = false, no_mmap = false;
  double bw_mib = 1024;  // streaming-read buffer, much larger than any last-level cache
  int64_t paired = 0;    // --paired K: decode in blocks of K tokens, each between two probes
  int bw_passes = 5, fma_runs = 3;
};

Status run_bench(const BenchArgs& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  bench::Report r;
  r.model_dir = a.model;
  r.options = a.run;
  r.options.random_context = a.ctx_fill == "random";
  r.threads = omp_get_max_threads();

  Stopwatch load_clock;
  DSEEK_ASSIGN_OR_RETURN(auto m, runtime::load_model(a.model, {.verify = !a.no_verify, .progress = true, .mmap = !a.no_mmap}));
  r.load_seconds = load_clock.seconds();
  r.weights_in_memory = !m->weights().checkpoint().shards().empty();
  for (const auto& shard : m->weights().checkpoint().shards()) r.weights_in_memory &= shard->in_anonymous_memory();
  DSEEK_RETURN_IF_ERROR(apply_cache_type(a.cache_type_k, *m));
  DSEEK_RETURN_IF_ERROR(apply_dtype(a.dtype));
  r.compute_type = std::string(cpu::compute_type_name(cpu::active_compute_type()));
  r.kernels = cpu::describe_linear_kernels(cpu::linear_kernels(cpu::active_isa()), cpu::active_compute_type());
  const model::ModelConfig& c = m->config();
  r.architecture = c.architecture;
  const model::ModelInfo info = model::compute_model_info(m->weights());
  r.weight_bytes_total = info.bytes_total;
  r.bytes_by_dtype = info.bytes_by_dtype;
  r.active = bench::active_weight_bytes_per_token(c, m->weights().checkpoint());
  r.flops = bench::prefill_flops(c, a.run.prompt, a.run.context);

  std::vector<std::span<const uint8_t>> weights;
  for (const auto& [name, t] : m->weights().checkpoint().tensors()) weights.emplace_back(t->data, t->nbytes);
  r.options.around_decode = [&](bool after) {
    (after ? r.weights_bandwidth_after : r.weights_bandwidth_before) =
        bench::measure_regions_read_bandwidth(r.threads, weights, a.bw_passes);
  };
  // The paired decode's probe: two passes over all the tensors (as the measurements before and
  // after the decode, with fewer passes), keeping the faster. Shorter reads came out low: a 1 GiB
  // prefix of the tensors, or the first 11% of each, read 15-25% below the full read in the same
  // minutes (v2-lite-q4: 38-46 against 51-54 GB/s).
  r.options.paired_block = a.paired;
  r.options.probe = [&] { return bench::measure_regions_read_bandwidth(r.threads, weights, 2).bytes_per_second; };
  DSEEK_ASSIGN_OR_RETURN(r.run, bench::run_model(*m, r.options));
  r.options.probe = nullptr;
  r.options.around_decode = nullptr;
  r.weights_bandwidth = r.weights_bandwidth_before.bytes_per_second >= r.weights_bandwidth_after.bytes_per_second
                            ? r.weights_bandwidth_before
                            : r.weights_bandwidth_after;
  r.weights_bandwidth.passes = r.weights_bandwidth_before.passes + r.weights_bandwidth_after.passes;
  // Peak RSS of loading and running the model: taken before the bandwidth buffer exists.
  r.peak_rss_bytes = bench::peak_rss_bytes();

  r.bandwidth = bench::measure_read_bandwidth(r.threads, static_cast<uint64_t>(a.bw_mib * 1024 * 1024), a.bw_passes);
  r.fma = bench::measure_peak_fma(r.threads, 0.2, a.fma_runs);
  double load[1];
  if (getloadavg(load, 1) == 1) r.load_average_1m = load[0];

  const std::string text = a.json ? bench::report_json(r) + "\n" : bench::format_report(r);
  std::fputs(text.c_str(), stdout);
  return {};
}

}  // namespace

void register_bench(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand(
      "bench", "Prefill and decode speed, against this machine's measured memory bandwidth and peak FMA throughput");
  auto a = std::make_shared<BenchArgs>();
  cmd->add_option("-m,--model", a->model, "Model directory")->required();
  cmd->add_option("-p,--prompt-tokens", a->run.prompt, "Prefill length: random token ids")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("-n,--decode-tokens", a->run.decode, "Tokens decoded after the prompt (greedy, EOS ignored)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "Threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--ctx", a->run.context, "Tokens of context prefilled (untimed) before the prompt")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--ctx-fill", a->ctx_fill,
                  "How the --ctx rows are made: compute (a real prefill) or random (random cache rows: "
                  "decode then reads what it would at that depth, without the prefill's minutes)")
      ->check(CLI::IsMember({"compute", "random"}))->capture_default_str();
  cmd->add_option("--reps", a->run.reps, "Repetitions of prefill and decode; the fastest is reported")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--seed", a->run.seed, "Seed of the random token ids")->capture_default_str();
  add_cache_type_flag(cmd, &a->cache_type_k);
  add_dtype_flag(cmd, &a->dtype);
  cmd->add_option("--paired", a->paired,
                  "Decode in blocks of K tokens, reading all the weights twice before and after each (not "
                  "timed): every block's efficiency against the memory speed of its own seconds, for machines "
                  "whose memory speed changes while the bench runs (0: off)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--bw-mib", a->bw_mib, "Buffer of the memory bandwidth measurement, MiB")
      ->check(CLI::Range(16.0, 1048576.0))->capture_default_str();
  cmd->add_flag("--no-verify", a->no_verify, "Skip reading every weight once at load (the pages load during the run)");
  add_no_mmap_flag(cmd, &a->no_mmap);
  cmd->add_flag("--json", a->json, "Print every figure as one JSON object");
  cmd->callback([=] {
    *run = [=] {
      return exit_code(run_bench(*a));
    };
  });
}

}  // namespace dseek::cli
