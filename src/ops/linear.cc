#include "ops/linear.h"

#include <algorithm>
#include <vector>

#include "base/check.h"
#include "base/float_types.h"
#include "cpu/linear_kernels.h"
#include "ops/ops.h"
#include "ops/product_clock.h"

namespace dseek::ops {

void decode_rows(const LinearWeight& w, int64_t r0, int64_t n, float* dst) {
  const int64_t in = w.in;
  switch (w.dtype) {
    case DType::kF32:
      for (int64_t r = 0; r < n; ++r) {
        const uint8_t* src = w.data + (r0 + r) * in * 4;
        std::copy_n(reinterpret_cast<const char*>(src), in * 4, reinterpret_cast<char*>(dst + r * in));
      }
      break;
    case DType::kBF16:
      for (int64_t r = 0; r < n; ++r) {
        const uint8_t* src = w.data + (r0 + r) * in * 2;
        float* d = dst + r * in;
        for (int64_t i = 0; i < in; ++i) d[i] = bf16_to_f32(load_u16(src + 2 * i));
      }
      break;
    case DType::kF16:
      for (int64_t r = 0; r < n; ++r) {
        const uint8_t* src = w.data + (r0 + r) * in * 2;
        float* d = dst + r * in;
        for (int64_t i = 0; i < in; ++i) d[i] = f16_to_f32(load_u16(src + 2 * i));
      }
      break;
    case DType::kF8E4M3: {
      const int64_t scale_cols = w.scale_cols();
      for (int64_t r = 0; r < n; ++r) {
        const int64_t row = r0 + r;
        const uint8_t* src = w.data + row * in;
        const float* scales = w.scale_inv + (row / w.block_rows) * scale_cols;
        float* d = dst + r * in;
        for (int64_t c0 = 0; c0 < in; c0 += w.block_cols) {
          const float s = scales[c0 / w.block_cols];
          const int64_t c1 = std::min(in, c0 + w.block_cols);
          for (int64_t i = c0; i < c1; ++i) d[i] = fp8e4m3_to_f32(src[i]) * s;
        }
      }
      break;
    }
    case DType::kI8:
    case DType::kU8: {
      // q8 / q4 (linear.h): one F16 scale per group of group_size inputs of a row.
      DSEEK_CHECK(w.group_scales != nullptr && w.group_size > 0 && in % w.group_size == 0 &&
                      (w.dtype == DType::kI8 || w.group_size % 2 == 0),
                  "q8/q4 weight without scales or with group size {} not dividing in = {}", w.group_size, in);
      const int64_t groups = in / w.group_size;
      const int64_t row_bytes = w.dtype == DType::kI8 ? in : in / 2;
      for (int64_t r = 0; r < n; ++r) {
        const int64_t row = r0 + r;
        const uint8_t* src = w.data + row * row_bytes;
        const uint8_t* scales = w.group_scales + row * groups * 2;
        float* d = dst + r * in;
        for (int64_t g = 0; g < groups; ++g) {
          const float s = f16_to_f32(load_u16(scales + 2 * g));
          for (int64_t i = g * w.group_size; i < (g + 1) * w.group_size; ++i) {
            const int q = w.dtype == DType::kI8 ? static_cast<int8_t>(src[i])
                                                : ((src[i / 2] >> (4 * (i % 2))) & 0xf) - 8;
            d[i] = static_cast<float>(q) * s;
          }
        }
      }
      break;
    }
    default:
      DSEEK_CHECK(false, "linear weight dtype {} has no decoder", dtype_name(w.dtype));
  }
}

cpu::WeightView view_of(const LinearWeight& w) {
  return {w.dtype, w.out, w.in, w.data, w.scale_inv, w.block_rows, w.block_cols, w.group_scales, w.group_size, w.finite};
}

void decode_rows_fast(const LinearWeight& w, int64_t r0, int64_t n, float* dst) {
  DSEEK_CHECK(!w.empty() && r0 >= 0 && n >= 0 && r0 + n <= w.out, "decode_rows_fast: rows [{}, {}) of {}", r0,
              r0 + n, w.out);
  if (n == 0 || w.in == 0) return;
  cpu::linear_kernels(cpu::active_isa()).decode_block(view_of(w), r0, n, 0, w.in, dst, w.in);
}

void accumulate_rows(const LinearWeight& w, int64_t r0, int64_t n, const float* a, float* y) {
  DSEEK_CHECK(!w.empty() && r0 >= 0 && n >= 0 && r0 + n <= w.out, "accumulate_rows: rows [{}, {}) of {}", r0,
              r0 + n, w.out);
  if (n == 0 || w.in == 0) return;
  const cpu::LinearKernels& k = cpu::linear_kernels(cpu::active_isa());
  if (k.accumulate_rows != nullptr && k.accumulate_rows(view_of(w), r0, n, a, y)) return;
  constexpr int64_t kRows = 8;  // decoded at a time: the block stays in L1 while it is added
  thread_local std::vector<float> block;
  block.resize(static_cast<size_t>(kRows * w.in));
  for (int64_t j0 = 0; j0 < n; j0 += kRows) {
    const int64_t m = std::min(kRows, n - j0);
    decode_rows_fast(w, r0 + j0, m, block.data());
    for (int64_t j = 0; j < m; ++j) axpy(a[j0 + j], block.data() + j * w.in, y, w.in);
  }
}

void accumulate_rows_reference(const LinearWeight& w, int64_t r0, int64_t n, const float* a, float* y) {
  std::vector<float> rows(static_cast<size_t>(n * w.in));
  decode_rows(w, r0, n, rows.data());
  for (int64_t i = 0; i < w.in; ++i) {
    double s = y[i];
    for (int64_t j = 0; j < n; ++j) s += static_cast<double>(a[j]) * rows[static_cast<size_t>(j * w.in + i)];
    y[i] = static_cast<float>(s);
  }
}

void linear_rows(const float* x, const LinearWeight& w, int64_t r0, int64_t n, float* y) {
  DSEEK_CHECK(!w.empty() && r0 >= 0 && n >= 0 && r0 + n <= w.out, "linear_rows: rows [{}, {}) of {}", r0, r0 + n,
              w.out);
  if (n == 0) return;
  if (w.in == 0) {
    std::fill(y, y + n, 0.0f);
    return;
  }
  // The kernel writes output r of a T = 1 product at y[r]: rows [r0, r0 + n) land in a buffer as
  // long as the weight, from which they are copied out.
  thread_local std::vector<float> all;
  if (static_cast<int64_t>(all.size()) < w.out) all.resize(static_cast<size_t>(w.out));
  cpu::linear_rows_with(cpu::linear_kernels(cpu::active_isa()), cpu::ComputeType::kF32, x, view_of(w), r0, r0 + n,
                        all.data());
  std::copy_n(all.data() + r0, n, y);
}

void linear(const float* x, int64_t T, const LinearWeight& w, float* y) {
  DSEEK_CHECK(!w.empty(), "linear on an unbound weight");
  const ProductTimer timer(T, w);
  // The kernels (src/cpu/linear_kernels.h) pick the path by T and the family by cpu::active_isa().
  cpu::linear(x, T, view_of(w), y);
}

void linear_batch(std::span<const LinearJob> jobs) {
  std::vector<cpu::LinearJob> cj;
  cj.reserve(jobs.size());
  for (const LinearJob& j : jobs) {
    DSEEK_CHECK(j.w != nullptr && !j.w->empty(), "linear_batch: job {} has an unbound weight", cj.size());
    cj.push_back({j.x, j.T, view_of(*j.w), j.y});
  }
  const ProductTimer timer(jobs);
  cpu::linear_batch(cj);
}

void linear_f32(const float* x, int64_t T, const LinearWeight& w, float* y) {
  DSEEK_CHECK(!w.empty(), "linear on an unbound weight");
  const ProductTimer timer(T, w);
  cpu::linear_with(cpu::linear_kernels(cpu::active_isa()), cpu::ComputeType::kF32, x, T, view_of(w), y);
}

void linear_reference(const float* x, int64_t T, const LinearWeight& w, float* y) {
  std::vector<float> row(static_cast<size_t>(w.in));
  for (int64_t r = 0; r < w.out; ++r) {
    decode_rows(w, r, 1, row.data());
    for (int64_t t = 0; t < T; ++t) {
      double acc = 0.0;
      for (int64_t i = 0; i < w.in; ++i) acc += static_cast<double>(x[t * w.in + i]) * row[i];
      y[t * w.out + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace dseek::ops
