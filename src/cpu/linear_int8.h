// The integer dot-product matrix-vector path for q8/q4 weights at decode (T <= kGemvMaxTokens),
// as llama.cpp runs its Q8_0/Q4_0 weights: x is quantized once per call to int8 with one float
// scale per 32 inputs, then each weight row's bytes meet it in vpdpbusd (u8 x s8 -> s32) and
// only the 16 per-lane integer sums are scaled and accumulated in float. See docs/kernels.md.
//
// Activation rule (quantize_x_block, shared by the fast path and the twin): per sub-block of 32
// inputs, d = max|x| / 127; q = round-half-even(clamp(x / d, -127, 127)); d = 0 (all q 0) when
// max|x| / 127 rounds to 0; d = NaN (all q 0) when the sub-block holds a NaN or an infinity, so the
// outputs become NaN as in the float path.
//
// Legend: T = tokens, in = input features, out = output features; a *chunk* is the inputs two
// 64-byte weight loads of a row hold (128 for q8, 256 for q4), a *block* is 512 inputs (16
// scales of 32 inputs: the weight scales one 16-lane F16 load brings in).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "cpu/linear_kernels.h"

namespace dseek::cpu {

constexpr int64_t kInt8Sub = 32;     // inputs per activation scale
constexpr int64_t kInt8Block = 512;  // inputs per weight-scale load
constexpr int kInt8Lanes = 16;       // int32 lanes of one vpdpbusd

// q[0..32) and the returned scale d of 32 activations: x ~= d * q.
inline float quantize_x_block(const float* x, int8_t* q) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t i = 0; i < kInt8Sub; ++i) {
    finite = finite && std::isfinite(x[i]);
    amax = std::max(amax, std::fabs(x[i]));
  }
  const float d = finite ? amax / 127.0f : NAN;
  for (int64_t i = 0; i < kInt8Sub; ++i) {
    if (!(d > 0.0f)) {
      q[i] = 0;
      continue;
    }
    // A subnormal d is inexact, so x / d may exceed 127: the clamp keeps the code in range.
    const float v = std::min(std::max(x[i] / d, -127.0f), 127.0f);
    q[i] = static_cast<int8_t>(std::nearbyint(v));
  }
  return d;
}

// x of one call, quantized and laid out for the kernel, plus the weight-side tables that depend
// only on the shape. The kernel regroups a chunk's two weight vectors A, B (128-bit pieces for
// q8, 64-bit pieces for q4) into A' = the first half of every 32-input sub-block of the chunk
// and B' = the second halves, so that every int32 lane of vpdpbusd sums inputs of one sub-block
// only (q8: 8 inputs, 4 lanes a sub-block; q4: 16 inputs, 2 lanes a sub-block) and half as many
// lanes need scaling as with plain loads. q4 regroups within 128-bit lanes (vpunpcklqdq /
// vpunpckhqdq), which leaves its sub-blocks in the order kQ4SubOrder. x of chunk c of token t
// (chunk_in bytes, zero-padded past in), for input b of the chunk's sub-block g:
//   q8: [A' (64)][B' (64)], input b at (b < 16 ? 0 : 64) + 16 g + b % 16;
//   q4: [A' low nibbles][A' high][B' low][B' high] (64 each): input b at
//       64 * (2 * (b / 16) + b % 2) + 8 kQ4Slot[g] + (b % 16) / 2.
// Lane k of a chunk (bytes 4k..4k+3 of each 64-byte piece) lies in sub-block k / lanes_per_sub
// (q4: kQ4SubOrder[k / lanes_per_sub]) of the chunk:
//   bias[t][c][k] = -offset * (sum of the lane's codes), offset 128 for q8 (weights fed as
//   w + 128), 8 for q4 (nibble = value + 8): the vpdpbusd accumulator starts at it and ends at
//   the signed dot product.
// Scales go per block (16 sub-blocks of 32 inputs), so the kernel multiplies weight and
// activation scales once per block and only permutes the products into each chunk's lanes:
//   scale[t][b][s] = d of sub-block s of block b (inputs 512 b + 32 s ..; 0 past in);
//   block_group[b] = the first weight group of block b (its 16 F16 scales are loaded from there);
//   sub_group[b][s] = which of those 16 the sub-block's inputs use;
//   lane_sub[j][k] = the sub-block of the block that lane k of its chunk j lies in (the same for
//   every block: chunk_in divides the block).
// q4's sub-blocks in a chunk's lane order (unpacking 64-bit pieces within 128-bit lanes takes
// pieces 0, 8, 2, 10, ... of the chunk) and the slot of each sub-block in that order.
inline constexpr int kQ4SubOrder[8] = {0, 4, 1, 5, 2, 6, 3, 7};
inline constexpr int kQ4Slot[8] = {0, 2, 4, 6, 1, 3, 5, 7};

struct Int8X {
  int64_t T = 0, in = 0, chunks = 0, chunk_in = 0, lanes_per_sub = 0, blocks = 0;
  int8_t* q = nullptr;            // [T][chunks][chunk_in]
  int32_t* bias = nullptr;        // [T][chunks][16]
  float* scale = nullptr;         // [T][blocks][16]
  int32_t* block_group = nullptr; // [blocks]
  int32_t* sub_group = nullptr;   // [blocks][16]
  int32_t* lane_sub = nullptr;    // [kInt8Block / chunk_in][16]
};

// Bytes prepare_int8_x needs for x of T tokens against w.
size_t int8_x_bytes(int64_t T, const WeightView& w);

// Places the arrays in buf (64-byte aligned, int8_x_bytes(T, w) bytes) and fills the
// weight-side tables; the family's quantize_x fills the rest.
Int8X prepare_int8_x(int64_t T, const WeightView& w, void* buf);

// Quantized activation of token t, input i, its lane and its scale, read back through the layout
// above (tests).
int8_t int8_x_value(const Int8X& x, int64_t t, int64_t i);
int64_t int8_x_lane(const Int8X& x, int64_t i);
float int8_x_scale(const Int8X& x, int64_t t, int64_t i);

// DSEEK_INT8_DOT=0 in the environment (read once) or set_int8_dot(false) keeps q8/q4 on the
// float path everywhere; on by default.
bool int8_dot_enabled();
void set_int8_dot(bool on);

// Whether linear_with(k, ...) takes the integer path for w at T <= kGemvMaxTokens: the family
// has it (AVX-512 with VNNI), it is enabled, w is q8/q4 with a group size that is a multiple of 32.
bool int8_dot_used(const LinearKernels& k, const WeightView& w);

// The AVX-512 + VNNI implementation (linear_int8_avx512.cc): the avx512 table's quantize_x and
// gemv_int8 when the CPU has VNNI.
void avx512_int8_quantize_x(const float* x, const WeightView& w, const Int8X& q);
void avx512_int8_gemv(const Int8X& q, const WeightView& w, int64_t r0, int64_t r1, float* y);

// The slow twin of the integer path: x quantized by quantize_x_block, one int64 dot product
// per 32 inputs, scaled by weight scale x activation scale and summed in double.
void linear_int8_reference(const float* x, int64_t T, const WeightView& w, float* y);

}  // namespace dseek::cpu
