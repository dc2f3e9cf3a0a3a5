// ops/product_clock.h: what dseek bench's matrix-product split counts.
#include "ops/product_clock.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <vector>

#include "base/float_types.h"
#include "ops/linear.h"

namespace dseek {
namespace {

// A BF16 [out, in] weight of ones.
struct Bf16Weight {
  std::vector<uint16_t> data;
  ops::LinearWeight w;
  Bf16Weight(int64_t out, int64_t in) : data(static_cast<size_t>(out * in), f32_to_bf16(1.0f)) {
    w.dtype = DType::kBF16;
    w.out = out;
    w.in = in;
    w.data = reinterpret_cast<const uint8_t*>(data.data());
  }
};

struct ClockOn {
  ClockOn() { ops::reset_product_totals(), ops::set_product_clock(true); }
  ~ClockOn() { ops::set_product_clock(false), ops::reset_product_totals(); }
};

TEST(ProductClock, CountsOuterProductsTheirMultiplyAddsAndWeightBytes) {
  Bf16Weight a(64, 128), b(32, 128);
  std::vector<float> x(3 * 128, 0.5f), ya(3 * 64), yb(3 * 32);
  ClockOn on;
  ops::linear(x.data(), 3, a.w, ya.data());
  ops::linear_f32(x.data(), 1, b.w, yb.data());
  const ops::LinearJob jobs[] = {{x.data(), 2, &a.w, ya.data()}, {x.data(), 2, &b.w, yb.data()}};
  ops::linear_batch(jobs);  // one product call for the clock
  const ops::ProductTotals t = ops::product_totals();
  EXPECT_EQ(t.calls, 3);
  EXPECT_EQ(t.macs, 3.0 * 64 * 128 + 1.0 * 32 * 128 + 2.0 * 64 * 128 + 2.0 * 32 * 128);
  EXPECT_EQ(t.weight_bytes, 2.0 * (64 * 128) * 2 + 2.0 * (32 * 128) * 2);
  EXPECT_GT(t.seconds, 0.0);
  EXPECT_EQ(ya[0], 64.0f);  // the products still ran
}

TEST(ProductClock, SkipsProductsInsideAParallelRegionAndCountsNothingWhenOff) {
  Bf16Weight a(16, 64);
  std::vector<float> x(64, 1.0f), y(16);
  ops::reset_product_totals();
  ops::linear(x.data(), 1, a.w, y.data());  // clock off
  EXPECT_EQ(ops::product_totals().calls, 0);
  ClockOn on;
#pragma omp parallel num_threads(2)
  {
    std::vector<float> mine(16);
    ops::linear_rows(x.data(), a.w, 0, 16, mine.data());
#pragma omp single
    ops::linear(x.data(), 1, a.w, y.data());  // a product called by one thread of a team
  }
  EXPECT_EQ(ops::product_totals().calls, 0);
}

TEST(ProductClock, StoredBytesCountScales) {
  ops::LinearWeight w;
  w.out = 256;
  w.in = 384;
  w.dtype = DType::kU8;  // q4: half a byte a weight, an F16 scale per group of 32
  w.group_size = 32;
  EXPECT_EQ(ops::stored_bytes(w), 256.0 * 384 / 2 + 256.0 * 384 / 32 * 2);
  w.dtype = DType::kI8;
  EXPECT_EQ(ops::stored_bytes(w), 256.0 * 384 + 256.0 * 384 / 32 * 2);
  w.dtype = DType::kF8E4M3;  // a float scale per 128 x 128 block: 2 x 3 blocks
  EXPECT_EQ(ops::stored_bytes(w), 256.0 * 384 + 4.0 * 6);
  w.dtype = DType::kBF16;
  EXPECT_EQ(ops::stored_bytes(w), 256.0 * 384 * 2);
}

}  // namespace
}  // namespace dseek
