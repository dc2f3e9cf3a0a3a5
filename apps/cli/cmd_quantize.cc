// `dseek quantize MODEL OUT [--type q8|q4] [--group-size 32] [--lm-head q8|q4] [-t N]`: a
// Hugging Face model directory (BF16/F16/F32 or FP8) rewritten with dseek's group-quantized
// int8/int4 linears (model/quantize.h, docs/quantization.md), loadable like any checkpoint.
#include <omp.h>

#include <cstdio>

#include "base/timer.h"
#include "commands.h"
#include "model/quantize.h"
#include "model/weights.h"

namespace dseek::cli {

namespace {

struct QuantizeArgs {
  std::string model, out, type = "q4", head_type = "q8";
  int64_t group_size = 32;
  double shard_gb = 4.0;
  int threads = 0;
};

std::string human_bytes(uint64_t b) {
  const double v = static_cast<double>(b);
  return v >= 1e9 ? fmt::format("{:.2f} GB", v / 1e9) : v >= 1e6 ? fmt::format("{:.2f} MB", v / 1e6)
                                                                 : fmt::format("{:.1f} KB", v / 1e3);
}

model::IntWeightType parse_type(const std::string& name) {
  return name == "q8" ? model::IntWeightType::kQ8 : model::IntWeightType::kQ4;
}

Status run_quantize(const QuantizeArgs& a) {
  if (a.group_size <= 0 || a.group_size % 2 != 0)
    return Status::errorf("--group-size must be a positive even number, got {}", a.group_size);
  Stopwatch clock;
  model::QuantizeOptions o;
  o.quant.weight_type = parse_type(a.type);
  o.quant.lm_head_type = parse_type(a.head_type);
  o.quant.group_size = a.group_size;
  o.max_shard_bytes = static_cast<uint64_t>(a.shard_gb * 1e9);
  double last = -1.0;
  bool printed = false;
  o.progress = [&](int64_t done, int64_t total, uint64_t read, uint64_t read_total) {
    if (done < total && clock.seconds() - last < 0.5) return;
    last = clock.seconds();
    printed = true;
    std::fprintf(stderr, "\rdseek quantize: %lld / %lld tensors, %s / %s read, %.0f s   ",
                 static_cast<long long>(done), static_cast<long long>(total), human_bytes(read).c_str(),
                 human_bytes(read_total).c_str(), last);
  };
  auto summary = model::quantize_checkpoint(a.model, a.out, o);
  if (printed) std::fprintf(stderr, "\n");
  if (!summary.ok()) return summary.status();
  DSEEK_RETURN_IF_ERROR(model::load_weights(a.out).status().with_context("the result does not load"));
  const model::QuantizeSummary& s = *summary;
  std::fprintf(stderr,
               "dseek quantize: %s: %s, group %lld (head %s): %lld tensors (%lld linears quantized, %lld kept in "
               "float), %s -> %s in %lld shard(s), %.1f s\n",
               a.out.c_str(), a.type.c_str(), static_cast<long long>(a.group_size), a.head_type.c_str(),
               static_cast<long long>(s.tensors), static_cast<long long>(s.quantized),
               static_cast<long long>(s.kept_linears), human_bytes(s.bytes_in).c_str(), human_bytes(s.bytes_out).c_str(),
               static_cast<long long>(s.shards), clock.seconds());
  return {};
}

}  // namespace

void register_quantize(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand("quantize", "Rewrite a model with group-quantized int8 (q8) or int4 (q4) linears");
  auto a = std::make_shared<QuantizeArgs>();
  cmd->add_option("MODEL", a->model, "Hugging Face model directory (BF16, F16, F32 or FP8 weights)")->required();
  cmd->add_option("OUT", a->out, "Output model directory (created; must not exist or be empty)")->required();
  cmd->add_option("--type", a->type, "Weight type of the linears: q8 (int8) or q4 (int4)")
      ->check(CLI::IsMember({"q8", "q4"}));
  cmd->add_option("--group-size", a->group_size, "Consecutive inputs sharing one F16 scale (positive, even)");
  cmd->add_option("--lm-head", a->head_type, "Weight type of the output head(s): q8 or q4")
      ->check(CLI::IsMember({"q8", "q4"}));
  cmd->add_option("--shard-size", a->shard_gb, "Largest shard, in GB")->check(CLI::PositiveNumber);
  cmd->add_option("-t,--threads", a->threads, "Threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->callback([=] {
    *run = [=] {
      if (a->threads > 0) omp_set_num_threads(a->threads);
      return exit_code(run_quantize(*a).with_context("dseek quantize"));
    };
  });
}

}  // namespace dseek::cli
