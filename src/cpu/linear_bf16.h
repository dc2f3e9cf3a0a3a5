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
// min(120, 126 - floor(log2 max|x|)) over the finite values of x (120 when there are none or all
// are zero).
int bf16_x_shift(const float* x, int64_t n, const WeightView& w);

// Whether linear_with(k, kBf16, ...) takes the vdpbf16ps path for w at T <= kGemvMaxTokens: the
// family has it (AVX-512 with BF16) and w is BF16 or FP8 with blocks a multiple of 32 inputs wide.
bool bf16_dot_used(const LinearKernels& k, const WeightView& w);

// The packed product of BF16-compute mode (T > kGemvMaxTokens), as the float one (linear_kernels.h)
// but on bf16 pairs: x is rounded and packed as [pairs][kBf16Mr] 32-bit words (inputs 2p and
// 2p + 1 of a token in one word), a panel of kBf16Nr weight rows as [pairs][kBf16Nr] words holding
// the weights' exact bf16 values (FP8 unscaled: e4m3 fits bf16 exactly), and the micro-kernel
// adds scale x (xp . wp) to c with one vdpbf16ps per pair and 16 outputs. An FP8 block is one
// kc block with its scale, so its panel must not straddle block rows.
constexpr int kBf16Mr = 8, kBf16Nr = 32;
constexpr int64_t kBf16Kc = 256;  // inputs per block for BF16 weights (FP8: block_cols)

// Whether the packed bf16 product runs for w: the family has it, w is BF16, or FP8 with even
// block_cols and block_rows a multiple of kBf16Nr.
bool bf16_gemm_used(const LinearKernels& k, const WeightView& w);

// The AVX-512 + BF16 implementation of the two (linear_bf16_avx512.cc).
void avx512_bf16_pack(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, uint32_t* wp);
void avx512_bf16_micro(const uint32_t* xp, const uint32_t* wp, int64_t pairs, float scale, float* c, int64_t ldc,
                       bool accumulate, int m, int n);

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
