// Shared by the matrix-kernel tests (linear_kernels_test, linear_int8_test).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ops/linear.h"

namespace dseek::testing {

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

}  // namespace dseek::testing
