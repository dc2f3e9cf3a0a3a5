#include "cpu/attention_format.h"

#include <cstring>

#include "base/check.h"
#include "base/float_types.h"

namespace dseek::cpu {

std::string_view latent_format_name(LatentFormat f) {
  switch (f) {
    case LatentFormat::kF32: return "f32";
    case LatentFormat::kBf16: return "bf16";
    case LatentFormat::kFp8: return "fp8";
  }
  return "?";
}

int64_t LatentLayout::row_bytes() const {
  switch (format) {
    case LatentFormat::kF32: return 4 * width();
    case LatentFormat::kBf16: return (2 * width() + 3) / 4 * 4;
    case LatentFormat::kFp8: return (fp8_rope_offset() + 2 * rope + 3) / 4 * 4;
  }
  DSEEK_CHECK(false, "unknown latent format");
  return 0;
}

void decode_latent_row(const LatentLayout& L, const uint8_t* row, float* out) {
  switch (L.format) {
    case LatentFormat::kF32:
      std::memcpy(out, row, static_cast<size_t>(4 * L.width()));
      return;
    case LatentFormat::kBf16:
      for (int64_t i = 0; i < L.width(); ++i) out[i] = bf16_to_f32(load_u16(row + 2 * i));
      return;
    case LatentFormat::kFp8: {
      const uint8_t* scales = row + L.fp8_scales_offset();
      for (int64_t i = 0; i < L.rank; ++i)
        out[i] = fp8e4m3_to_f32(row[i]) * load_f32(scales + 4 * (i / LatentLayout::kFp8Block));
      const uint8_t* rope = row + L.fp8_rope_offset();
      for (int64_t i = 0; i < L.rope; ++i) out[L.rank + i] = bf16_to_f32(load_u16(rope + 2 * i));
      return;
    }
  }
}

}  // namespace dseek::cpu
