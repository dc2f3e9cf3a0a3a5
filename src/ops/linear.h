// y = x W^T for a weight stored as in the checkpoint (BF16, F16, F32, or FP8 e4m3 with
// 128x128 block scales), computed in float32. Weights are read in place from the mapped
// file and decoded a few rows at a time into a thread-local buffer: no dequantized copy.
//
// Legend: T = tokens, in = input features, out = output features.
#pragma once

#include <cstdint>
#include <span>

#include "base/dtype.h"
#include "cpu/weight_view.h"

namespace dseek::ops {

// A [out, in] weight as stored. For FP8, scale_inv[ceil(out/block_rows), ceil(in/block_cols)]
// multiplies each block (DeepSeek's name notwithstanding, it is not inverted).
//
// Group-quantized integers written by `dseek quantize` (quantization_config.quant_method
// "dseek"), symmetric, one F16 scale per group of `group_size` consecutive inputs of a row:
//   q8 (dtype kI8): data is int8 [out, in];                 w[r, i] = q[r, i] * scale[r, i / group_size]
//   q4 (dtype kU8): data is packed [out, in / 2] bytes; byte b of a row holds input 2b in its low
//                   nibble and input 2b+1 in its high nibble, each nibble n meaning n - 8 in [-8, 7].
// group_scales is F16 [out, in / group_size] read in place (any alignment); in % group_size == 0.
struct LinearWeight {
  DType dtype = DType::kF32;
  int64_t out = 0, in = 0;
  const uint8_t* data = nullptr;  // row-major [out, in], any alignment
  const float* scale_inv = nullptr;  // FP8 only, aligned copy owned by the weights
  int64_t block_rows = 128, block_cols = 128;
  const uint8_t* group_scales = nullptr;  // q8/q4 only: F16 [out, in / group_size]
  int64_t group_size = 32;
  bool finite = false;  // every element checked finite at load (cpu::WeightView::finite)

  bool empty() const { return data == nullptr; }
  int64_t scale_cols() const { return (in + block_cols - 1) / block_cols; }
};

// The same weight as the matrix kernels see it (src/cpu/weight_view.h).
cpu::WeightView view_of(const LinearWeight& w);

// Decodes rows [r0, r0 + n) of w into dst [n, in] float32 (the reference decoder, scalar).
void decode_rows(const LinearWeight& w, int64_t r0, int64_t n, float* dst);

// The same floats, bit for bit, through the active kernel family's vector decoder: for hot
// paths that need a weight block as floats (MLA's absorbed W_UK / W_UV, per head and step).
void decode_rows_fast(const LinearWeight& w, int64_t r0, int64_t n, float* dst);

// y [in] += sum over j < n of a[j] * row r0 + j of W: x^T W over a block of rows (MLA's
// absorption q_lat = W_UK^T q_nope at decode). The active family streams the rows once with
// the columns in registers; weights that need the element-by-element rules (non-finite
// scales, FP8 NaN codes, odd widths) and the scalar family go through decode_rows_fast and
// an axpy per row. Float32 sums; the order differs from decode-then-axpy only in that a row's
// scale multiplies a[j] instead of the raw weight (one rounding moved).
void accumulate_rows(const LinearWeight& w, int64_t r0, int64_t n, const float* a, float* y);

// The same sum, element by element in double over decode_rows (for tests).
void accumulate_rows_reference(const LinearWeight& w, int64_t r0, int64_t n, const float* a, float* y);

// y [n] = rows [r0, r0 + n) of W times one x [in], on the calling thread only, each row exactly
// as linear_f32() computes it for one token (same family and path, integer dot products
// included: the rows are streamed, never decoded into a buffer). For per-head pieces of a weight
// inside a caller's own parallel loop (MLA's W_UV at decode). Float32 compute in either mode, as
// the rest of the absorbed attention: in BF16-compute mode, rounding o_lat to bf16 here flipped a
// greedy token of the tiny-v3-fp8 golden case at a near tie.
void linear_rows(const float* x, const LinearWeight& w, int64_t r0, int64_t n, float* y);

// y [T, out] = x [T, in] . W^T; multithreaded over output rows. Computes in the process's
// compute type (cpu/compute_type.h: --dtype).
void linear(const float* x, int64_t T, const LinearWeight& w, float* y);

// One product of a batch: y [T, w.out] = x [T, w.in] . W^T.
struct LinearJob {
  const float* x = nullptr;
  int64_t T = 0;
  const LinearWeight* w = nullptr;
  float* y = nullptr;
};

// Every job as linear() computes it (same bits); at decode sizes all in one parallel region, each
// distinct x prepared once (cpu::linear_batch). For the products of a step that do not depend on
// each other: an MoE layer's gate and up projections of every active expert, then their downs.
void linear_batch(std::span<const LinearJob> jobs);

// The same product in float32 whatever --dtype says: for the small products whose outputs are
// discrete choices (the MoE router's expert scores, V3.2's indexer scores), where a bf16
// rounding would flip near-ties and with them the whole computation downstream.
void linear_f32(const float* x, int64_t T, const LinearWeight& w, float* y);

// Same product, one dot product at a time in double: the slow twin the fast paths are tested
// against.
void linear_reference(const float* x, int64_t T, const LinearWeight& w, float* y);

}  // namespace dseek::ops
