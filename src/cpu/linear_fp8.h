// The float32 matrix-vector path for FP8 e4m3 weights at decode (T <= kGemvMaxTokens) on
// AVX-512 CPUs with GFNI: the default compute type on DeepSeek's FP8 checkpoints. The float
// family's FP8 rows go e4m3 -> f16 bits -> float32 (vcvtph2ps), five vector operations a 16
// weights, which bounds a core below what memory delivers. Here two GFNI byte transforms
// (vgf2p8affineqb: a fixed bit permutation of every byte) make the high and the low byte of each
// weight's float32 bits, and byte and word unpacks put them in place: three operations a 16.
// On Intel a byte permute takes the unpacks' place (fp8_byte_permute): 1.5 operations a 16.
// See docs/kernels.md.
//
// The float32 bits of weight byte s.eeee.mmm are s.0000eeee.mmm0...0: value * 2^-120 exactly,
// subnormal codes included (e4m3's subnormals land on float32's, whose bias differs by the same
// 120). The unpacks work within 128-bit lanes, so a 64-weight step holds its weights in the order
// of fp8_x_slot below (the permute keeps them in order), and x is stored to match, scaled by
// 2^shift with the rule of bf16_x_shift (the largest |x| just under 2^127) so that the products,
// about 2^-120 smaller than w * x, stay clear of float32's subnormal range. Each block's sum is
// scaled once by its scale x 2^(120 - shift); the products themselves are exact, so the outputs
// differ from the float path only in the order of the float32 additions.
//
// Legend: T = tokens, in = input features, out = output features.
#pragma once

#include <cstdint>

#include "cpu/linear_kernels.h"

namespace dseek::cpu {

constexpr int64_t kFp8Step = 64;  // weights of one 64-byte load

// x of one call: token t's input i (i in a 64-input step starting at s) at
// data[t * in + s + fp8_x_slot(i - s)], or at data[t * in + i] when in_order (the permute's
// layout), times 2^shift. `x` is the caller's x, unscaled, for the blocks that go element by
// element.
struct Fp8X {
  int64_t T = 0, in = 0;
  int shift = 0;
  const float* x = nullptr;
  float* data = nullptr;
  bool in_order = false;  // the kernel converts with the byte permute (fp8_byte_permute())
};

// Where input j of a 64-input step sits in that step's x: the unpacks leave vector k (16 floats)
// holding inputs 16 L + 4 k + [0, 4) in its 128-bit lane L.
constexpr int64_t fp8_x_slot(int64_t j) { return 16 * ((j % 16) / 4) + 4 * (j / 16) + j % 4; }

// DSEEK_FP8_DOT=0 in the environment (read once) or set_fp8_dot(false) keeps FP8 on the float
// family's path (comparisons, benchmarks), DSEEK_FP8_DOT=1 or set_fp8_dot(true) takes this one
// (the default).
bool fp8_dot_enabled();
void set_fp8_dot(bool on);

// FP8's subnormal codes become float32 denormals here. AMD's cores multiply those at full speed;
// Intel's take a microcode assist for each (a step of 64 uniformly random bytes nearly always
// holds one: 0.9 GB/s on two threads of an Emerald Rapids VM, against 20 for the float path).
// With the guard (the default on every CPU but AMD's) a step holding a code of exponent 0 goes
// through normal operands instead, with the same products (linear_fp8_avx512.cc). Trained weights
// hold few such codes, so the check (two operations a step) is nearly all the guard costs.
// DSEEK_FP8_DENORMAL_GUARD=0/1 or set_fp8_denormal_guard() overrides (tests run both).
bool fp8_denormal_guard();
void set_fp8_denormal_guard(bool on);

// Which instructions put the GFNI bytes in place: a byte permute per 16 weights (vpermb; on
// Intel's cores, where shuffles have one port, the faster: 25.5-29.1 against 22.7-26.1 GB/s of
// weights on two threads in L2 on an Emerald Rapids VM), or byte and word unpacks (the default
// on AMD, where an earlier measurement found permutes slower than unpacks). Chosen when x is
// prepared (Fp8X::in_order). DSEEK_FP8_PERMUTE=0/1 or set_fp8_byte_permute() overrides (tests
// run both).
bool fp8_byte_permute();
void set_fp8_byte_permute(bool on);

// Whether linear_with(k, kF32, ...) takes this path for w at T <= kGemvMaxTokens: the family has
// it (AVX-512 with GFNI), it is enabled, w is FP8, and in and block_cols are multiples of
// kFp8Step.
bool fp8_dot_used(const LinearKernels& k, const WeightView& w);

// The AVX-512 + GFNI implementation (linear_fp8_avx512.cc): the avx512 table's prepare_x_fp8
// (fills q.data from q.x; q.shift already set) and gemv_fp8 (y rows [r0, r1) of every token).
void avx512_fp8_prepare_x(const Fp8X& q);
void avx512_fp8_gemv(const Fp8X& q, const WeightView& w, int64_t r0, int64_t r1, float* y);

}  // namespace dseek::cpu
