// BF16-compute mode (cpu/compute_type.h) on every kernel family and weight format against its slow
// twin cpu::linear_bf16_reference (x rounded to bf16, weights decoded exactly, double sums):
// |fast - twin| <= 1e-5 * sum_i |x_i w_i| + (FP8 only) sum of |x_i w_i| over the weights with
// a subnormal code, which the vdpbf16ps path drops (linear_bf16.h). The mode must also differ from
// float32 compute, and the activation shift of the FP8 path must survive very large and very small x.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "base/float_types.h"
#include "cpu/compute_type.h"
#include "cpu/cpu_features.h"
#include "cpu/linear_bf16.h"
#include "cpu/linear_int8.h"
#include "cpu/linear_kernels.h"
#include "linear_test_util.h"
#include "ops/linear.h"

namespace dseek {
namespace {

using cpu::ComputeType;
using cpu::Isa;
using ops::LinearWeight;
using testing::magnitude;
using testing::make_weight;
using testing::TestWeight;
using testing::expect_outputs_near;
using ops::view_of;

// sum |x_i w_i| over FP8 weights whose code is subnormal (exponent field 0, mantissa not 0).
std::vector<double> subnormal_mass(const std::vector<float>& x, int64_t T, const LinearWeight& w) {
  std::vector<double> m(static_cast<size_t>(T * w.out), 0.0);
  if (w.dtype != DType::kF8E4M3) return m;
  std::vector<float> row(static_cast<size_t>(w.in));
  for (int64_t r = 0; r < w.out; ++r) {
    ops::decode_rows(w, r, 1, row.data());
    for (int64_t i = 0; i < w.in; ++i) {
      const uint8_t b = w.data[r * w.in + i];
      if ((b & 0x78) != 0 || (b & 0x07) == 0) continue;
      for (int64_t t = 0; t < T; ++t) m[t * w.out + r] += std::fabs(static_cast<double>(x[t * w.in + i]) * row[i]);
    }
  }
  return m;
}

// Runs the active family in BF16 mode on x and checks it against the twin; returns the largest
// |y - float32 reference| / magnitude, which a real bf16 rounding of x makes well above 1e-5.
double expect_matches_twin(const LinearWeight& w, int64_t T, const std::vector<float>& x, const std::string& what) {
  std::vector<float> y(static_cast<size_t>(T * w.out), -7.0f), twin(y.size()), f32(y.size());
  {
    cpu::ScopedComputeType bf16(ComputeType::kBf16);
    ops::linear(x.data(), T, w, y.data());
  }
  cpu::linear_bf16_reference(x.data(), T, view_of(w), twin.data());
  ops::linear_reference(x.data(), T, w, f32.data());
  const std::vector<double> mag = magnitude(x, T, w), sub = subnormal_mass(x, T, w);
  std::vector<double> tol(mag.size());
  for (size_t i = 0; i < tol.size(); ++i) tol[i] = 1e-5 * mag[i] + sub[i] + 1e-30;
  // inf x times a dropped FP8 subnormal weight is 0 x inf: NaN, as non-finite as the twin.
  expect_outputs_near(y, twin, tol, w.out, what, "twin", /*nan_for_inf=*/w.dtype == DType::kF8E4M3);
  double from_f32 = 0.0;
  for (size_t i = 0; i < y.size(); ++i)
    if (mag[i] > 0 && std::isfinite(twin[i]))
      from_f32 = std::max(from_f32, std::fabs(static_cast<double>(y[i]) - f32[i]) / mag[i]);
  return from_f32;
}

std::vector<float> normal_x(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = scale * normal(rng);
  return x;
}

// q8/q4 at T <= 4 go through their own int8 activations when VNNI is there (linear_int8_test);
// off here so that every format takes the bf16-rounded activations.
struct Guard {
  Isa saved = cpu::active_isa();
  bool int8 = cpu::int8_dot_enabled();
  Guard() { cpu::set_int8_dot(false); }
  ~Guard() { cpu::set_active_isa(saved), cpu::set_int8_dot(int8); }
};

// Runs f(isa) with each family this CPU has active, int8 dot products off (Guard).
void each_family(const std::function<void(Isa)>& f) {
  Guard guard;
  for (Isa isa : cpu::supported_isas()) {
    cpu::set_active_isa(isa);
    f(isa);
  }
}

std::string name(Isa isa, DType d, int64_t out, int64_t in, int64_t T) {
  return std::string(cpu::isa_name(isa)) + " bf16-compute " + std::string(dtype_name(d)) + " [" +
         std::to_string(out) + "," + std::to_string(in) + "] T=" + std::to_string(T);
}

TEST(LinearBf16, EveryFamilyAndFormatMatchesTwin) {
  std::mt19937 rng(2026);
  each_family([&](Isa isa) {
    for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kI8, DType::kU8})
      for (int64_t out : {1, 7, 37})
        for (int64_t in : {32, 96, 300, 544}) {
          if ((d == DType::kI8 || d == DType::kU8) && in % 32 != 0) continue;
          TestWeight t = make_weight(d, out, in, rng);
          double from_f32 = 0.0;
          for (int64_t T : {1, 2, 3, 4, 5, 17})
            from_f32 = std::max(from_f32, expect_matches_twin(t.w, T, normal_x(T * in, rng), name(isa, d, out, in, T)));
          // bf16 keeps 8 significant bits: x's rounding shows far above float32's 1e-5.
          EXPECT_GT(from_f32, 1e-4) << name(isa, d, out, in, 0) << ": BF16 mode computed like float32";
        }
  });
}

// FP8 blocks narrower than 128 and not a multiple of 32 wide (the vdpbf16ps path only takes
// multiples of 32), and large block scales.
TEST(LinearBf16, Fp8BlockShapesAndScales) {
  std::mt19937 rng(31);
  each_family([&](Isa isa) {
    for (auto [br, bc, scale] : {std::tuple{16, 32, 0.05f}, std::tuple{5, 24, 0.05f}, std::tuple{128, 64, 3e4f},
                                 std::tuple{128, 128, 1e-6f}}) {
      TestWeight t = make_weight(DType::kF8E4M3, 37, 200, rng, br, bc, 32, scale);
      for (int64_t T : {1, 2, 4, 9})
        expect_matches_twin(t.w, T, normal_x(T * 200, rng),
                            name(isa, DType::kF8E4M3, 37, 200, T) + " blocks " + std::to_string(br) + "x" + std::to_string(bc));
    }
  });
}

// Activations far from 1: the FP8 path scales x by 2^shift before rounding, which must neither
// overflow bf16 for large x nor lose small x.
TEST(LinearBf16, ExtremeActivations) {
  std::mt19937 rng(8);
  each_family([&](Isa isa) {
    for (DType d : {DType::kBF16, DType::kF8E4M3}) {
      TestWeight t = make_weight(d, 40, 256, rng);
      for (float scale : {1e-30f, 1e-6f, 3e3f, 1e6f, 1e30f})
        for (int64_t T : {1, 3})
          expect_matches_twin(t.w, T, normal_x(T * 256, rng, scale),
                              name(isa, d, 40, 256, T) + " |x| ~ " + std::to_string(scale));
      std::vector<float> zeros(256, 0.0f), y(40, -1.0f);
      cpu::ScopedComputeType bf16(ComputeType::kBf16);
      ops::linear(zeros.data(), 1, t.w, y.data());
      for (float v : y) EXPECT_EQ(v, 0.0f) << name(isa, d, 40, 256, 1) << " x = 0";
    }
  });
}

// A NaN or an infinity in x, and an FP8 NaN code, reach the outputs they reach in the twin.
TEST(LinearBf16, NanAndInf) {
  std::mt19937 rng(9);
  each_family([&](Isa isa) {
    for (DType d : {DType::kBF16, DType::kF8E4M3}) {
      TestWeight t = make_weight(d, 20, 128, rng);
      if (d == DType::kF8E4M3) t.bytes[testing::kMisalign + 13 * 128 + 50] = 0xff;  // row 13
      for (int64_t T : {1, 2}) {
        expect_matches_twin(t.w, T, normal_x(T * 128, rng), name(isa, d, 20, 128, T) + " weight NaN");
        for (float bad : {NAN, INFINITY}) {
          std::vector<float> x = normal_x(T * 128, rng);
          x[T * 128 - 3] = bad;
          expect_matches_twin(t.w, T, x, name(isa, d, 20, 128, T) + " x " + std::to_string(bad));
        }
      }
    }
  });
}

// Several threads, several rows per thread, T at the path switch; several panels, token blocks
// and input blocks on the packed path.
TEST(LinearBf16, ThreadedShapes) {
  std::mt19937 rng(12);
  each_family([&](Isa isa) {
    for (DType d : {DType::kBF16, DType::kF8E4M3}) {
      TestWeight t = make_weight(d, 300, 768, rng);
      for (int64_t T : {1, 2, 4, 5, 33}) expect_matches_twin(t.w, T, normal_x(T * 768, rng), name(isa, d, 300, 768, T));
    }
  });
}

TEST(LinearBf16, Shift) {
  LinearWeight w;
  w.dtype = DType::kF8E4M3;
  const float x1[] = {0.5f, -3.0f}, x2[] = {0.0f, 0.0f}, x3[] = {1.0f, NAN}, x4[] = {1e30f, 1.0f};
  EXPECT_EQ(cpu::bf16_x_shift(x1, 2, view_of(w)), 120);
  EXPECT_EQ(cpu::bf16_x_shift(x2, 2, view_of(w)), 120);
  EXPECT_EQ(cpu::bf16_x_shift(x3, 2, view_of(w)), 120);  // NaN ignored
  EXPECT_EQ(cpu::bf16_x_shift(x4, 2, view_of(w)), 126 - 99);  // 1e30 = 1.58 x 2^99
  w.dtype = DType::kBF16;
  EXPECT_EQ(cpu::bf16_x_shift(x1, 2, view_of(w)), 0);
}

// The shift's vectorized max of |x| over the finite values against the obvious loop, on lengths
// around the vector width with infinities, NaNs, -0, subnormals and large values mixed in.
TEST(LinearBf16, ShiftMatchesTheObviousLoop) {
  LinearWeight w;
  w.dtype = DType::kF8E4M3;
  std::mt19937 rng(41);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 9), exponent(-140, 120);
  const float specials[] = {INFINITY, -INFINITY, NAN, -0.0f, 1e-40f, -3e38f};
  for (int64_t n : {1, 7, 15, 16, 17, 64, 1000, 7168}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = pick(rng) == 0 ? specials[pick(rng) % 6] : std::ldexp(normal(rng), exponent(rng));
      float amax = 0.0f;
      for (float v : x)
        if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
      const int expected = amax == 0.0f ? 120 : std::min(120, 126 - std::ilogb(amax));
      EXPECT_EQ(cpu::bf16_x_shift(x.data(), n, view_of(w)), expected) << "n " << n << " trial " << trial;
    }
  }
}

TEST(LinearBf16, ParseComputeType) {
  EXPECT_EQ(cpu::parse_compute_type("bf16").value(), ComputeType::kBf16);
  EXPECT_EQ(cpu::parse_compute_type("bfloat16").value(), ComputeType::kBf16);
  EXPECT_EQ(cpu::parse_compute_type("float32").value(), ComputeType::kF32);
  EXPECT_EQ(cpu::parse_compute_type("f32").value(), ComputeType::kF32);
  const auto bad = cpu::parse_compute_type("fp16");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--dtype"), std::string::npos);
  EXPECT_NE(bad.status().message().find("fp16"), std::string::npos);
}

}  // namespace
}  // namespace dseek
