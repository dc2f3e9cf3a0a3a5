// Shared by the matrix-kernel tests (linear_kernels_test, linear_int8_test, linear_bf16_test).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include <string>

#include "base/float_types.h"

#include "ops/linear.h"

namespace dseek::testing {

// got [T, out] against want, output by output: NaN where want is NaN; the same infinity where
// want is infinite (or NaN, when nan_for_inf); elsewhere |got - want| <= tol[i]. Reports the
// first five failures, named by `what` and `want_name`.
inline void expect_outputs_near(const std::vector<float>& got, const std::vector<float>& want,
                                const std::vector<double>& tol, int64_t out, const std::string& what,
                                const std::string& want_name, bool nan_for_inf = false) {
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    if (std::isnan(want[i])) {
      if (!std::isnan(got[i])) ++bad, ADD_FAILURE() << what << " [" << i << "]: " << got[i] << ", " << want_name << " NaN";
      continue;
    }
    if (std::isinf(want[i])) {
      if (nan_for_inf && std::isnan(got[i])) continue;
      if (got[i] != want[i])
        ++bad, ADD_FAILURE() << what << " [" << i << "]: " << got[i] << ", " << want_name << " " << want[i];
      continue;
    }
    if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= tol[i]))
      ++bad, ADD_FAILURE() << what << " t=" << i / out << " r=" << i % out << ": " << got[i] << " vs " << want_name << " "
                           << want[i] << " (tol " << tol[i] << ")";
  }
}

// sum_i |x_i w_i| per (t, r), w decoded by ops::decode_rows: the scale of the float32 rounding
// a dot product may carry, so the tests' bounds read |fast - slow| <= eps * magnitude.
inline std::vector<double> magnitude(const std::vector<float>& x, int64_t T, const ops::LinearWeight& w) {
  std::vector<float> row(static_cast<size_t>(w.in));
  std::vector<double> m(static_cast<size_t>(T * w.out));
  for (int64_t r = 0; r < w.out; ++r) {
    ops::decode_rows(w, r, 1, row.data());
    for (int64_t t = 0; t < T; ++t) {
      double s = 0;
      for (int64_t i = 0; i < w.in; ++i) s += std::fabs(static_cast<double>(x[t * w.in + i]) * row[i]);
      m[t * w.out + r] = s;
    }
  }
  return m;
}

// A weight with its bytes at an odd address (mapped safetensors promise no alignment).
struct TestWeight {
  std::vector<uint8_t> bytes, scale_bytes;
  std::vector<float> scales;  // FP8 block scales
  ops::LinearWeight w;
};

constexpr size_t kMisalign = 3;

inline TestWeight make_weight(DType dtype, int64_t out, int64_t in, std::mt19937& rng, int64_t block_rows = 128,
                       int64_t block_cols = 128, int64_t group = 32, float fp8_scale = 0.05f) {
  TestWeight t;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> uni(0.5f, 1.5f);
  int64_t nbytes = 0;
  switch (dtype) {
    case DType::kF32: nbytes = out * in * 4; break;
    case DType::kBF16:
    case DType::kF16: nbytes = out * in * 2; break;
    case DType::kU8: nbytes = out * in / 2; break;
    default: nbytes = out * in; break;
  }
  t.bytes.resize(static_cast<size_t>(nbytes) + kMisalign);
  uint8_t* d = t.bytes.data() + kMisalign;
  for (int64_t i = 0; i < out * in; ++i) {
    const float v = normal(rng);
    switch (dtype) {
      case DType::kF32: std::memcpy(d + 4 * i, &v, 4); break;
      case DType::kBF16: {
        const uint16_t h = f32_to_bf16(v);
        std::memcpy(d + 2 * i, &h, 2);
        break;
      }
      case DType::kF16: {
        const uint16_t h = f32_to_f16(v);
        std::memcpy(d + 2 * i, &h, 2);
        break;
      }
      case DType::kF8E4M3: {  // every byte but the two NaNs: normals, subnormals, zeros
        uint8_t b;
        do b = static_cast<uint8_t>(byte(rng)); while ((b & 0x7f) == 0x7f);
        d[i] = b;
        break;
      }
      default: break;
    }
  }
  if (dtype == DType::kI8 || dtype == DType::kU8)
    for (int64_t i = 0; i < nbytes; ++i) d[i] = static_cast<uint8_t>(byte(rng));
  t.w.dtype = dtype;
  t.w.out = out;
  t.w.in = in;
  t.w.data = d;
  if (dtype == DType::kF8E4M3) {
    t.w.block_rows = block_rows;
    t.w.block_cols = block_cols;
    const int64_t n = ((out + block_rows - 1) / block_rows) * t.w.scale_cols();
    for (int64_t i = 0; i < n; ++i) t.scales.push_back(fp8_scale * uni(rng));
    t.w.scale_inv = t.scales.data();
  }
  if (dtype == DType::kI8 || dtype == DType::kU8) {
    t.w.group_size = group;
    const int64_t n = out * (in / group);
    t.scale_bytes.resize(static_cast<size_t>(2 * n) + 1);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t h = f32_to_f16(0.02f * uni(rng));
      std::memcpy(t.scale_bytes.data() + 1 + 2 * i, &h, 2);  // odd address too
    }
    t.w.group_scales = t.scale_bytes.data() + 1;
  }
  return t;
}

}  // namespace dseek::testing
