// A [out, in] weight as the matrix kernels see it (the fields of ops::LinearWeight; see
// src/ops/linear.h for the formats), and the scalar facts every kernel family shares: where a
// row starts, how a row splits into "segments" of one scale each, and one element's value.
//
// Segment: the inputs of a row that share one scale: an FP8 block of block_cols inputs, a q8/q4
// group of group_size inputs, or the whole row for F32/BF16/F16 (scale 1). Kernels decode a
// segment with its unscaled values times the segment's scale, so a decoded weight is the same
// float32 number the reference decoder (ops::decode_rows) produces: one rounding, value * scale.
#pragma once

#include <cstdint>

#include "base/dtype.h"
#include "base/float_types.h"

namespace dseek::cpu {

struct WeightView {
  DType dtype = DType::kF32;
  int64_t out = 0, in = 0;
  const uint8_t* data = nullptr;      // any alignment
  const float* scale_inv = nullptr;   // FP8: [ceil(out / block_rows), ceil(in / block_cols)]
  int64_t block_rows = 128, block_cols = 128;
  const uint8_t* group_scales = nullptr;  // q8/q4: F16 [out, in / group_size], any alignment
  int64_t group_size = 32;
  // Every element is known to be finite (the loader checked each byte): the FP8 kernels then
  // skip their per-byte NaN checks, about a sixth of the bf16 matrix-vector kernel's work.
  bool finite = false;
};

constexpr bool is_scaled(DType d) { return d == DType::kF8E4M3 || d == DType::kI8 || d == DType::kU8; }

inline int64_t row_bytes(const WeightView& w) {
  switch (w.dtype) {
    case DType::kF32: return w.in * 4;
    case DType::kBF16:
    case DType::kF16: return w.in * 2;
    case DType::kU8: return w.in / 2;
    default: return w.in;  // FP8, q8
  }
}

inline const uint8_t* row_ptr(const WeightView& w, int64_t row) { return w.data + row * row_bytes(w); }

inline int64_t segment_len(const WeightView& w) {
  if (w.dtype == DType::kF8E4M3) return w.block_cols;
  if (w.dtype == DType::kI8 || w.dtype == DType::kU8) return w.group_size;
  return w.in > 0 ? w.in : 1;
}

// Scale of segment `seg` of row `row` (1 for the unscaled formats).
inline float segment_scale(const WeightView& w, int64_t row, int64_t seg) {
  if (w.dtype == DType::kF8E4M3) {
    const int64_t scale_cols = (w.in + w.block_cols - 1) / w.block_cols;
    return w.scale_inv[(row / w.block_rows) * scale_cols + seg];
  }
  if (w.dtype == DType::kI8 || w.dtype == DType::kU8) {
    return f16_to_f32(load_u16(w.group_scales + 2 * (row * (w.in / w.group_size) + seg)));
  }
  return 1.0f;
}

// Unscaled value of input i of a row (q4: the nibble minus 8).
template <DType D>
inline float raw_element(const uint8_t* row, int64_t i) {
  if constexpr (D == DType::kF32) return load_f32(row + 4 * i);
  if constexpr (D == DType::kBF16) return bf16_to_f32(load_u16(row + 2 * i));
  if constexpr (D == DType::kF16) return f16_to_f32(load_u16(row + 2 * i));
  if constexpr (D == DType::kF8E4M3) return fp8e4m3_to_f32(row[i]);
  if constexpr (D == DType::kI8) return static_cast<float>(static_cast<int8_t>(row[i]));
  if constexpr (D == DType::kU8) return static_cast<float>(((row[i / 2] >> (4 * (i & 1))) & 0xf) - 8);
  return 0.0f;
}

}  // namespace dseek::cpu
