#include "kv/latent_codec.h"

#include <algorithm>
#include <cstring>

#include "base/float_types.h"
#include "ops/fp8.h"

namespace dseek::kv {

namespace {
void store_bf16(const float* src, int64_t n, uint8_t* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = f32_to_bf16(src[i]);
    std::memcpy(dst + 2 * i, &h, 2);
  }
}
}  // namespace

void encode_latent_row(const cpu::LatentLayout& L, const float* src, uint8_t* dst) {
  switch (L.format) {
    case cpu::LatentFormat::kF32:
      std::memcpy(dst, src, static_cast<size_t>(4 * L.width()));
      return;
    case cpu::LatentFormat::kBf16:
      store_bf16(src, L.width(), dst);
      return;
    case cpu::LatentFormat::kFp8: {
      for (int64_t b = 0; b < L.fp8_blocks(); ++b) {
        const int64_t i0 = b * cpu::LatentLayout::kFp8Block;
        const int64_t n = std::min(cpu::LatentLayout::kFp8Block, L.rank - i0);  // the last block may be short
        float scale;
        ops::fp8_quantize_blocks(src + i0, n, n, /*pow2_scale=*/true, dst + i0, &scale);
        std::memcpy(dst + L.fp8_scales_offset() + 4 * b, &scale, 4);
      }
      store_bf16(src + L.rank, L.rope, dst + L.fp8_rope_offset());
      return;
    }
  }
}

}  // namespace dseek::kv
