// `dseek bench`'s pieces that can be checked without a stopwatch: the active weight bytes per
// token on the golden checkpoints against a hand count of their tensors, the prefill FLOP
// formula on hand-worked configs, and the machine measurements returning physically plausible
// figures (no timing thresholds: this test must pass on any machine under any load).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <span>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bench/machine.h"
#include "bench/model_cost.h"
#include "io/checkpoint.h"
#include "cpu/attention_format.h"
#include "kv/cache_type.h"
#include "model/config.h"
#include "model/deepseek.h"
#include "model/tensor_table.h"

namespace dseek::bench {
namespace {

std::string golden_model(const std::string& name) { return std::string(DSEEK_TEST_DATA) + "/golden/models/" + name; }

struct Loaded {
  model::ModelConfig config;
  std::unique_ptr<io::Checkpoint> ckpt;
};

Loaded load(const std::string& name) {
  auto c = model::load_model_config(golden_model(name));
  EXPECT_TRUE(c.ok()) << c.status().message();
  auto k = io::Checkpoint::open(golden_model(name));
  EXPECT_TRUE(k.ok()) << k.status().message();
  return {c.ok() ? c.value() : model::ModelConfig{}, k.ok() ? std::move(k.value()) : nullptr};
}

// The tiny-v3 fixtures (tests/data/golden/models/tiny-v3*/config.json): D 256, vocab 512,
// 3 layers (layer 0 dense FFN 384 wide, layers 1-2 MoE: 16 routed experts 64 wide, top-4, one
// shared expert), H 4, q LoRA 128, kv LoRA 64, nope/rope/v head dims 32/16/32, untied head.
// Parameters per piece:
constexpr uint64_t kD = 256, kV = 512;
constexpr uint64_t kQa = 128 * kD, kQb = 4 * 48 * 128, kKva = (64 + 16) * kD, kKvb = 4 * (32 + 32) * 64,
                   kO = kD * 4 * 32;                       // attention linears
constexpr uint64_t kAttnNorms = kD + kD + 128 + 64;        // input/post-attention, q_a, kv_a layernorms
constexpr uint64_t kDenseMat = 384 * kD;                   // each of gate/up/down of layer 0
constexpr uint64_t kExpertMat = 64 * kD;                   // each of gate/up/down of an expert
constexpr uint64_t kRouter = 16 * kD, kBias = 16;          // gate.weight (BF16), correction bias (F32)

TEST(ActiveBytes, TinyV3Bf16MatchesAHandCount) {
  const Loaded m = load("tiny-v3");
  ASSERT_NE(m.ckpt, nullptr);
  const ActiveBytes b = active_weight_bytes_per_token(m.config, *m.ckpt);
  // Every weight BF16 (2 bytes) except the router correction bias (F32, 4 bytes).
  const uint64_t attention = 3 * 2 * (kQa + kQb + kKva + kKvb + kO + kAttnNorms);
  const uint64_t dense_ffn = 2 * 3 * kDenseMat;
  const uint64_t moe_always = 2 * (2 * kRouter + 4 * kBias + 2 * 3 * kExpertMat);  // router, bias, shared expert
  const uint64_t head = 2 * kD /*final norm*/ + 2 * kV * kD /*lm_head*/;
  EXPECT_EQ(b.non_expert, attention + dense_ffn + moe_always + head);
  EXPECT_EQ(b.non_expert, 1831680u);
  // Two MoE layers x 16 experts x 3 matrices, of which a token reads 4 of 16.
  EXPECT_EQ(b.routed, 2 * 16 * 3 * kExpertMat * 2 * 4 / 16);
  EXPECT_EQ(b.embedding_row, 2 * kD);  // one row of the BF16 table
  EXPECT_EQ(b.scales, 0u);
  EXPECT_EQ(b.total(), 2618624u);
}

TEST(ActiveBytes, TinyV3Fp8CountsWeightsAtOneByteAndTheirScales) {
  const Loaded m = load("tiny-v3-fp8");
  ASSERT_NE(m.ckpt, nullptr);
  const ActiveBytes b = active_weight_bytes_per_token(m.config, *m.ckpt);
  // FP8 e4m3 (1 byte) linears with F32 128x128 block scales [ceil(out/128), ceil(in/128)];
  // the embedding, norms, router and lm_head stay BF16, the correction bias F32.
  auto scale_bytes = [](uint64_t out, uint64_t in) { return 4 * ((out + 127) / 128) * ((in + 127) / 128); };
  const uint64_t attn_scales = scale_bytes(128, 256) + scale_bytes(192, 128) + scale_bytes(80, 256) +
                               scale_bytes(256, 64) + scale_bytes(256, 128);  // 8 bytes each: 40
  const uint64_t dense_scales = scale_bytes(384, 256) + scale_bytes(384, 256) + scale_bytes(256, 384);  // 72
  const uint64_t expert_scales = scale_bytes(64, 256) * 2 + scale_bytes(256, 64);                       // 24
  EXPECT_EQ(attn_scales, 40u);
  EXPECT_EQ(dense_scales, 72u);
  EXPECT_EQ(expert_scales, 24u);

  const uint64_t attention = 3 * ((kQa + kQb + kKva + kKvb + kO) + attn_scales + 2 * kAttnNorms);
  const uint64_t dense_ffn = 3 * kDenseMat + dense_scales;
  const uint64_t moe_always = 2 * (2 * kRouter + 4 * kBias + 3 * kExpertMat + expert_scales);
  const uint64_t head = 2 * kD + 2 * kV * kD;
  EXPECT_EQ(b.non_expert, attention + dense_ffn + moe_always + head);
  EXPECT_EQ(b.non_expert, 1057776u);
  const uint64_t expert = 3 * kExpertMat + expert_scales;
  EXPECT_EQ(b.routed, 2 * 16 * expert * 4 / 16);
  EXPECT_EQ(b.routed, 393408u);
  EXPECT_EQ(b.embedding_row, 2 * kD);
  EXPECT_EQ(b.scales, 3 * attn_scales + dense_scales + 2 * expert_scales + 2 * 16 * expert_scales * 4 / 16);
  EXPECT_EQ(b.total(), 1451696u);
}

TEST(PrefillFlops, TinyV3ByHand) {
  const Loaded m = load("tiny-v3");
  // Matmul parameters one token multiplies by: attention linears x 3 layers, the dense FFN, and
  // per MoE layer the router, the shared expert and 4 of 16 routed experts; lm_head apart.
  const double attn = 3.0 * (kQa + kQb + kKva + kKvb + kO);
  const double moe = 2.0 * (kRouter + 3 * kExpertMat + 4.0 / 16.0 * 16 * 3 * kExpertMat);
  const double M = attn + 3.0 * kDenseMat + moe;
  EXPECT_DOUBLE_EQ(M, 1175552.0);
  // 16 prompt tokens after 10 of context: token i sees 10 + i + 1 keys, sum = 16*10 + 16*17/2.
  const PrefillFlops f = prefill_flops(m.config, 16, 10);
  EXPECT_DOUBLE_EQ(f.matmul_params_per_token, M);
  EXPECT_DOUBLE_EQ(f.matmul, 16 * 2 * M);
  EXPECT_DOUBLE_EQ(f.lm_head, 2.0 * kV * kD);
  const double keys = 16 * 10 + 16 * 17 / 2;  // 296
  EXPECT_DOUBLE_EQ(f.attention, 3 /*layers*/ * 2.0 * 4 /*heads*/ * (48 + 32) * keys);
  EXPECT_DOUBLE_EQ(f.total(), f.matmul + f.lm_head + f.attention);
}

TEST(PrefillFlops, V32AttendsOnlyToTheTopKButScoresEveryKey) {
  // tiny-v32: kv LoRA 128 (else as tiny-v3), indexer 16 heads x 128, index_topk 8.
  const Loaded m = load("tiny-v32");
  ASSERT_EQ(m.config.index_topk, 8);
  // 4 prompt tokens after 5 of context see 6, 7, 8, 9 keys; attention reads min(k, 8) of them.
  const PrefillFlops f = prefill_flops(m.config, 4, 5);
  const double attended = 6 + 7 + 8 + 8, scored = 6 + 7 + 8 + 9;
  const double mla = 2.0 * 4 * (48 + 32) * attended;
  const double indexer = (2.0 * 16 * 128 + 2.0 * 16) * scored;
  EXPECT_DOUBLE_EQ(f.attention, 3 * (mla + indexer));
  // The indexer's projections are matmuls every token does: wq_b [16*128, 128], wk [128, 256],
  // weights_proj [16, 256] per layer, on top of the V3 linears (kv_a/kv_b/o sized for kv LoRA 128).
  const double attn = 3.0 * (kQa + kQb + (128 + 16) * kD + 4 * (32 + 32) * 128 + kO);
  const double indexer_proj = 3.0 * (16 * 128 * 128 + 128 * kD + 16 * kD);
  const double moe = 2.0 * (kRouter + 3 * kExpertMat + 4 * 3 * kExpertMat);
  EXPECT_DOUBLE_EQ(f.matmul_params_per_token, attn + indexer_proj + 3.0 * kDenseMat + moe);
}

// The benchmark shapes in bench/configs: parameter counts as stated in docs/bench.md.
TEST(BenchConfigs, ParameterCountsAsDocumented) {
  auto count = [](const std::string& file) {
    std::ifstream in(std::string(DSEEK_SOURCE_DIR) + "/bench/configs/" + file);
    std::stringstream ss;
    ss << in.rdbuf();
    auto c = model::parse_model_config(ss.str(), file);
    EXPECT_TRUE(c.ok()) << c.status().message();
    if (!c.ok()) return int64_t{0};
    int64_t total = 0;
    for (const auto& s : model::build_tensor_table(c.value())) {
      if (s.group != model::TensorGroup::kMain) continue;
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      total += n;
    }
    return total;
  };
  EXPECT_NEAR(count("v2-lite.json") / 1e9, 15.7, 0.05);  // DeepSeek's published figure
  EXPECT_NEAR(count("v2-lite-fp8.json") / 1e9, 15.7, 0.05);
  EXPECT_EQ(count("v3-slice.json"), 6301744200);
  EXPECT_EQ(count("v32-slice.json"), 6357581896);
  EXPECT_EQ(count("v3-slice-fp8.json"), 6301744200);
  EXPECT_EQ(count("v32-slice-fp8.json"), 6357581896);
}

// --ctx-fill random: rows that look like the model's (latent ~N(0, 1) in the cache's type,
// indexer keys FP8 with power-of-two scales), the session's length and tokens as after a
// prefill, and a decode step after them works and reads them.
TEST(RandomContext, RowsLookLikeAPrefillsAndDecodeRunsOnThem) {
  for (const std::string name : {"tiny-v32", "tiny-v3"}) {
    for (const kv::CacheType type : {kv::CacheType::kF32, kv::CacheType::kFp8}) {
      auto m = model::Model::load(golden_model(name));
      ASSERT_TRUE(m.ok()) << m.status().message();
      auto session = std::make_unique<model::Session>((*m)->config(), 64, type);
      const std::vector<int32_t> context = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24};
      ASSERT_TRUE(session->append_random_rows(context, 7).ok());
      EXPECT_EQ(session->length(), 20);
      EXPECT_EQ(session->tokens(), context);
      const kv::LatentCache& cache = session->cache();
      std::vector<float> row(static_cast<size_t>(cache.latent_width()));
      double sum = 0, sum2 = 0;
      int64_t count = 0;
      for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
        for (int64_t p = 0; p < 20; ++p) {
          cpu::decode_latent_row(cache.latent_layout(), cache.latent_bytes(layer, p), row.data());
          for (float v : row) sum += v, sum2 += static_cast<double>(v) * v, ++count;
          for (int64_t b = 0; b < cache.index_dim() / 128; ++b) {
            const float scale = cache.index_scale(layer, p)[b];
            EXPECT_GT(scale, 0.0f);
            EXPECT_EQ(std::exp2(std::round(std::log2(scale))), scale) << "a power of two";
          }
        }
      }
      const double mean = sum / static_cast<double>(count), var = sum2 / static_cast<double>(count) - mean * mean;
      EXPECT_NEAR(mean, 0.0, 0.05) << name;
      EXPECT_NEAR(var, 1.0, 0.1) << name;
      EXPECT_EQ(cache.index_dim() > 0, name == "tiny-v32");

      std::vector<float> logits;
      const int32_t next = 30;
      ASSERT_TRUE((*m)->forward(*session, std::span(&next, 1), {}, &logits).ok());
      EXPECT_EQ(session->length(), 21);
      for (float l : logits) ASSERT_TRUE(std::isfinite(l));
      // The rows are read: other random rows give other logits.
      auto other = std::make_unique<model::Session>((*m)->config(), 64, type);
      ASSERT_TRUE(other->append_random_rows(context, 8).ok());
      std::vector<float> other_logits;
      ASSERT_TRUE((*m)->forward(*other, std::span(&next, 1), {}, &other_logits).ok());
      EXPECT_NE(logits, other_logits);
      // Past the session's room: the reserve error, nothing appended.
      EXPECT_FALSE(session->append_random_rows(std::vector<int32_t>(50, 1), 9).ok());
      EXPECT_EQ(session->length(), 21);
    }
  }
}

TEST(Machine, ReadBandwidthIsPlausible) {
  // 256 MiB: 8x this machine's 32 MiB L3, small enough for a unit test.
  const BandwidthResult r = measure_read_bandwidth(2, 256ull << 20, 3);
  EXPECT_EQ(r.passes, 3);
  EXPECT_GE(r.threads, 1);
  EXPECT_GE(r.buffer_bytes, 255ull << 20);
  EXPECT_LE(r.buffer_bytes, 256ull << 20);
  EXPECT_TRUE(std::isfinite(r.bytes_per_second));
  EXPECT_GT(r.bytes_per_second, 0.1e9);  // 0.1 GB/s .. 1000 GB/s: any real machine
  EXPECT_LT(r.bytes_per_second, 1000e9);
  EXPECT_NEAR(r.bytes_per_second * r.best_seconds, static_cast<double>(r.buffer_bytes), 1e-6 * r.buffer_bytes);
}

// Regions of odd sizes at odd addresses (tensors of a mapped checkpoint), split across threads
// anywhere: every byte is read once (the byte sum says so) and the figure is plausible.
TEST(Machine, RegionsReadBandwidthReadsEveryByteOnce) {
  std::vector<uint8_t> data((64u << 20) + 1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 2654435761u >> 24);
  const std::vector<std::pair<size_t, size_t>> cuts = {{3, 1}, {4, 0}, {7, 300}, {400, 33u << 20}, {(33u << 20) + 500, 31u << 20}};
  std::vector<std::span<const uint8_t>> regions;
  uint64_t want_sum = 0, want_bytes = 0;
  for (auto [offset, size] : cuts) {
    regions.emplace_back(data.data() + offset, size);
    for (size_t i = 0; i < size; ++i) want_sum += data[offset + i];
    want_bytes += size;
  }
  for (int threads : {1, 2, 3}) {
    const BandwidthResult r = measure_regions_read_bandwidth(threads, regions, 2);
    EXPECT_EQ(r.buffer_bytes, want_bytes) << threads;
    EXPECT_EQ(r.byte_sum, want_sum) << threads;
    EXPECT_EQ(r.passes, 2);
    EXPECT_GT(r.bytes_per_second, 0.1e9) << threads;
    EXPECT_LT(r.bytes_per_second, 1000e9) << threads;
  }
  const BandwidthResult none = measure_regions_read_bandwidth(2, {}, 2);
  EXPECT_EQ(none.buffer_bytes, 0u);
  EXPECT_EQ(none.bytes_per_second, 0.0);
}

TEST(Machine, PeakFmaIsPlausible) {
  const FmaResult r = measure_peak_fma(2, 0.05, 2);
  EXPECT_FALSE(r.isa.empty());
  EXPECT_GE(r.threads, 1);
  EXPECT_TRUE(std::isfinite(r.flops_per_second));
  EXPECT_GT(r.flops_per_second, 1e8);    // 0.1 GFLOP/s: even one scalar core under load
  EXPECT_LT(r.flops_per_second, 1e15);   // 1 PFLOP/s: far above any CPU
  EXPECT_GT(r.best_seconds, 0.0);
}

TEST(Machine, PeakRssIsThisProcess) {
  const uint64_t rss = peak_rss_bytes();
  EXPECT_GT(rss, 1u << 20);   // a running gtest binary holds more than 1 MiB
  EXPECT_LT(rss, 1ull << 40);
}

}  // namespace
}  // namespace dseek::bench
