// Accuracy of dseek's q8/q4 weights (docs/quantization.md): every golden checkpoint is
// quantized with `dseek quantize`'s library entry into a temporary directory, the golden prompts
// are run through one prefill, and each position's next-token distribution is compared with
// DeepSeek's reference logits (tests/data/golden/expected): mean and max KL(p_ref || p_quant)
// in nats, and top-1 agreement. The checkpoints as stored are measured the same way, as the
// floor. Prints the table; the bounds (kBounds) come from the values measured when this was written.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <filesystem>
#include <span>

#include "io/json_file.h"
#include "model/deepseek.h"
#include "model/quantize.h"
#include "ops/ops.h"
#include "near_tie.h"
#include "test_util.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;

struct Accuracy {
  double kl_mean = 0, kl_median = 0, kl_max = 0, top1 = 0;
  int64_t positions = 0;
};

// log softmax in double.
std::vector<double> log_softmax(const float* x, int64_t n) {
  double m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, static_cast<double>(x[i]));
  double z = 0;
  for (int64_t i = 0; i < n; ++i) z += std::exp(x[i] - m);
  std::vector<double> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] - m - std::log(z);
  return out;
}


Accuracy measure(const std::string& model_dir, const std::string& fixture) {
  Accuracy a;
  auto m = model::Model::load(model_dir);
  EXPECT_TRUE(m.ok()) << m.status().message();
  auto expected = io::SafetensorsFile::open(golden_dir() + "/expected/" + fixture + ".safetensors");
  EXPECT_TRUE(expected.ok());
  auto prompts = io::read_json_file(golden_dir() + "/prompts.json");
  EXPECT_TRUE(prompts.ok());
  if (!m.ok() || !expected.ok() || !prompts.ok()) return {INFINITY, INFINITY, INFINITY, 0, 0};
  const int64_t V = (*m)->config().vocab_size;
  int64_t agree = 0;
  std::vector<double> kls;
  for (size_t i = 0; i < prompts->size(); ++i) {
    const auto tokens = (*prompts)[i]["tokens"].get<std::vector<int32_t>>();
    const std::vector<float> want = read_f32(**expected, "p" + std::to_string(i) + ".prefill_logits");
    auto session = (*m)->new_session(static_cast<int64_t>(tokens.size()));
    std::vector<float> got;
    const Status s = (*m)->forward(*session, tokens, {model::AttentionForm::kAuto, true}, &got);
    EXPECT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(got.size(), want.size());
    if (!s.ok() || got.size() != want.size()) return {INFINITY, INFINITY, INFINITY, 0, 0};
    for (size_t t = 0; t < tokens.size(); ++t) {
      const std::vector<double> lp = log_softmax(want.data() + t * V, V);
      const std::vector<double> lq = log_softmax(got.data() + t * V, V);
      double kl = 0;
      for (int64_t v = 0; v < V; ++v) kl += std::exp(lp[v]) * (lp[v] - lq[v]);
      a.kl_mean += kl;
      kls.push_back(kl);
      a.kl_max = std::max(a.kl_max, kl);
      agree += ops::argmax(want.data() + t * V, V) == ops::argmax(got.data() + t * V, V);
      ++a.positions;
    }
  }
  a.kl_mean /= static_cast<double>(a.positions);
  std::sort(kls.begin(), kls.end());
  a.kl_median = kls[kls.size() / 2];
  a.top1 = static_cast<double>(agree) / static_cast<double>(a.positions);
  return a;
}

void print_row(const std::string& model, const char* type, const Accuracy& a) {
  std::printf("%-12s %-6s %11.3e %11.3e %11.3e %7.4f %5lld\n", model.c_str(), type, a.kl_mean, a.kl_median, a.kl_max,
              a.top1, static_cast<long long>(a.positions));
}

// Bounds per checkpoint: mean (and q8 median) KL at most about 3x what was measured (group 32, heads q8) and
// top-1 agreement at least the measured value minus about 0.1 (8% of ~119 positions is a
// handful of near-ties). The MoE checkpoints with sigmoid group routing (tiny-v3*) and the
// sparse-attention one (tiny-v32) react to weight error through discrete choices (experts,
// top-k keys), so a few positions dominate their means; the medians show the typical position.
struct Bounds {
  const char* model;
  double q8_kl, q8_median_kl, q4_kl, q8_top1, q4_top1;
};
constexpr Bounds kBounds[] = {
    {"tiny-v2lite", 2.5e-3, 1.2e-3, 0.25, 0.90, 0.50},
    {"tiny-v3", 0.04, 2.6e-3, 0.9, 0.85, 0.30},
    {"tiny-v3-fp8", 0.07, 1.6e-3, 0.75, 0.85, 0.50},
    {"tiny-v32", 0.66, 0.15, 2.6, 0.55, 0.15},
};

TEST(QuantAccuracy, KlAndTop1AgainstTheReferenceLogits) {
  const ScratchDir scratch("quant-accuracy");
  const fs::path tmp = scratch.path();
  std::printf("\n%-12s %-6s %11s %11s %11s %7s %5s\n", "model", "type", "mean KL", "median KL", "max KL", "top-1",
              "n");
  for (const std::string name : {"tiny-v2lite", "tiny-v3", "tiny-v3-fp8", "tiny-v32"}) {
    const std::string src = golden_dir() + "/models/" + name;
    Accuracy base;
    auto compute = [&] { base = measure(src, name); };
    std::unique_ptr<NearTieSearch> search;  // V3.2: on the reference's side of FP8 near-ties, for all three
    if (name == "tiny-v32") {
      auto config = io::read_json_file(src + "/config.json");
      ASSERT_TRUE(config.ok()) << config.status().message();
      search = std::make_unique<NearTieSearch>((*config)["num_hidden_layers"].get<int64_t>());
      search->run(compute, [&] { return base.kl_mean < 1e-6; });
    } else {
      compute();
    }
    print_row(name, "stored", base);
    EXPECT_LT(base.kl_mean, 1e-6) << name;  // the engine matches the reference: the floor
    Accuracy q[2];
    for (int k = 0; k < 2; ++k) {
      const bool q8 = k == 0;
      const std::string dir = (tmp / (name + (q8 ? "-q8" : "-q4"))).string();
      model::QuantizeOptions o;
      o.quant.weight_type = q8 ? model::IntWeightType::kQ8 : model::IntWeightType::kQ4;
      auto s = model::quantize_checkpoint(src, dir, o);
      ASSERT_TRUE(s.ok()) << s.status().message();
      q[k] = measure(dir, name);
      print_row(name, q8 ? "q8" : "q4", q[k]);
      fs::remove_all(dir);
    }
    const Bounds* b = nullptr;
    for (const Bounds& x : kBounds)
      if (name == x.model) b = &x;
    ASSERT_NE(b, nullptr);
    EXPECT_LT(q[0].kl_mean, b->q8_kl) << name;
    EXPECT_LT(q[0].kl_median, b->q8_median_kl) << name;
    EXPECT_LT(q[1].kl_mean, b->q4_kl) << name;
    EXPECT_GE(q[0].top1, b->q8_top1) << name;
    EXPECT_GE(q[1].top1, b->q4_top1) << name;
    EXPECT_LT(q[0].kl_mean * 2, q[1].kl_mean) << name << ": q8 should be far closer than q4";
    EXPECT_LT(q[0].kl_median * 10, q[1].kl_median) << name << ": q8 should be far closer than q4";
  }
  std::fflush(stdout);
}

}  // namespace
}  // namespace dseek::testing
