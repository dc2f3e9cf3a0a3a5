// Writing one latent cache row in its stored type (layouts: cpu/attention_format.h). Reading
// is cpu::decode_latent_row (exact) or the attention kernels directly.
#pragma once

#include <cstdint>

#include "cpu/attention_format.h"

namespace dseek::kv {

// src: [r + d_r] = [normalized c_kv | rotated k_rope] in float32; dst: layout.row_bytes().
// bf16: round to nearest even. fp8: per 128-value block of c_kv, scale
// 2^ceil(log2(max(amax, 1e-4) / 448)) (V3.2 act_quant, ue8m0), e4m3 round to nearest even;
// k_rope in bf16.
void encode_latent_row(const cpu::LatentLayout& layout, const float* src, uint8_t* dst);

}  // namespace dseek::kv
