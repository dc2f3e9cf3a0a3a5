// The bfloat16 path of the matrix products (compute_type.h, kBf16) at decode
// (T <= kGemvMaxTokens): x is rounded once per call to bfloat16 and each BF16 or FP8 weight row
// meets it in vdpbf16ps (bf16 pairs -> float32 sums), 32 inputs per instruction instead of the
// float path's 16 multiply-adds, with no float decode of the weights. See docs/kernels.md.
//
// FP8 weights enter as bf16 bits with no exponent fix-up: the e4m3 byte's exponent and mantissa
// moved into bf16's fields read as value * 2^-120 (bias 127 vs 7). So x is stored as
// bf16(x) * 2^shift, shift = min(120, 126 - floor(log2 max|x|)): every product is w * x *
// 2^(shift - 120) with the largest x below 2^127, and each FP8 block's scale absorbs
// 2^(120 - shift). The bf16 weights of FP8's subnormal codes have a zero exponent, which
// vdpbf16ps reads as zero (it flushes denormal inputs): these weights, below 2^-6 x their block's
// scale, drop out of the sum. BF16 weights are used as stored, with shift 0.
//
// Legend: T = tokens, in = input features, out = output features.
#pragma once

#include <cstdint>

#include "cpu/linear_kernels.h"

namespace dseek::cpu {

// x of one call: bf16 bits of x * 2^shift, token t's input i at data[t * in + i].
struct Bf16X {
  int64_t T = 0, in = 0;
  int shift = 0;
  uint16_t* data = nullptr;
};

// The shift of the layout above for x [n] against w: 0 for BF16 weights; for FP8,
// min(120, 126 - floor(log2 max|x|)) (120 when x is all zeros, 0 when it holds a NaN or inf).
int bf16_x_shift(const float* x, int64_t n, const WeightView& w);

// Whether linear_with(k, kBf16, ...) takes the vdpbf16ps path for w at T <= kGemvMaxTokens: the
// family has it (AVX-512 with BF16) and w is BF16 or FP8 with blocks a multiple of 32 inputs wide.
bool bf16_dot_used(const LinearKernels& k, const WeightView& w);

// The AVX-512 + BF16 implementation (linear_bf16_avx512.cc): the avx512 table's round_x_bf16 and
// gemv_bf16 when the CPU has AVX512_BF16.
void avx512_bf16_round_x(const float* x, const Bf16X& q);
void avx512_bf16_gemv(const Bf16X& q, const WeightView& w, int64_t r0, int64_t r1, float* y);

// x rounded to bfloat16 (nearest even), kept as float: the activations of every product in
// BF16-compute mode.
void round_to_bf16(const float* x, int64_t n, float* out);

// The slow twin of BF16-compute mode: x rounded to bfloat16, weights decoded exactly, each dot
// product summed in double.
void linear_bf16_reference(const float* x, int64_t T, const WeightView& w, float* y);

}  // namespace dseek::cpu
