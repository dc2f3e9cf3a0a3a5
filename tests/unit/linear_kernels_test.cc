// Every matrix-kernel family (scalar, AVX2, AVX-512: those this CPU has) x every weight format x
// both paths (matrix-vector for T <= 4, packed product above) against ops::linear_reference
// (one double-precision dot product at a time over ops::decode_rows). The kernels decode each
// weight to the same float32 number as decode_rows, so the only difference allowed is float32
// summation order: |fast - ref| <= 1e-5 * sum_i |x_i w_i| (plus a tiny absolute floor).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/float_types.h"
#include "cpu/compute_type.h"
#include "cpu/cpu_features.h"
#include "cpu/linear_fp8.h"
#include "cpu/linear_int8.h"
#include "cpu/linear_kernels.h"
#include "linear_test_util.h"
#include "ops/linear.h"

namespace dseek {
namespace {

using testing::expect_outputs_near;
using testing::kMisalign;
using testing::magnitude;
using testing::make_weight;
using testing::TestWeight;

using cpu::Isa;
using ops::LinearWeight;

// Compares linear (active family) with the reference; NaN/Inf must match where the reference has them.
void expect_matches_reference(const LinearWeight& w, int64_t T, std::mt19937& rng, const std::string& what) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * w.in));
  for (float& v : x) v = normal(rng);
  std::vector<float> y(static_cast<size_t>(T * w.out), -7.0f), ref(y.size());
  ops::linear(x.data(), T, w, y.data());
  ops::linear_reference(x.data(), T, w, ref.data());
  std::vector<double> tol = magnitude(x, T, w);
  for (double& t : tol) t = 1e-5 * t + 1e-30;
  expect_outputs_near(y, ref, tol, w.out, what, "reference");
}

// Also forces the float path for q8/q4: the integer dot-product path (AVX-512 VNNI) quantizes x,
// so it is held to its own twin in linear_int8_test.cc, not to this tolerance. And turns the GFNI
// FP8 path on (the default, unless DSEEK_FP8_DOT=0), so that it is tested wherever the CPU has it.
struct IsaGuard {
  Isa saved = cpu::active_isa();
  bool int8 = cpu::int8_dot_enabled(), fp8 = cpu::fp8_dot_enabled();
  IsaGuard() { cpu::set_int8_dot(false), cpu::set_fp8_dot(true); }
  ~IsaGuard() { cpu::set_active_isa(saved), cpu::set_int8_dot(int8), cpu::set_fp8_dot(fp8); }
};

const int64_t kTokens[] = {1, 2, 3, 5, 17, 64, 130};

// Runs body(isa, the family's table) with each family this CPU has active.
template <typename Body>
void for_each_family(Body&& body) {
  for (Isa isa : cpu::supported_isas()) {
    cpu::set_active_isa(isa);
    body(isa, cpu::linear_kernels(isa));
  }
}
const int64_t kOuts[] = {1, 7, 33};

std::string name(Isa isa, DType d, int64_t out, int64_t in, int64_t T) {
  return std::string(cpu::isa_name(isa)) + " " + std::string(dtype_name(d)) + " [" + std::to_string(out) + "," +
         std::to_string(in) + "] T=" + std::to_string(T);
}

void sweep(DType d, std::initializer_list<int64_t> ins) {
  IsaGuard guard;
  std::mt19937 rng(1234);
  for (Isa isa : cpu::supported_isas()) {
    cpu::set_active_isa(isa);
    for (int64_t out : kOuts)
      for (int64_t in : ins) {
        TestWeight t = make_weight(d, out, in, rng);
        for (int64_t T : kTokens) expect_matches_reference(t.w, T, rng, name(isa, d, out, in, T));
      }
    // Several output panels and a partial one, several input blocks and a partial one.
    TestWeight t = make_weight(d, 130, *std::rbegin(ins), rng);
    for (int64_t T : {1, 4, 9, 130}) expect_matches_reference(t.w, T, rng, name(isa, d, 130, t.w.in, T));
  }
}

TEST(LinearKernels, F32) { sweep(DType::kF32, {7, 77, 300, 520}); }
TEST(LinearKernels, BF16) { sweep(DType::kBF16, {7, 77, 300, 520}); }
TEST(LinearKernels, F16) { sweep(DType::kF16, {7, 77, 300, 520}); }
TEST(LinearKernels, Fp8) { sweep(DType::kF8E4M3, {7, 77, 300, 520}); }
TEST(LinearKernels, Q8) { sweep(DType::kI8, {32, 96, 288, 544}); }
TEST(LinearKernels, Q4) { sweep(DType::kU8, {32, 96, 288, 544}); }

// FP8 with small blocks: partial blocks at both edges, block widths that are not a multiple of
// the vector width (element-by-element segments), and scales >= 2^8 (the vector path's 2^120
// bias would overflow: those segments must fall back, not produce infinities).
// ops::decode_rows_fast (the active family's block decoder) gives decode_rows' floats bit for
// bit, for every format, row range and odd shape; NaN where decode_rows has NaN.
TEST(LinearKernels, DecodeRowsFastEqualsDecodeRows) {
  std::mt19937 rng(11);
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kI8, DType::kU8}) {
    for (int64_t in : {32, 96, 130, 544}) {
      if ((d == DType::kI8 || d == DType::kU8) && in % 32 != 0) continue;
      TestWeight t = make_weight(d, 150, in, rng);
      if (d == DType::kF8E4M3) t.bytes[kMisalign + 5] = 0x7f;  // a NaN code in row 0
      for (auto [r0, n] : {std::pair<int64_t, int64_t>{0, 150}, {128, 22}, {3, 1}, {140, 10}}) {
        std::vector<float> want(static_cast<size_t>(n * in)), got(want.size(), -1.0f);
        ops::decode_rows(t.w, r0, n, want.data());
        ops::decode_rows_fast(t.w, r0, n, got.data());
        for (size_t i = 0; i < want.size(); ++i) {
          if (std::isnan(want[i])) {
            EXPECT_TRUE(std::isnan(got[i])) << dtype_name(d) << " element " << i;
          } else {
            ASSERT_EQ(std::memcmp(&got[i], &want[i], 4), 0)
                << dtype_name(d) << " in " << in << " rows " << r0 << "+" << n << " element " << i << ": " << got[i]
                << " vs " << want[i];
          }
        }
      }
    }
  }
}

TEST(LinearKernels, Fp8OddBlocksAndLargeScales) {
  IsaGuard guard;
  std::mt19937 rng(77);
  for (Isa isa : cpu::supported_isas()) {
    cpu::set_active_isa(isa);
    for (auto [br, bc, scale] : {std::tuple{16, 32, 0.05f}, std::tuple{5, 24, 0.05f}, std::tuple{128, 128, 300.0f}}) {
      TestWeight t = make_weight(DType::kF8E4M3, 37, 101, rng, br, bc, 32, scale);
      for (int64_t T : kTokens)
        expect_matches_reference(t.w, T, rng, name(isa, DType::kF8E4M3, 37, 101, T) + " blocks " +
                                                  std::to_string(br) + "x" + std::to_string(bc));
    }
  }
}

// The GFNI FP8 path (linear_fp8.h), float32 compute, on the shapes it takes (in and block_cols
// multiples of 64, FP8 blocks of 64 and 128 inputs, partial block rows), T = 1..4, with and
// without the known-finite mark, against the reference: every byte but the NaNs (subnormal codes
// included); x of ordinary size, with outliers that move its shift (1e30, and 1e38 with block
// scales of 300, where scale x 2^(120 - shift) overflows and the blocks go element by element),
// and tiny (1e-30); a NaN code in one block; a NaN and an infinity in x; with the denormal guard
// off and on, and with each of the two byte placements (unpacks, permute). On a CPU with AVX-512
// and GFNI the avx512 family must take the path (otherwise this is another float-path test).
TEST(LinearKernels, Fp8GfniPathMatchesTheReference) {
  IsaGuard guard;
  const bool saved_guard = cpu::fp8_denormal_guard(), saved_permute = cpu::fp8_byte_permute();
  std::mt19937 rng(31);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int variant = 0; variant < 4; ++variant) {
    const bool denormal_guard = variant % 2 == 1, permute = variant / 2 == 1;
    cpu::set_fp8_denormal_guard(denormal_guard);
    cpu::set_fp8_byte_permute(permute);
    SCOPED_TRACE(std::string(denormal_guard ? "denormal guard on" : "denormal guard off") +
                 (permute ? ", byte permute" : ", unpacks"));
    for_each_family([&](Isa isa, const cpu::LinearKernels& k) {
      for (auto [out, in, br, bc] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{37, 64, 128, 64},
                                     {40, 640, 16, 128}, {9, 1024, 128, 64}, {130, 768, 128, 128}}) {
        for (float scale : {0.05f, 300.0f}) {
          TestWeight t = make_weight(DType::kF8E4M3, out, in, rng, br, bc, 32, scale);
          if (isa == Isa::kAvx512 && cpu::features().gfni) {
            EXPECT_TRUE(cpu::fp8_dot_used(k, ops::view_of(t.w)));
          }
          for (int x_kind = 0; x_kind < 5; ++x_kind) {
            for (int64_t T = 1; T <= cpu::kGemvMaxTokens; ++T) {
              std::vector<float> x(static_cast<size_t>(T * in));
              for (float& v : x) v = normal(rng);
              std::string kind = "normal x";
              if (x_kind == 1) x[static_cast<size_t>(in / 2)] = 1e30f, kind = "x with 1e30";
              if (x_kind == 2) x.back() = -1e38f, kind = "x with -1e38";
              if (x_kind == 3) {
                for (float& v : x) v *= 1e-30f;
                kind = "x of 1e-30";
              }
              if (x_kind == 4) x[3] = NAN, x[static_cast<size_t>(T * in - 5)] = INFINITY, kind = "x with NaN, inf";
              for (bool finite : {false, true}) {
                t.w.finite = finite;
                std::vector<float> y(static_cast<size_t>(T * out), -7.0f), ref(y.size());
                ops::linear(x.data(), T, t.w, y.data());
                ops::linear_reference(x.data(), T, t.w, ref.data());
                std::vector<double> tol = magnitude(x, T, t.w);
                for (double& v : tol) v = 1e-5 * v + 1e-30;
                expect_outputs_near(y, ref, tol, out,
                                    name(isa, DType::kF8E4M3, out, in, T) + " blocks " + std::to_string(br) + "x" +
                                        std::to_string(bc) + " scale " + std::to_string(scale) + ", " + kind +
                                        (finite ? ", known finite" : ""),
                                    "reference");
              }
            }
          }
          // A NaN code in row 3's second block: that block's outputs become NaN, the other rows not.
          t.bytes[kMisalign + 3 * in + bc + 5] = 0x7f;
          t.w.finite = false;
          for (int64_t T : {1, 4})
            expect_matches_reference(t.w, T, rng, name(isa, DType::kF8E4M3, out, in, T) + " NaN code");
        }
      }
    });
  }
  cpu::set_fp8_denormal_guard(saved_guard);
  cpu::set_fp8_byte_permute(saved_permute);
}

// The denormal guard (linear_fp8.h) changes how a step with a code of exponent 0 is multiplied,
// not what: the same real products, so the same rounded sums, bit for bit. Weights of random
// bytes (nearly every step holds a subnormal or a zero), and weights with subnormal codes in a
// few steps only; x ordinary, tiny (1e-30) and with an outlier that moves its shift. With either
// byte placement.
TEST(LinearKernels, Fp8GfniDenormalGuardGivesTheSameBits) {
  const cpu::LinearKernels& k = cpu::linear_kernels(cpu::supported(Isa::kAvx512) ? Isa::kAvx512 : Isa::kScalar);
  if (k.gemv_fp8 == nullptr) GTEST_SKIP() << "this CPU has no AVX-512 with GFNI";
  IsaGuard guard;
  cpu::set_active_isa(Isa::kAvx512);
  const bool saved_guard = cpu::fp8_denormal_guard(), saved_permute = cpu::fp8_byte_permute();
  std::mt19937 rng(41);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t out = 21, in = 512;
  for (int variant = 0; variant < 4; ++variant) {
    const bool sparse_subnormals = variant % 2 == 1;
    cpu::set_fp8_byte_permute(variant / 2 == 1);
    TestWeight t = make_weight(DType::kF8E4M3, out, in, rng, 128, 128);
    uint8_t* codes = t.bytes.data() + kMisalign;
    if (sparse_subnormals) {  // every code normal (exponent 1..15, no NaN), then a few of exponent 0
      for (int64_t i = 0; i < out * in; ++i) codes[i] = static_cast<uint8_t>((codes[i] & 0x87) | (1 + i % 14) << 3);
      for (int64_t i = 0; i < out * in; i += 97) codes[i] = static_cast<uint8_t>(i % 2 ? 0x80 | (i % 8) : i % 8);
    }
    ASSERT_TRUE(cpu::fp8_dot_used(k, ops::view_of(t.w)));
    for (int x_kind = 0; x_kind < 3; ++x_kind) {
      for (int64_t T = 1; T <= cpu::kGemvMaxTokens; ++T) {
        std::vector<float> x(static_cast<size_t>(T * in));
        for (float& v : x) v = normal(rng) * (x_kind == 1 ? 1e-30f : 1.0f);
        if (x_kind == 2) x[7] = 3e35f;
        std::vector<float> plain(static_cast<size_t>(T * out)), guarded(plain.size());
        cpu::set_fp8_denormal_guard(false);
        ops::linear(x.data(), T, t.w, plain.data());
        cpu::set_fp8_denormal_guard(true);
        ops::linear(x.data(), T, t.w, guarded.data());
        for (size_t i = 0; i < plain.size(); ++i)
          ASSERT_EQ(std::memcmp(&plain[i], &guarded[i], sizeof(float)), 0)
              << "output " << i << " T " << T << " x kind " << x_kind << (sparse_subnormals ? " sparse" : " random")
              << (cpu::fp8_byte_permute() ? ", byte permute" : ", unpacks") << ": " << plain[i] << " against "
              << guarded[i];
      }
    }
  }
  cpu::set_fp8_denormal_guard(saved_guard);
  cpu::set_fp8_byte_permute(saved_permute);
}

// The GFNI path's x: token t's input i at fp8_x_slot within its 64-input step (for the unpacks)
// or in place (for the byte permute), times 2^shift.
TEST(LinearKernels, Fp8GfniXLayout) {
  const cpu::LinearKernels& k = cpu::linear_kernels(cpu::supported(Isa::kAvx512) ? Isa::kAvx512 : Isa::kScalar);
  if (k.prepare_x_fp8 == nullptr) GTEST_SKIP() << "this CPU has no AVX-512 with GFNI";
  std::mt19937 rng(37);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t T = 3, in = 192;
  std::vector<float> x(T * in), data(T * in, -1.0f);
  for (float& v : x) v = normal(rng);
  for (bool in_order : {false, true})
    for (int shift : {120, 7, 0, -1}) {
      std::fill(data.begin(), data.end(), -1.0f);
      k.prepare_x_fp8(cpu::Fp8X{T, in, shift, x.data(), data.data(), in_order});
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < in; ++i) {
          const int64_t at = t * in + (in_order ? i : i / 64 * 64 + cpu::fp8_x_slot(i % 64));
          ASSERT_EQ(data[at], std::ldexp(x[t * in + i], shift))
              << "token " << t << " input " << i << " shift " << shift << (in_order ? " in order" : "");
        }
    }
  // The slots are a permutation of each step.
  std::vector<int> seen(64, 0);
  for (int64_t j = 0; j < 64; ++j) ++seen[cpu::fp8_x_slot(j)];
  for (int64_t j = 0; j < 64; ++j) EXPECT_EQ(seen[j], 1) << "slot " << j;
}

// Group sizes other than 32 (q4 needs an even one).
TEST(LinearKernels, QuantizedGroupSizes) {
  IsaGuard guard;
  std::mt19937 rng(99);
  for (Isa isa : cpu::supported_isas()) {
    cpu::set_active_isa(isa);
    for (DType d : {DType::kI8, DType::kU8})
      for (int64_t group : {2, 10, 64, 128}) {
        TestWeight t = make_weight(d, 9, 640, rng, 128, 128, group);
        for (int64_t T : kTokens)
          expect_matches_reference(t.w, T, rng, name(isa, d, 9, 640, T) + " group " + std::to_string(group));
      }
  }
}

// A NaN or an infinity in one weight (or, for q8/q4, in one group scale) reaches that row's
// outputs as it does in the reference, on both paths, and leaves the other rows alone.
TEST(LinearKernels, NanAndInfPropagate) {
  IsaGuard guard;
  std::mt19937 rng(5);
  const uint16_t f16_nan = 0x7e00, f16_inf = 0x7c00, bf16_inf = 0x7f80;
  for (Isa isa : cpu::supported_isas()) {
    cpu::set_active_isa(isa);
    for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kI8, DType::kU8})
      for (bool inf : {false, true}) {
        if (inf && d == DType::kF8E4M3) continue;  // e4m3fn has no infinity
        TestWeight t = make_weight(d, 20, 96, rng);
        uint8_t* data = t.bytes.data() + kMisalign;
        const int64_t row = 13, col = 50;
        switch (d) {
          case DType::kF32: {
            const float v = inf ? INFINITY : NAN;
            std::memcpy(data + 4 * (row * 96 + col), &v, 4);
            break;
          }
          case DType::kBF16: std::memcpy(data + 2 * (row * 96 + col), inf ? &bf16_inf : &f16_nan, 2); break;
          case DType::kF16: std::memcpy(data + 2 * (row * 96 + col), inf ? &f16_inf : &f16_nan, 2); break;
          case DType::kF8E4M3: data[row * 96 + col] = 0xff; break;
          default:  // group scale
            std::memcpy(t.scale_bytes.data() + 1 + 2 * (row * 3 + 1), inf ? &f16_inf : &f16_nan, 2);
            break;
        }
        for (int64_t T : {1, 3, 17})
          expect_matches_reference(t.w, T, rng, name(isa, d, 20, 96, T) + (inf ? " inf" : " nan"));
      }
  }
}

// Large enough for several threads and several panels per thread on the packed path, with T
// around the path switch.
TEST(LinearKernels, ThreadedShapes) {
  IsaGuard guard;
  std::mt19937 rng(11);
  for (Isa isa : cpu::supported_isas()) {
    cpu::set_active_isa(isa);
    for (DType d : {DType::kBF16, DType::kF8E4M3, DType::kU8}) {
      TestWeight t = make_weight(d, 300, 768, rng);
      for (int64_t T : {1, 4, 5, 33}) expect_matches_reference(t.w, T, rng, name(isa, d, 300, 768, T));
      // Two input blocks (cpu::kKc), the second ending in a partial decode chunk and FP8 block.
      TestWeight wide = make_weight(d, 70, cpu::kKc + 224, rng);
      for (int64_t T : {5, 33}) expect_matches_reference(wide.w, T, rng, name(isa, d, 70, cpu::kKc + 224, T));
    }
  }
}

// ops::accumulate_rows (x^T W over a block of rows, MLA's W_UK absorption at decode) against
// its double-precision twin over decode_rows, for every family and format: widths the vector
// kernel takes (whole vectors, with and without a partial register block) and widths it hands
// back to the decode-and-add fallback, several row blocks, a y that already holds values, and
// FP8 with and without the known-finite mark. |fast - ref| <= 1e-5 * (|y| + sum_j |a_j w_ji|).
TEST(LinearKernels, AccumulateRowsMatchesTheReference) {
  IsaGuard guard;
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for_each_family([&](Isa isa, const cpu::LinearKernels& k) {
    for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kI8, DType::kU8})
      for (int64_t in : {512, 96, 160, 130})
        for (int64_t group : {32, 16, 64}) {  // q4 pairs: whole in a group (AVX-512: 32 inputs) or not
          if (group != 32 && d != DType::kU8) continue;
          if ((d == DType::kI8 || d == DType::kU8) && in % group != 0) continue;
          TestWeight t = make_weight(d, 140, in, rng, 128, 128, group);
          for (bool finite : {false, true}) {
            if (finite && d != DType::kF8E4M3) continue;
            t.w.finite = finite;
            for (auto [r0, n] : {std::pair<int64_t, int64_t>{0, 128}, {131, 9}, {7, 1}}) {
              std::vector<float> a(static_cast<size_t>(n)), y(static_cast<size_t>(in));
              for (float& v : a) v = normal(rng);
              for (float& v : y) v = normal(rng);
              std::vector<float> got = y, want = y;
              ops::accumulate_rows(t.w, r0, n, a.data(), got.data());
              ops::accumulate_rows_reference(t.w, r0, n, a.data(), want.data());
              std::vector<float> rows(static_cast<size_t>(n * in));
              ops::decode_rows(t.w, r0, n, rows.data());
              std::vector<double> tol(static_cast<size_t>(in));
              for (int64_t i = 0; i < in; ++i) {
                double m = std::fabs(y[i]);
                for (int64_t j = 0; j < n; ++j) m += std::fabs(static_cast<double>(a[j]) * rows[j * in + i]);
                tol[i] = 1e-5 * m + 1e-30;
              }
              const std::string what = name(isa, d, n, in, 1) + " rows " + std::to_string(r0) + " group " +
                                       std::to_string(group) + (finite ? " finite" : "");
              expect_outputs_near(got, want, tol, in, what, "reference");
              // The vector kernel itself takes every width that is whole vectors (FP8: when known
              // finite), so the comparison above is not only the fallback's.
              if (k.accumulate_rows != nullptr && in % 32 == 0 && (d != DType::kF8E4M3 || finite)) {
                std::vector<float> direct = y;
                EXPECT_TRUE(k.accumulate_rows(ops::view_of(t.w), r0, n, a.data(), direct.data())) << what;
                EXPECT_EQ(std::memcmp(direct.data(), got.data(), 4 * got.size()), 0) << what;
              }
            }
          }
        }
  });
}

// NaN codes, infinite weights and non-finite group scales: accumulate_rows gives NaN and
// infinity where its reference does (the kernel declines such blocks; the fallback decodes).
TEST(LinearKernels, AccumulateRowsPropagatesNanAndInf) {
  IsaGuard guard;
  std::mt19937 rng(22);
  const uint16_t f16_nan = 0x7e00, f16_inf = 0x7c00;
  for (Isa isa : cpu::supported_isas()) {
    cpu::set_active_isa(isa);
    for (DType d : {DType::kF8E4M3, DType::kU8, DType::kI8, DType::kF32})
      for (bool inf : {false, true}) {
        if (inf && d == DType::kF8E4M3) continue;  // e4m3fn has no infinity
        TestWeight t = make_weight(d, 16, 128, rng);
        uint8_t* data = t.bytes.data() + kMisalign;
        const int64_t row = 5, col = 70;
        if (d == DType::kF8E4M3) {
          data[row * 128 + col] = 0x7f;
        } else if (d == DType::kF32) {
          const float v = inf ? INFINITY : NAN;
          std::memcpy(data + 4 * (row * 128 + col), &v, 4);
        } else {
          std::memcpy(t.scale_bytes.data() + 1 + 2 * (row * 4 + col / 32), inf ? &f16_inf : &f16_nan, 2);
        }
        std::vector<float> a(16, 0.5f), got(128, 1.0f), want(128, 1.0f);
        ops::accumulate_rows(t.w, 0, 16, a.data(), got.data());
        ops::accumulate_rows_reference(t.w, 0, 16, a.data(), want.data());
        std::vector<double> tol(128, 1e-3);
        expect_outputs_near(got, want, tol, 128, name(isa, d, 16, 128, 1) + (inf ? " inf" : " nan"), "reference",
                            /*nan_for_inf=*/false);
        const bool hit = std::isnan(want[col]) || std::isinf(want[col]);
        EXPECT_TRUE(hit) << "the reference must see the bad value";
      }
  }
}

// Calls body(isa, compute type) with every family this CPU has made active, under each compute type.
template <class Body>
void for_each_family_and_compute_type(Body&& body) {
  for (Isa isa : cpu::supported_isas()) {
    cpu::set_active_isa(isa);
    for (cpu::ComputeType c : {cpu::ComputeType::kF32, cpu::ComputeType::kBf16}) {
      cpu::ScopedComputeType compute(c);
      body(isa, c);
    }
  }
}

// The column-tiled walk (linear_kernels.h): every (row, input) exactly once, tiles on `align`,
// `first` on each row's first tile only, and every prefetch pointer either the item rows_ahead
// further along the walk (same position within its tile) or, near the end, the row being read.
TEST(LinearKernels, ColumnTilesWalkEveryRowAndInputOnce) {
  for (auto [in, x_bytes, w_bytes, align] :
       {std::tuple<int64_t, int64_t, int64_t, int64_t>{7168, 4, 2, 64}, {7168, 4, 1, 128}, {16384, 4, 1, 128},
        {18432, 2, 2, 64}, {300, 4, 4, 64}, {5000, 4, 4, 64}, {4096, 2, 1, 128}}) {
    const cpu::ColumnTiles tiles = cpu::column_tiles(in, x_bytes, w_bytes, align, 8192);
    const std::string what = "in " + std::to_string(in) + " x_bytes " + std::to_string(x_bytes) + " w_bytes " +
                             std::to_string(w_bytes);
    if (in * (x_bytes + w_bytes) <= cpu::kTileBytes) {
      EXPECT_EQ(tiles.count, 1) << what;
    } else {
      EXPECT_GT(tiles.count, 1) << what;
      EXPECT_EQ(tiles.width % align, 0) << what;
      EXPECT_LE(tiles.width * (x_bytes + w_bytes), cpu::kTileBytes + align * (x_bytes + w_bytes)) << what;
    }
    for (auto [out, r0, r1] : {std::tuple<int64_t, int64_t, int64_t>{40, 0, 40}, {40, 3, 37}, {40, 5, 6}}) {
      std::vector<uint8_t> data(static_cast<size_t>(out * in * w_bytes));
      cpu::WeightView w{w_bytes == 1 ? DType::kF8E4M3 : w_bytes == 2 ? DType::kBF16 : DType::kF32, out, in,
                        data.data()};
      struct Item {
        int64_t r, c0, c1;
        const uint8_t* ahead;
        bool first;
      };
      std::vector<Item> walk;
      cpu::for_each_tile_row(w, r0, r1, tiles, w_bytes, 8192,
                             [&](int64_t r, int64_t c0, int64_t c1, const uint8_t* ahead, bool first) {
                               walk.push_back({r, c0, c1, ahead, first});
                             });
      std::vector<int> seen(static_cast<size_t>(out * in), 0);
      const int64_t rb = in * w_bytes;
      for (size_t n = 0; n < walk.size(); ++n) {
        const Item& it = walk[n];
        ASSERT_TRUE(it.r >= r0 && it.r < r1 && it.c0 < it.c1 && it.c1 <= in) << what;
        EXPECT_EQ(it.first, it.c0 == 0) << what << " row " << it.r;
        EXPECT_EQ(it.c0 % (tiles.count > 1 ? tiles.width : in), 0) << what;
        for (int64_t i = it.c0; i < it.c1; ++i) ++seen[static_cast<size_t>(it.r * in + i)];
        const uint8_t* own = w.data + it.r * rb;
        if (tiles.count == 1) {
          EXPECT_EQ(it.ahead, own + 8192) << what;
          continue;
        }
        const size_t later = n + static_cast<size_t>(tiles.rows_ahead);
        if (it.ahead == own) {  // nothing rows_ahead on inside [r0, r1): only in the last two blocks
          EXPECT_GE(it.r, r1 - 2 * cpu::kTileBlockRows) << what << " item " << n;
          continue;
        }
        ASSERT_LT(later, walk.size()) << what << " item " << n;
        // Same position within the tile: at byte b of tile c0 the prefetch reads ahead + b.
        EXPECT_EQ(it.ahead + it.c0 * w_bytes, w.data + walk[later].r * rb + walk[later].c0 * w_bytes)
            << what << " item " << n;
      }
      for (int64_t r = 0; r < out; ++r)
        for (int64_t i = 0; i < in; ++i)
          ASSERT_EQ(seen[static_cast<size_t>(r * in + i)], r >= r0 && r < r1 ? 1 : 0) << what << " row " << r << " input " << i;
    }
  }
}

// Products wide enough to be walked in column tiles (x and a row past kTileBytes), float32 compute
// on every family: the float kernels (F32, BF16, F16, FP8) and the GFNI FP8 kernel (the tiled
// kernels; vdpbf16ps is not tiled). Row ranges inside a block of kTileBlockRows, a NaN code in the
// last tile, linear_rows giving linear's bits, and a token's bits the same alone as among T.
TEST(LinearKernels, TiledProductsMatchTheReference) {
  IsaGuard guard;
  std::mt19937 rng(41);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (Isa isa : cpu::supported_isas()) {
    cpu::set_active_isa(isa);
    for (auto [d, in] : {std::pair<DType, int64_t>{DType::kF32, 4096}, {DType::kBF16, 4608}, {DType::kF16, 4608},
                         {DType::kF8E4M3, 6144}}) {
      TestWeight t = make_weight(d, 37, in, rng);
      EXPECT_GT(cpu::column_tiles(in, 4, d == DType::kF8E4M3 ? 1 : d == DType::kF32 ? 4 : 2, 64, 8192).count, 1);
      for (int64_t T = 1; T <= cpu::kGemvMaxTokens; ++T) expect_matches_reference(t.w, T, rng, name(isa, d, 37, in, T) + " tiled");
      // A token gets the same bits alone as among T (the tiles do not depend on T).
      for (int64_t T = 2; T <= cpu::kGemvMaxTokens; ++T) {
        std::vector<float> xs(static_cast<size_t>(T * in)), ys(static_cast<size_t>(T * 37)), y1(37);
        for (float& v : xs) v = normal(rng);
        ops::linear(xs.data(), T, t.w, ys.data());
        for (int64_t tok = 0; tok < T; ++tok) {
          ops::linear(xs.data() + tok * in, 1, t.w, y1.data());
          EXPECT_EQ(0, std::memcmp(y1.data(), ys.data() + tok * 37, y1.size() * sizeof(float)))
              << name(isa, d, 37, in, T) << " token " << tok << " alone";
        }
      }
      std::vector<float> x(static_cast<size_t>(in));
      for (float& v : x) v = normal(rng);
      std::vector<float> all(37), part(20);
      ops::linear(x.data(), 1, t.w, all.data());
      ops::linear_rows(x.data(), t.w, 9, 20, part.data());
      EXPECT_EQ(0, std::memcmp(part.data(), all.data() + 9, part.size() * sizeof(float))) << name(isa, d, 37, in, 1);
      if (d == DType::kF8E4M3) {
        t.bytes[kMisalign + 20 * in + in - 100] = 0xff;  // row 20, last tile
        for (int64_t T : {1, 4}) expect_matches_reference(t.w, T, rng, name(isa, d, 37, in, T) + " tiled, NaN code");
      }
    }
  }
}

// ops::linear_rows (one x against a range of rows, on the calling thread) runs those rows exactly
// as ops::linear_f32 runs them for one token, on the float and the integer paths, whatever the
// compute type (the same bits), and on the float path it equals the reference product's rows:
// every family and format, ranges at FP8 block starts and inside a block.
TEST(LinearKernels, LinearRowsEqualTheRowsOfLinear) {
  IsaGuard guard;
  std::mt19937 rng(19);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for_each_family_and_compute_type([&](Isa isa, cpu::ComputeType c) {
    for (bool int8 : {false, true}) {
      cpu::set_int8_dot(int8);
      for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kI8, DType::kU8}) {
        TestWeight t = make_weight(d, 300, 256, rng);
        std::vector<float> x(256);
        for (float& v : x) v = normal(rng);
        std::vector<float> all(300), ref(300);
        ops::linear_f32(x.data(), 1, t.w, all.data());
        ops::linear_reference(x.data(), 1, t.w, ref.data());
        const std::vector<double> mag = magnitude(x, 1, t.w);
        for (auto [r0, n] : {std::pair<int64_t, int64_t>{0, 300}, {128, 128}, {256, 44}, {130, 7}, {299, 1}}) {
          const std::string what = name(isa, d, 300, 256, 1) + (int8 ? " int8" : "") + " compute " +
                                   std::string(cpu::compute_type_name(c)) + " rows [" + std::to_string(r0) + ", " +
                                   std::to_string(r0 + n) + ")";
          std::vector<float> y(static_cast<size_t>(n), -7.0f);
          ops::linear_rows(x.data(), t.w, r0, n, y.data());
          EXPECT_EQ(0, std::memcmp(y.data(), all.data() + r0, static_cast<size_t>(n) * sizeof(float))) << what;
          if (int8) continue;  // the integer path quantizes x: held to its own twin (linear_int8_test)
          for (int64_t j = 0; j < n; ++j)
            EXPECT_LE(std::fabs(static_cast<double>(y[j]) - ref[r0 + j]), 1e-5 * mag[r0 + j] + 1e-30)
                << what << " row " << r0 + j;
        }
      }
    }
  });
}

// ops::linear_batch gives every job the bits ops::linear gives it alone: every family, compute type
// and format (integer path on and off), jobs sharing one x (an MoE layer's gate and up at decode)
// and jobs with their own, several token counts in one batch, a job with no rows, mixed formats,
// and a batch with a prefill-sized job (which runs the jobs one at a time).
TEST(LinearKernels, BatchGivesEachJobTheBitsOfLinear) {
  IsaGuard guard;
  std::mt19937 rng(29);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random_x = [&](int64_t n) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = normal(rng);
    return x;
  };
  for_each_family_and_compute_type([&](Isa isa, cpu::ComputeType c) {
    for (bool int8 : {false, true}) {
      cpu::set_int8_dot(int8);
      for (DType d : {DType::kF32, DType::kBF16, DType::kF8E4M3, DType::kI8, DType::kU8}) {
        for (int64_t big_T : {int64_t{0}, int64_t{9}}) {  // 9: a prefill-sized job joins the batch
          // Jobs as an MoE layer's: two share x0, one has its own x with 3 tokens, one is empty (no
          // rows), one has the shape of the first two but its own x (must not share x0's
          // preparation); then a BF16 job on x0 (another format in the same batch).
          std::vector<TestWeight> ws;
          ws.push_back(make_weight(d, 300, 256, rng));
          ws.push_back(make_weight(d, 130, 256, rng));
          ws.push_back(make_weight(d, 77, 512, rng));
          ws.push_back(make_weight(d, 0, 256, rng));
          ws.push_back(make_weight(d, 64, 256, rng));
          ws.push_back(make_weight(DType::kBF16, 33, 256, rng));
          const std::vector<float> x0 = random_x(256), x1 = random_x(256), x2 = random_x(3 * 512),
                                   xb = random_x(9 * 256);
          struct Spec {
            const float* x;
            int64_t T;
          };
          std::vector<Spec> specs = {{x0.data(), 1}, {x0.data(), 1}, {x2.data(), 3},
                                     {x0.data(), 1}, {x1.data(), 1}, {x0.data(), 1}};
          if (big_T > 0) specs.push_back({xb.data(), big_T}), ws.push_back(make_weight(d, 40, 256, rng));
          std::vector<std::vector<float>> batched, alone;
          std::vector<ops::LinearJob> jobs;
          for (size_t i = 0; i < specs.size(); ++i) {
            batched.emplace_back(static_cast<size_t>(specs[i].T * ws[i].w.out), -7.0f);
            alone.emplace_back(batched.back().size(), -9.0f);
          }
          for (size_t i = 0; i < specs.size(); ++i) {
            jobs.push_back({specs[i].x, specs[i].T, &ws[i].w, batched[i].data()});
            ops::linear(specs[i].x, specs[i].T, ws[i].w, alone[i].data());
          }
          ops::linear_batch(jobs);
          for (size_t i = 0; i < specs.size(); ++i)
            EXPECT_EQ(0, std::memcmp(batched[i].data(), alone[i].data(), batched[i].size() * sizeof(float)))
                << name(isa, ws[i].w.dtype, ws[i].w.out, ws[i].w.in, specs[i].T) << (int8 ? " int8" : "")
                << " compute " << cpu::compute_type_name(c) << " job " << i << (big_T > 0 ? " (with a prefill job)" : "");
        }
      }
    }
  });
}

// WeightView::finite (every element checked finite at load) only removes the FP8 kernels' NaN
// checks: on finite weights, every family, compute type and path gives the same bits with and
// without it. A NaN code read under the promise would give a finite number, so the promise must
// come from a real check (runtime::load_model); without it NaN still propagates (NanAndInfPropagate).
TEST(LinearKernels, KnownFiniteWeightsGiveTheSameBits) {
  IsaGuard guard;
  std::mt19937 rng(23);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for_each_family_and_compute_type([&](Isa isa, cpu::ComputeType c) {
    for (auto [out, in] : {std::pair<int64_t, int64_t>{33, 300}, {130, 520}, {7, 77}, {40, 640}}) {
      TestWeight t = make_weight(DType::kF8E4M3, out, in, rng);
      for (int64_t T : {1, 2, 3, 4, 5, 17}) {
        std::vector<float> x(static_cast<size_t>(T * in));
        for (float& v : x) v = normal(rng);
        std::vector<float> checked(static_cast<size_t>(T * out)), trusted(checked.size());
        t.w.finite = false;
        ops::linear(x.data(), T, t.w, checked.data());
        t.w.finite = true;
        ops::linear(x.data(), T, t.w, trusted.data());
        EXPECT_EQ(0, std::memcmp(checked.data(), trusted.data(), checked.size() * sizeof(float)))
            << name(isa, DType::kF8E4M3, out, in, T) << " compute " << cpu::compute_type_name(c);
      }
      std::vector<float> rows_checked(static_cast<size_t>(out * in)), rows_trusted(rows_checked.size());
      t.w.finite = false;
      ops::decode_rows_fast(t.w, 0, out, rows_checked.data());
      t.w.finite = true;
      ops::decode_rows_fast(t.w, 0, out, rows_trusted.data());
      EXPECT_EQ(0, std::memcmp(rows_checked.data(), rows_trusted.data(), rows_checked.size() * sizeof(float)))
          << name(isa, DType::kF8E4M3, out, in, 0) << " decode_rows_fast";
    }
  });
}

// The packed product's panel transposition (LinearKernels::transpose_panel) against the plain
// loop it replaces: every row count 0..nr (the rows past n zero), column counts from 1 to a full
// block, over a panel buffer filled with garbage first.
TEST(LinearKernels, TransposePanelMatchesThePlainLoop) {
  std::mt19937 rng(43);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int families = 0;
  for (Isa isa : cpu::supported_isas()) {
    const cpu::LinearKernels& k = cpu::linear_kernels(isa);
    if (k.transpose_panel == nullptr) continue;
    ++families;
    const int64_t nr = k.nr;
    for (int64_t kc : {int64_t{1}, int64_t{7}, int64_t{16}, int64_t{100}, cpu::kKc}) {
      std::vector<float> rows(static_cast<size_t>(nr * kc));
      for (float& v : rows) v = normal(rng);
      for (int64_t n = 0; n <= nr; ++n) {
        std::vector<float> wp(static_cast<size_t>(kc * nr), NAN), want(wp.size(), 0.0f);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t kk = 0; kk < kc; ++kk) want[kk * nr + j] = rows[j * kc + kk];
        k.transpose_panel(rows.data(), n, kc, wp.data());
        for (size_t i = 0; i < wp.size(); ++i)
          ASSERT_EQ(std::memcmp(&wp[i], &want[i], sizeof(float)), 0)
              << cpu::isa_name(isa) << " n " << n << " kc " << kc << " at " << i << ": " << wp[i] << " for " << want[i];
      }
    }
  }
  if (families == 0) GTEST_SKIP() << "no kernel family on this CPU has a panel transposition";
}

}  // namespace
}  // namespace dseek
