// Fast ops against their slow, obviously correct twins, and the number formats against
// their definitions.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "base/float_types.h"
#include "base/scratch.h"
#include "cpu/activation.h"
#include "cpu/cpu_features.h"
#include "ops/fp8.h"
#include "ops/linear.h"
#include "ops/ops.h"

namespace dseek {
namespace {

// The hot paths' reusable buffers: aligned, kept while requests fit, grown when they do not.
TEST(Scratch, GrowsOnlyAndStaysAligned) {
  Scratch s;
  float* a = s.get(100);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  for (int i = 0; i < 100; ++i) a[i] = static_cast<float>(i);
  EXPECT_EQ(s.get(50), a) << "a smaller request reuses the buffer";
  EXPECT_EQ(s.get(112), a) << "capacity is rounded up to 16 floats";
  EXPECT_EQ(a[99], 99.0f);
  float* b = s.get(1 << 20);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 64, 0u);
  b[(1 << 20) - 1] = 1.0f;  // the whole request is writable (ASan builds check it)
  EXPECT_EQ(s.get(1 << 20), b);
}

TEST(Fp8E4M3, DecodesEveryCodeByDefinition) {
  for (int b = 0; b < 256; ++b) {
    const int sign = b >> 7, e = (b >> 3) & 15, m = b & 7;
    const float v = fp8e4m3_to_f32(static_cast<uint8_t>(b));
    if (e == 15 && m == 7) {
      EXPECT_TRUE(std::isnan(v)) << b;
      continue;
    }
    const double mag = e == 0 ? (m / 8.0) * std::pow(2.0, -6) : (1 + m / 8.0) * std::pow(2.0, e - 7);
    EXPECT_EQ(v, static_cast<float>(sign ? -mag : mag)) << b;
  }
  EXPECT_EQ(fp8e4m3_to_f32(0x7e), 448.0f);
}

TEST(Fp8E4M3, EncodesToNearestEvenAndRoundTrips) {
  for (int b = 0; b < 256; ++b) {
    const float v = fp8e4m3_to_f32(static_cast<uint8_t>(b));
    if (std::isnan(v) || b == 0x80) continue;  // -0 encodes as 0x80 too; NaN has no value
    EXPECT_EQ(f32_to_fp8e4m3(v), b) << v;
  }
  // Between two neighbours: the nearer wins; at the midpoint the even mantissa wins.
  EXPECT_EQ(f32_to_fp8e4m3(1.0625f), 0x38);  // midpoint of 1.0 (0x38) and 1.125 (0x39) -> even
  EXPECT_EQ(f32_to_fp8e4m3(1.1875f), 0x3a);  // midpoint of 1.125 (0x39) and 1.25 (0x3a) -> even
  EXPECT_EQ(f32_to_fp8e4m3(1.07f), 0x39);
  EXPECT_EQ(f32_to_fp8e4m3(-1000.0f), 0xfe);  // saturates
  EXPECT_EQ(f32_to_fp8e4m3(std::pow(2.0f, -10)), 0x00);  // below half the smallest subnormal
  EXPECT_EQ(f32_to_fp8e4m3(std::pow(2.0f, -9) * 1.5f), 0x02);  // subnormal midpoint -> even code
  EXPECT_EQ(f32_to_fp8e4m3(std::pow(2.0f, -9) * 1.25f), 0x01);
}

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  // 1 + 2^-8 is the midpoint between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(f32_to_bf16(1.0f + std::pow(2.0f, -8)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::pow(2.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(Float16, DecodesAndEncodes) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::pow(2.0f, -24));
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  for (uint32_t h = 0; h < 0x7c00; h += 7) EXPECT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))), h);
}

// Random weights stored in `dtype` (FP8 with the given block shape and random scales).
struct StoredWeight {
  ops::LinearWeight w;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
};

StoredWeight make_weight(DType dtype, int64_t out, int64_t in, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  StoredWeight s;
  s.w.dtype = dtype;
  s.w.out = out;
  s.w.in = in;
  const size_t n = static_cast<size_t>(out * in);
  s.bytes.resize(n * dtype_size(dtype));
  for (size_t i = 0; i < n; ++i) {
    const float v = normal(rng);
    if (dtype == DType::kF32) std::memcpy(s.bytes.data() + 4 * i, &v, 4);
    if (dtype == DType::kBF16) { uint16_t h = f32_to_bf16(v); std::memcpy(s.bytes.data() + 2 * i, &h, 2); }
    if (dtype == DType::kF16) { uint16_t h = f32_to_f16(v); std::memcpy(s.bytes.data() + 2 * i, &h, 2); }
    if (dtype == DType::kF8E4M3) s.bytes[i] = f32_to_fp8e4m3(v * 100);
  }
  if (dtype == DType::kF8E4M3) {
    s.w.block_rows = 128;
    s.w.block_cols = 128;
    s.scales.resize(static_cast<size_t>(((out + 127) / 128) * s.w.scale_cols()));
    for (float& x : s.scales) x = std::uniform_real_distribution<float>(0.001f, 0.02f)(rng);
    s.w.scale_inv = s.scales.data();
  }
  s.w.data = s.bytes.data();
  return s;
}

class LinearTest : public ::testing::TestWithParam<DType> {};

TEST_P(LinearTest, MatchesReferenceIncludingPartialBlocks) {
  std::mt19937 rng(42);
  for (auto [T, out, in] : {std::tuple{1, 300, 200}, {5, 129, 257}, {17, 16, 128}, {3, 1, 7}}) {
    StoredWeight s = make_weight(GetParam(), out, in, rng);
    std::vector<float> x(static_cast<size_t>(T * in));
    for (float& v : x) v = std::normal_distribution<float>()(rng);
    std::vector<float> fast(static_cast<size_t>(T * out)), slow(fast.size());
    ops::linear(x.data(), T, s.w, fast.data());
    ops::linear_reference(x.data(), T, s.w, slow.data());
    for (size_t i = 0; i < fast.size(); ++i) EXPECT_NEAR(fast[i], slow[i], 1e-4 * (1 + std::fabs(slow[i]))) << i;
  }
}

TEST_P(LinearTest, DecodesTheStoredValue) {
  std::mt19937 rng(1);
  StoredWeight s = make_weight(GetParam(), 200, 300, rng);
  std::vector<float> row(300);
  ops::decode_rows(s.w, 150, 1, row.data());
  for (int64_t j = 0; j < 300; j += 37) {
    float want = 0;
    const size_t i = static_cast<size_t>(150 * 300 + j);
    switch (GetParam()) {
      case DType::kF32: std::memcpy(&want, s.bytes.data() + 4 * i, 4); break;
      case DType::kBF16: want = bf16_to_f32(load_u16(s.bytes.data() + 2 * i)); break;
      case DType::kF16: want = f16_to_f32(load_u16(s.bytes.data() + 2 * i)); break;
      case DType::kF8E4M3: want = fp8e4m3_to_f32(s.bytes[i]) * s.scales[(150 / 128) * 3 + j / 128]; break;
      default: break;
    }
    EXPECT_EQ(row[j], want) << j;
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, LinearTest, ::testing::Values(DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3),
                         [](const auto& test_info) { return std::string(dtype_name(test_info.param)).substr(0, 4); });

// SwiGLU's elementwise half, every family against silu(g) * up in double precision: within a few
// float ulps over gates from -100 to 100 (both signs of the formula, e^-|g| near 1 and near 0),
// lengths that leave a tail after the vectors; NaN stays NaN, +inf gives +inf, -inf NaN.
TEST(Ops, SwigluMatchesDefinitionOnEveryFamily) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> wide(-100.0f, 100.0f), narrow(-4.0f, 4.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (cpu::Isa isa : cpu::supported_isas())
    for (int64_t n : {1, 7, 8, 29, 1408}) {
      std::vector<float> g(static_cast<size_t>(n)), up(g.size());
      for (int64_t i = 0; i < n; ++i) g[i] = i % 3 == 0 ? wide(rng) : narrow(rng), up[i] = normal(rng);
      std::vector<float> got = g;
      cpu::swiglu_with(isa, got.data(), up.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double gd = g[i], want = gd / (1.0 + std::exp(-gd)) * up[i];
        EXPECT_NEAR(got[i], want, 1e-6 * std::fabs(want) + 1e-35)
            << cpu::isa_name(isa) << " n=" << n << " g=" << g[i] << " up=" << up[i];
      }
    }
  for (cpu::Isa isa : cpu::supported_isas()) {
    std::vector<float> g = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-30f, -1e30f, 1e30f, 3.0f}, up(9, 2.0f);
    cpu::swiglu_with(isa, g.data(), up.data(), 9);
    EXPECT_TRUE(std::isnan(g[0])) << cpu::isa_name(isa);
    EXPECT_EQ(g[1], INFINITY) << cpu::isa_name(isa);
    EXPECT_TRUE(std::isnan(g[2])) << cpu::isa_name(isa);
    EXPECT_EQ(g[3], 0.0f) << cpu::isa_name(isa);
    EXPECT_EQ(g[4], 0.0f) << cpu::isa_name(isa);
    EXPECT_NEAR(g[5], 1e-30, 1e-36) << cpu::isa_name(isa);
    EXPECT_EQ(g[6], 0.0f) << cpu::isa_name(isa);
    EXPECT_EQ(g[7], 2e30f) << cpu::isa_name(isa);
    EXPECT_NEAR(g[8], 3.0 / (1.0 + std::exp(-3.0)) * 2.0, 1e-5) << cpu::isa_name(isa);
  }
}

TEST(Ops, RmsNormMatchesDefinition) {
  std::vector<float> x = {1, -2, 3, -4}, w = {1, 0.5, 2, 1}, y(4);
  ops::rms_norm(x.data(), w.data(), 1, 4, 1e-6f, y.data());
  const double rms = std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-6);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], x[i] / rms * w[i], 1e-6);
}

TEST(Ops, LayerNormMatchesDefinition) {
  std::vector<float> x = {1, 2, 3, 6}, w = {1, 2, 1, 1}, b = {0, 0, 1, -1}, y(4);
  ops::layer_norm(x.data(), w.data(), b.data(), 1, 4, 1e-6f, y.data());
  const double mean = 3, var = (4 + 1 + 0 + 9) / 4.0;
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], (x[i] - mean) / std::sqrt(var + 1e-6) * w[i] + b[i], 1e-6);
}

TEST(Ops, SoftmaxIgnoresMaskedEntries) {
  std::vector<float> x = {1.0f, -INFINITY, 2.0f, -INFINITY};
  ops::softmax_inplace(x.data(), 4);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_EQ(x[3], 0.0f);
  EXPECT_NEAR(x[0], 1 / (1 + std::exp(1.0)), 1e-7);
  EXPECT_NEAR(x[0] + x[2], 1.0, 1e-7);
}

TEST(Ops, HadamardMatchesSylvesterMatrix) {
  const int n = 16;
  std::mt19937 rng(3);
  std::vector<float> x(n);
  for (float& v : x) v = std::normal_distribution<float>()(rng);
  std::vector<float> y = x;
  ops::hadamard_inplace(y.data(), n, 0.25f);
  for (int i = 0; i < n; ++i) {
    double acc = 0;
    for (int j = 0; j < n; ++j) acc += (__builtin_popcount(i & j) % 2 ? -1.0 : 1.0) * x[j];  // H[i][j]
    EXPECT_NEAR(y[i], acc * 0.25, 1e-5);
  }
}

TEST(Ops, TopkBreaksTiesTowardsLowerIndex) {
  std::vector<float> x = {1, 3, 3, 2, 3};
  EXPECT_EQ(ops::topk_indices(x.data(), 5, 3), (std::vector<int32_t>{1, 2, 4}));
  EXPECT_EQ(ops::topk_indices(x.data(), 5, 9).size(), 5u);
}

TEST(Fp8Quant, PowerOfTwoScalesAsDeepSeekActQuant) {
  // amax 448 -> s = 1; amax 449 -> s = 2; amax 100 -> 2^ceil(log2(100/448)) = 0.25
  EXPECT_EQ(ops::fp8_pow2_scale(448.0f), 1.0f);
  EXPECT_EQ(ops::fp8_pow2_scale(449.0f), 2.0f);
  EXPECT_EQ(ops::fp8_pow2_scale(100.0f), 0.25f);
  std::vector<float> x(128);
  for (int i = 0; i < 128; ++i) x[i] = (i - 64) * 0.37f;
  std::vector<uint8_t> q(128);
  float s = 0;
  ops::fp8_quantize_blocks(x.data(), 128, 128, true, q.data(), &s);
  EXPECT_EQ(s, ops::fp8_pow2_scale(64 * 0.37f));
  for (int i = 0; i < 128; ++i) {
    const float back = fp8e4m3_to_f32(q[i]) * s;
    EXPECT_NEAR(back, x[i], std::fabs(x[i]) / 16 + s * std::pow(2.0f, -9)) << i;  // half an e4m3 step
  }
}

}  // namespace
}  // namespace dseek
