// The slow twin of the integer dot-product path (linear_int8.h), in plain C++: the same
// activation rule, exact integer dot products per 32 inputs, double accumulation.
#include <vector>

#include "cpu/linear_int8.h"

namespace dseek::cpu {

void linear_int8_reference(const float* x, int64_t T, const WeightView& w, float* y) {
  const int64_t in = w.in, subs = in / kInt8Sub;
  std::vector<int8_t> q(static_cast<size_t>(in));
  std::vector<float> d(static_cast<size_t>(subs));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t s = 0; s < subs; ++s) d[s] = quantize_x_block(x + t * in + s * kInt8Sub, q.data() + s * kInt8Sub);
    for (int64_t r = 0; r < w.out; ++r) {
      const uint8_t* row = row_ptr(w, r);
      double acc = 0.0;
      for (int64_t s = 0; s < subs; ++s) {
        int64_t dot = 0;
        for (int64_t i = s * kInt8Sub; i < (s + 1) * kInt8Sub; ++i) {
          const int64_t v =
              w.dtype == DType::kI8 ? static_cast<int8_t>(row[i]) : ((row[i / 2] >> (4 * (i % 2))) & 0xf) - 8;
          dot += v * q[i];
        }
        const double ws = segment_scale(w, r, s * kInt8Sub / w.group_size);
        acc += ws * static_cast<double>(d[s]) * static_cast<double>(dot);
      }
      y[t * w.out + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace dseek::cpu
