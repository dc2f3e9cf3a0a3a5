// y [T, out] = x [T, in] . W^T in float32 for every weight format, one kernel table per
// instruction-set family (cpu_features.h), chosen at run time. See docs/kernels.md.
//
// Two paths, picked by T:
//   T <= kGemvMaxTokens: matrix-vector products that stream each weight byte once (decode).
//   larger T: a packed product: a panel of nr weight rows x kKc inputs is decoded once into
//   float32, transposed to [kKc, nr], and reused by an mr x nr register-blocked micro-kernel
//   for every block of mr tokens (prefill, MoE experts with many routed tokens).
//
// Legend: T = tokens, in = input features, out = output features, kc = inputs of one block.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>

#include "base/check.h"

#include "cpu/compute_type.h"
#include "cpu/cpu_features.h"
#include "cpu/weight_view.h"

namespace dseek::cpu {

struct Int8X;  // linear_int8.h
struct Bf16X;  // linear_bf16.h

constexpr int kGemvMaxTokens = 4;
constexpr int64_t kKc = 256;  // inputs per packed block: a [kKc, nr] float panel stays in L1/L2

struct LinearKernels {
  Isa isa = Isa::kScalar;
  // y rows [r0, r1) of every token, T in [1, kGemvMaxTokens]; y is [T, w.out].
  void (*gemv)(const float* x, int64_t T, const WeightView& w, int64_t r0, int64_t r1, float* y) = nullptr;
  // dst [n, ld] (first k columns written) = decoded w[r0 : r0 + n, c0 : c0 + k]; c0 even.
  void (*decode_block)(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, float* dst,
                       int64_t ld) = nullptr;
  // c [m, n] (row stride ldc) = (accumulate ? c : 0) + xp . wp, with xp [kc, mr] (token i of
  // input kk at kk * mr + i) and wp [kc, nr]; m <= mr, n <= nr; padding lanes of xp/wp are zero.
  void (*micro)(const float* xp, const float* wp, int64_t kc, float* c, int64_t ldc, bool accumulate, int m,
                int n) = nullptr;
  int mr = 1, nr = 1;
  // The integer dot-product path for q8/q4 at T <= kGemvMaxTokens (linear_int8.h); null where the
  // family or the CPU has none. quantize_x fills x (laid out by prepare_int8_x) once per call from
  // float x [T, in]; gemv_int8 writes y rows [r0, r1) of every token, like gemv.
  void (*quantize_x)(const float* x, const WeightView& w, const Int8X& q) = nullptr;
  void (*gemv_int8)(const Int8X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) = nullptr;
  // The vdpbf16ps path of BF16-compute mode for BF16/FP8 at T <= kGemvMaxTokens (linear_bf16.h);
  // null where the family or the CPU has none. round_x_bf16 fills q.data from float x [T, in]
  // (q.shift already set); gemv_bf16 writes y rows [r0, r1) of every token, like gemv.
  void (*round_x_bf16)(const float* x, const Bf16X& q) = nullptr;
  void (*gemv_bf16)(const Bf16X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) = nullptr;
  // The packed product of BF16-compute mode for BF16/FP8 at larger T (linear_bf16.h): panel
  // packing of n <= kBf16Nr weight rows and the vdpbf16ps micro-kernel; null where absent.
  void (*pack_bf16)(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, uint32_t* wp) = nullptr;
  void (*micro_bf16)(const uint32_t* xp, const uint32_t* wp, int64_t pairs, float scale, float* c, int64_t ldc,
                     bool accumulate, int m, int n) = nullptr;
  // y [in] += sum over j < n of a[j] * (row r0 + j of w, decoded): the product x^T W over a block
  // of rows (MLA's absorption q_lat = W_UK^T q_nope at decode), without the rows as floats.
  // Returns false, having written nothing, where the weights need the element-by-element
  // rules (segments that are not whole vectors, non-finite scales or coefficients, FP8 bytes
  // not known free of NaN codes): the caller then decodes the rows and adds them itself.
  // Null where the family has none (scalar).
  bool (*accumulate_rows)(const WeightView& w, int64_t r0, int64_t n, const float* a, float* y) = nullptr;
};

// Calls f(std::integral_constant<int, T>{}) for the T of a matrix-vector call: the kernels are
// templates on T (their accumulators are arrays of T registers).
template <typename F>
void with_gemv_tokens(int64_t T, F&& f) {
  switch (T) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: DSEEK_CHECK(false, "matrix-vector product with T = {} not in [1, {}]", T, kGemvMaxTokens);
  }
}

// The streaming matrix-vector kernels' inner loop: calls step(at, std::integral_constant<int, H>{})
// for each `width`-input step from input i that fits below `end`, H alternating 0, 1 (two partial
// sums, indexed by a constant so that they stay in registers, keep consecutive multiply-adds
// apart). Returns the first input no step covered.
template <typename Step>
int64_t alternating_steps(int64_t i, int64_t end, int64_t width, Step&& step) {
  for (; i + 2 * width <= end; i += 2 * width) {
    step(i, std::integral_constant<int, 0>{});
    step(i + width, std::integral_constant<int, 1>{});
  }
  if (i + width <= end) {
    step(i, std::integral_constant<int, 0>{});
    i += width;
  }
  return i;
}

// The table of a family (must be supported by the CPU).
const LinearKernels& linear_kernels(Isa isa);

// Whole product with the active family and compute type (compute_type.h), multithreaded over
// output rows (OpenMP).
void linear(const float* x, int64_t T, const WeightView& w, float* y);

// Same with an explicit family and compute type: benchmarks and tests compare them in one process.
void linear_with(const LinearKernels& k, ComputeType c, const float* x, int64_t T, const WeightView& w, float* y);
// float32 compute.
void linear_with(const LinearKernels& k, const float* x, int64_t T, const WeightView& w, float* y);

// One x [in] against rows [r0, r1) only, on the calling thread (for callers inside their own
// parallel loop): y[r] for r in [r0, r1), each row computed exactly as linear_with computes it
// for T = 1 (same path: vdpbf16ps, integer or float kernels; same bits).
void linear_rows_with(const LinearKernels& k, ComputeType c, const float* x, const WeightView& w, int64_t r0,
                      int64_t r1, float* y);

// One product of a batch: y [T, w.out] = x [T, w.in] . W^T.
struct LinearJob {
  const float* x = nullptr;
  int64_t T = 0;
  WeightView w;
  float* y = nullptr;
};

// Every job of the batch, each exactly as linear_with computes it (same path, same bits). When
// every job is a matrix-vector product (T <= kGemvMaxTokens), they run in one parallel region:
// each distinct x is prepared once (jobs with the same x pointer, T and input layout share it),
// and the rows of all the jobs are dealt to the threads as one product's rows. So an MoE layer at
// decode pays for one region, not three per expert. Otherwise the jobs run one after another.
// Outputs must not overlap each other or any input.
void linear_batch_with(const LinearKernels& k, ComputeType c, std::span<const LinearJob> jobs);
// With the active family and compute type.
void linear_batch(std::span<const LinearJob> jobs);

// Per-family tables (defined in linear_{scalar,avx2,avx512}.cc).
const LinearKernels& scalar_linear_kernels();
const LinearKernels& avx2_linear_kernels();
const LinearKernels& avx512_linear_kernels();

}  // namespace dseek::cpu
