// Byte layout of one row of the MLA latent KV cache (one token, one layer), for each cache
// element type (`--cache-type-k`), and its exact decoding. The attention kernels read rows in
// this layout directly; kv/latent_codec.h writes them.
//   f32:  [rank + rope] float32                       (reference precision, the default)
//   bf16: [rank + rope] bfloat16
//   fp8:  [rank] e4m3 | [ceil(rank / 128)] float32 power-of-two scales | [rope] bfloat16
//         DeepSeek's V3.2 deployment layout (FlashMLA "FP8 sparse", 656 bytes for V3), the
//         scale of block b being 2^ceil(log2(max(amax_b, 1e-4) / 448)) (act_quant's ue8m0).
// Legend: r = rank (kv_lora_rank), d_r = rope (qk_rope_head_dim).
#pragma once

#include <cstdint>
#include <string_view>

namespace dseek::cpu {

enum class LatentFormat { kF32, kBf16, kFp8 };

std::string_view latent_format_name(LatentFormat f);  // "f32", "bf16", "fp8"

struct LatentLayout {
  static constexpr int64_t kFp8Block = 128;  // latent values per FP8 scale
  LatentFormat format = LatentFormat::kF32;
  int64_t rank = 0;  // r
  int64_t rope = 0;  // d_r

  int64_t width() const { return rank + rope; }
  int64_t fp8_blocks() const { return (rank + kFp8Block - 1) / kFp8Block; }
  // Offsets inside an fp8 row: scales after the latent bytes (rounded up to 4 for the floats).
  int64_t fp8_scales_offset() const { return (rank + 3) / 4 * 4; }
  int64_t fp8_rope_offset() const { return fp8_scales_offset() + 4 * fp8_blocks(); }
  // Bytes of one row, a multiple of 4.
  int64_t row_bytes() const;
};

// The exact float32 values a stored row holds: [r + d_r].
void decode_latent_row(const LatentLayout& L, const uint8_t* row, float* out);

}  // namespace dseek::cpu
