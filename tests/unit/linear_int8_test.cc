// The integer dot-product path for q8/q4 (cpu/linear_int8.h) against its slow twin
// cpu::linear_int8_reference (same activation rule, exact integer dots, double sums), to float
// rounding: |fast - twin| <= 1e-5 * sum_i |x_i w_i|. Against the float reference
// ops::linear_reference it may only differ by the int8 rounding of x: relative error of the
// output vector <= 2e-2 (a wrong scale or layout is off by far more). The quantized
// activations themselves are checked value by value against the scalar rule.
// Runs only where the CPU has AVX-512 VNNI (the path does not exist elsewhere).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/float_types.h"
#include "cpu/cpu_features.h"
#include "cpu/linear_int8.h"
#include "cpu/linear_kernels.h"
#include "linear_test_util.h"
#include "ops/linear.h"

namespace dseek {
namespace {

using testing::magnitude;
using ops::view_of;

using ops::LinearWeight;

const cpu::LinearKernels* int8_kernels() {
  if (!cpu::supported(cpu::Isa::kAvx512)) return nullptr;
  const cpu::LinearKernels& k = cpu::linear_kernels(cpu::Isa::kAvx512);
  return k.gemv_int8 != nullptr ? &k : nullptr;
}

#define REQUIRE_INT8_PATH()                                                       \
  const cpu::LinearKernels* kk = int8_kernels();                                  \
  if (kk == nullptr) GTEST_SKIP() << "no AVX-512 VNNI: the integer path is absent"

// Weight bytes and F16 group scales at odd addresses (checkpoints promise no alignment).
struct TestWeight {
  std::vector<uint8_t> bytes, scale_bytes;
  LinearWeight w;
};

// Scales: 0.02 x U(0.5, 1.5), or per group one of tiny / huge / zero when `extreme`.
TestWeight make_weight(DType d, int64_t out, int64_t in, int64_t group, std::mt19937& rng, bool extreme = false) {
  TestWeight t;
  const int64_t nbytes = d == DType::kU8 ? out * in / 2 : out * in;
  t.bytes.resize(static_cast<size_t>(nbytes) + 3);
  std::uniform_int_distribution<int> byte(0, 255), pick(0, 3);
  std::uniform_real_distribution<float> uni(0.5f, 1.5f);
  for (int64_t i = 0; i < nbytes; ++i) t.bytes[3 + i] = static_cast<uint8_t>(byte(rng));
  const int64_t n = out * (in / group);
  t.scale_bytes.resize(static_cast<size_t>(2 * n) + 1);
  for (int64_t i = 0; i < n; ++i) {
    float s = 0.02f * uni(rng);
    if (extreme) {
      const int p = pick(rng);
      s = p == 0 ? 1e-4f * uni(rng) : p == 1 ? 3e4f * uni(rng) : p == 2 ? 0.0f : s;
    }
    const uint16_t h = f32_to_f16(s);
    std::memcpy(t.scale_bytes.data() + 1 + 2 * i, &h, 2);
  }
  t.w.dtype = d;
  t.w.out = out;
  t.w.in = in;
  t.w.data = t.bytes.data() + 3;
  t.w.group_size = group;
  t.w.group_scales = t.scale_bytes.data() + 1;
  return t;
}

// Normal x; with `extreme`, each 32-input block is scaled by 1e-20, 1, 1e15 or is all zero, and
// some blocks hold one large value among small ones.
std::vector<float> make_x(int64_t T, int64_t in, std::mt19937& rng, bool extreme = false) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 4);
  std::vector<float> x(static_cast<size_t>(T * in));
  for (float& v : x) v = normal(rng);
  if (extreme)
    for (int64_t b = 0; b < T * in / 32; ++b) {
      const int p = pick(rng);
      const float f = p == 0 ? 1e-20f : p == 1 ? 1e15f : p == 2 ? 0.0f : 1.0f;
      for (int64_t i = 0; i < 32; ++i) x[b * 32 + i] *= f;
      if (p == 3) x[b * 32 + 7] = 1000.0f;
    }
  return x;
}

// The fast path (through the driver, all threads) against the twin and the float reference.
void check(const cpu::LinearKernels& k, const LinearWeight& w, const std::vector<float>& x, int64_t T,
           const std::string& what, bool extreme = false) {
  const cpu::WeightView v = view_of(w);
  ASSERT_TRUE(cpu::int8_dot_used(k, v)) << what;
  std::vector<float> y(static_cast<size_t>(T * w.out), -7.0f), twin(y.size()), ref(y.size());
  cpu::linear_with(k, x.data(), T, v, y.data());
  cpu::linear_int8_reference(x.data(), T, v, twin.data());
  ops::linear_reference(x.data(), T, w, ref.data());
  const std::vector<double> mag = magnitude(x, T, w);
  int bad = 0;
  double err2 = 0, ref2 = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double tol = 1e-5 * mag[i] + 1e-35;
    if (!(std::fabs(static_cast<double>(y[i]) - twin[i]) <= tol) && bad++ < 5)
      ADD_FAILURE() << what << " t=" << i / w.out << " r=" << i % w.out << ": " << y[i] << " vs twin " << twin[i]
                    << " (tol " << tol << ")";
    err2 += (static_cast<double>(y[i]) - ref[i]) * (static_cast<double>(y[i]) - ref[i]);
    ref2 += static_cast<double>(ref[i]) * ref[i];
  }
  // A vector of a few outputs can be near zero by cancellation; extreme blocks (one large value
  // among small ones) are coarse by design: those are held to the twin only.
  if (!extreme && y.size() >= 16) {
    EXPECT_LE(std::sqrt(err2), 2e-2 * std::sqrt(ref2)) << what << ": relative error against ops::linear_reference";
  }
}

std::string name(DType d, int64_t out, int64_t in, int64_t group, int64_t T, int threads) {
  return std::string(dtype_name(d)) + " [" + std::to_string(out) + "," + std::to_string(in) + "] group " +
         std::to_string(group) + " T=" + std::to_string(T) + " threads " + std::to_string(threads);
}

struct ThreadsGuard {
  int saved = omp_get_max_threads();
  ~ThreadsGuard() { omp_set_num_threads(saved); }
};

// The quantized activations, read back through the layout, are the scalar rule's codes and
// scales; the bias lanes are -offset x the sum of their inputs' codes; padding is zero.
TEST(LinearInt8, QuantizedActivationsFollowTheRule) {
  REQUIRE_INT8_PATH();
  std::mt19937 rng(3);
  for (DType d : {DType::kI8, DType::kU8})
    for (int64_t in : {32, 64, 96, 160, 2080})
      for (int64_t T : {1, 4}) {
        TestWeight t = make_weight(d, 4, in, 32, rng);
        std::vector<float> x = make_x(T, in, rng, true);
        if (in >= 64) x[static_cast<size_t>(in + 40 < T * in ? in + 40 : 40)] = NAN;  // one non-finite block
        const cpu::WeightView v = view_of(t.w);
        std::vector<float> buf((cpu::int8_x_bytes(T, v) + 3) / 4 + 16);
        void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) / 64 * 64);
        const cpu::Int8X q = cpu::prepare_int8_x(T, v, aligned);
        kk->quantize_x(x.data(), v, q);
        const std::string what = name(d, 4, in, 32, T, 1);
        int8_t codes[32];
        for (int64_t tt = 0; tt < T; ++tt) {
          for (int64_t b = 0; b < in / 32; ++b) {
            const float s = cpu::quantize_x_block(x.data() + tt * in + b * 32, codes);
            for (int64_t i = 0; i < 32; ++i) {
              ASSERT_EQ(cpu::int8_x_value(q, tt, b * 32 + i), codes[i]) << what << " t=" << tt << " i=" << b * 32 + i;
              const float fs = cpu::int8_x_scale(q, tt, b * 32 + i);
              ASSERT_TRUE(fs == s || (std::isnan(fs) && std::isnan(s))) << what << " i=" << b * 32 + i;
            }
          }
          const int64_t offset = d == DType::kI8 ? 128 : 8;
          for (int64_t c = 0; c < q.chunks; ++c)
            for (int64_t lane = 0; lane < 16; ++lane) {
              int64_t sum = 0;
              for (int64_t i = c * q.chunk_in; i < std::min(in, (c + 1) * q.chunk_in); ++i)
                if (cpu::int8_x_lane(q, i) == lane) sum += cpu::int8_x_value(q, tt, i);
              ASSERT_EQ(q.bias[(tt * q.chunks + c) * 16 + lane], -offset * sum) << what << " chunk " << c;
            }
          for (int64_t i = in; i < q.chunks * q.chunk_in; ++i) {
            ASSERT_EQ(cpu::int8_x_value(q, tt, i), 0) << what << " padding " << i;
            ASSERT_EQ(cpu::int8_x_scale(q, tt, i), 0.0f) << what << " padding " << i;
          }
        }
      }
}

// The weight-side tables send every input's lane to its own sub-block and group: lane_sub takes
// the lane of input i in its chunk to i's sub-block of the block, and block_group + sub_group take
// that sub-block to i's weight group, for group sizes that divide the 512-input block and ones
// that straddle it.
TEST(LinearInt8, TablesMapEveryLaneToItsGroup) {
  REQUIRE_INT8_PATH();
  std::mt19937 rng(11);
  for (DType d : {DType::kI8, DType::kU8})
    for (int64_t group : {32, 64, 96, 640})
      for (int64_t in : {group, int64_t{1920}, int64_t{2 * 1920}}) {
        if (in % group != 0) continue;
        TestWeight t = make_weight(d, 2, in, group, rng);
        const cpu::WeightView v = view_of(t.w);
        std::vector<float> buf((cpu::int8_x_bytes(1, v) + 3) / 4 + 16);
        void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) / 64 * 64);
        const cpu::Int8X q = cpu::prepare_int8_x(1, v, aligned);
        const std::string what = name(d, 2, in, group, 1, 1);
        ASSERT_EQ(q.blocks, (in + cpu::kInt8Block - 1) / cpu::kInt8Block) << what;
        for (int64_t i = 0; i < in; ++i) {
          const int64_t b = i / cpu::kInt8Block, j = i % cpu::kInt8Block / q.chunk_in;
          const int64_t sub = q.lane_sub[j * 16 + cpu::int8_x_lane(q, i)];
          ASSERT_EQ(sub, i % cpu::kInt8Block / cpu::kInt8Sub) << what << " input " << i;
          const int64_t loaded = q.sub_group[b * 16 + sub];
          ASSERT_TRUE(loaded >= 0 && loaded < 16) << what << " input " << i;
          ASSERT_EQ(q.block_group[b] + loaded, i / group) << what << " input " << i;
        }
      }
}

// A token gets the same bits alone as in a batch of 2-4 (seeded sampling and batched serving
// rely on it), whole blocks and a partial last block, groups of 32 and larger.
TEST(LinearInt8, ATokenGetsTheSameBitsAloneAndInABatch) {
  REQUIRE_INT8_PATH();
  std::mt19937 rng(12);
  for (DType d : {DType::kI8, DType::kU8})
    for (int64_t group : {32, 64})
      for (int64_t in : {1024, 1408, 2048 + 64}) {
        TestWeight t = make_weight(d, 9, in, group, rng);
        const cpu::WeightView v = view_of(t.w);
        for (int64_t T = 2; T <= cpu::kGemvMaxTokens; ++T) {
          const std::vector<float> x = make_x(T, in, rng);
          std::vector<float> batch(static_cast<size_t>(T * 9)), alone(9);
          cpu::linear_with(*kk, x.data(), T, v, batch.data());
          for (int64_t tt = 0; tt < T; ++tt) {
            cpu::linear_with(*kk, x.data() + tt * in, 1, v, alone.data());
            for (int64_t r = 0; r < 9; ++r)
              ASSERT_EQ(alone[r], batch[tt * 9 + r]) << name(d, 9, in, group, T, 1) << " token " << tt << " row " << r;
          }
        }
      }
}

// The rule by hand: a block whose largest |x| is 127 has d = 1 and integral x quantizes
// exactly; an all-zero block has d = 0 and codes 0 (no NaN); half-way values round to even.
TEST(LinearInt8, RuleByHand) {
  float x[32];
  int8_t q[32];
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i * 8 - 128 + (i == 0 ? 1 : 0));  // -127 .. 120
  EXPECT_EQ(cpu::quantize_x_block(x, q), 1.0f);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(q[i], static_cast<int8_t>(x[i]));
  for (float& v : x) v = 0.0f;
  EXPECT_EQ(cpu::quantize_x_block(x, q), 0.0f);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(q[i], 0);
  x[0] = 254.0f, x[1] = 5.0f, x[2] = 7.0f, x[3] = -3.0f;  // d = 2: 2.5 -> 2, 3.5 -> 4, -1.5 -> -2
  EXPECT_EQ(cpu::quantize_x_block(x, q), 2.0f);
  EXPECT_EQ(q[0], 127);
  EXPECT_EQ(q[1], 2);
  EXPECT_EQ(q[2], 4);
  EXPECT_EQ(q[3], -2);
  x[5] = INFINITY;
  EXPECT_TRUE(std::isnan(cpu::quantize_x_block(x, q)));
  for (int i = 0; i < 32; ++i) EXPECT_EQ(q[i], 0);
}

// Exactly representable activations (integers, one 127 per block: d = 1): the integer path has
// no activation rounding, so it matches the float reference to float rounding too.
TEST(LinearInt8, ExactActivationsMatchTheFloatReference) {
  REQUIRE_INT8_PATH();
  std::mt19937 rng(8);
  std::uniform_int_distribution<int> val(-127, 127);
  for (DType d : {DType::kI8, DType::kU8})
    for (int64_t T : {1, 3}) {
      TestWeight t = make_weight(d, 13, 288, 32, rng);
      std::vector<float> x(static_cast<size_t>(T * 288));
      for (size_t i = 0; i < x.size(); ++i) x[i] = i % 32 == 5 ? 127.0f : static_cast<float>(val(rng));
      std::vector<float> y(static_cast<size_t>(T * 13)), ref(y.size());
      cpu::linear_with(*kk, x.data(), T, view_of(t.w), y.data());
      ops::linear_reference(x.data(), T, t.w, ref.data());
      const std::vector<double> mag = magnitude(x, T, t.w);
      for (size_t i = 0; i < y.size(); ++i)
        EXPECT_NEAR(y[i], ref[i], 1e-5 * mag[i]) << dtype_name(d) << " T=" << T << " [" << i << "]";
    }
}

void sweep(DType d, bool extreme, uint32_t seed) {
  REQUIRE_INT8_PATH();
  ThreadsGuard threads;
  std::mt19937 rng(seed);
  for (int nt : {1, 2}) {
    omp_set_num_threads(nt);
    for (int64_t group : {32, 64})
      for (int64_t in : {32, 64, 96, 2048 + 32})
        for (int64_t out : {1, 7, 37}) {
          if (in % group != 0) continue;
          TestWeight t = make_weight(d, out, in, group, rng, extreme);
          for (int64_t T = 1; T <= cpu::kGemvMaxTokens; ++T)
            check(*kk, t.w, make_x(T, in, rng, extreme), T,
                  name(d, out, in, group, T, nt) + (extreme ? " extreme" : ""), extreme);
        }
  }
}

TEST(LinearInt8, Q8) { sweep(DType::kI8, false, 1); }
TEST(LinearInt8, Q4) { sweep(DType::kU8, false, 2); }
TEST(LinearInt8, Q8ExtremeScalesAndZeroBlocks) { sweep(DType::kI8, true, 3); }
TEST(LinearInt8, Q4ExtremeScalesAndZeroBlocks) { sweep(DType::kU8, true, 4); }

// Larger groups (several chunks and blocks per group, a group straddling weight-scale loads).
TEST(LinearInt8, LargeGroups) {
  REQUIRE_INT8_PATH();
  std::mt19937 rng(6);
  for (DType d : {DType::kI8, DType::kU8})
    for (int64_t group : {96, 128, 640}) {
      TestWeight t = make_weight(d, 9, 1920, group, rng);
      for (int64_t T : {1, 4}) check(*kk, t.w, make_x(T, 1920, rng), T, name(d, 9, 1920, group, T, 1));
    }
}

// A NaN activation makes every output of its token NaN; a NaN weight scale makes its row NaN
// and an infinite one its row non-finite; other rows stay finite.
TEST(LinearInt8, NonFiniteValuesPropagate) {
  REQUIRE_INT8_PATH();
  std::mt19937 rng(9);
  const uint16_t f16_nan = 0x7e00, f16_inf = 0x7c00;
  for (DType d : {DType::kI8, DType::kU8}) {
    TestWeight t = make_weight(d, 10, 96, 32, rng);
    std::vector<float> x = make_x(2, 96, rng), y(20);
    x[96 + 50] = NAN;
    cpu::linear_with(*kk, x.data(), 2, view_of(t.w), y.data());
    for (int r = 0; r < 10; ++r) {
      EXPECT_TRUE(std::isfinite(y[r])) << r;
      EXPECT_TRUE(std::isnan(y[10 + r])) << r;
    }
    for (bool inf : {false, true}) {
      std::memcpy(t.scale_bytes.data() + 1 + 2 * (6 * 3 + 1), inf ? &f16_inf : &f16_nan, 2);
      std::vector<float> x1 = make_x(1, 96, rng), y1(10);
      cpu::linear_with(*kk, x1.data(), 1, view_of(t.w), y1.data());
      for (int r = 0; r < 10; ++r) {
        if (r != 6) EXPECT_TRUE(std::isfinite(y1[r])) << r;
        else if (inf) EXPECT_FALSE(std::isfinite(y1[r]));
        else EXPECT_TRUE(std::isnan(y1[r]));
      }
    }
  }
}

// ops::linear takes the integer path for q8/q4 at T <= 4 on the avx512 family, and the override
// turns it off (then it is the float path: tight to the float reference).
TEST(LinearInt8, SelectionAndOverride) {
  REQUIRE_INT8_PATH();
  const cpu::Isa saved = cpu::active_isa();
  const bool saved_on = cpu::int8_dot_enabled();
  cpu::set_active_isa(cpu::Isa::kAvx512);
  std::mt19937 rng(10);
  TestWeight t = make_weight(DType::kU8, 20, 256, 32, rng);
  const std::vector<float> x = make_x(2, 256, rng);
  std::vector<float> y(40), twin(40), ref(40);
  cpu::linear_int8_reference(x.data(), 2, view_of(t.w), twin.data());
  ops::linear_reference(x.data(), 2, t.w, ref.data());
  const std::vector<double> mag = magnitude(x, 2, t.w);
  cpu::set_int8_dot(true);
  ops::linear(x.data(), 2, t.w, y.data());
  for (int i = 0; i < 40; ++i) EXPECT_NEAR(y[i], twin[i], 1e-5 * mag[i]) << "int8 path " << i;
  cpu::set_int8_dot(false);
  EXPECT_FALSE(cpu::int8_dot_used(*kk, view_of(t.w)));
  ops::linear(x.data(), 2, t.w, y.data());
  for (int i = 0; i < 40; ++i) EXPECT_NEAR(y[i], ref[i], 1e-5 * mag[i]) << "float path " << i;
  // Group sizes that are not a multiple of 32 never take it.
  cpu::set_int8_dot(true);
  TestWeight g16 = make_weight(DType::kI8, 4, 64, 16, rng);
  EXPECT_FALSE(cpu::int8_dot_used(*kk, view_of(g16.w)));
  EXPECT_FALSE(cpu::int8_dot_used(cpu::linear_kernels(cpu::Isa::kScalar), view_of(t.w)));
  cpu::set_int8_dot(saved_on);
  cpu::set_active_isa(saved);
}

}  // namespace
}  // namespace dseek
