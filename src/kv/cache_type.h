// Element type of the MLA latent KV cache, chosen with `--cache-type-k` (-ctk) as in llama.cpp.
// MLA caches one latent per token (keys and values are both projections of it), so there is
// no separate value cache and no -ctv. The row layouts are in cpu/attention_format.h:
//   f32  reference precision (default: the golden tests compare at this precision)
//   bf16 half the bytes, exact bfloat16 rounding of the latent and rope key
//   fp8  DeepSeek's V3.2 deployment layout (656 bytes per token and layer for V3): e4m3 latent
//        in 128-value blocks with power-of-two float32 scales, rope key in bfloat16
#pragma once

#include <string_view>

#include "base/status.h"
#include "cpu/attention_format.h"

namespace dseek::kv {

using CacheType = cpu::LatentFormat;

// "f32" | "bf16" | "fp8"; anything else is an error naming the choices.
Expected<CacheType> parse_cache_type(std::string_view name);
inline std::string_view cache_type_name(CacheType t) { return cpu::latent_format_name(t); }

}  // namespace dseek::kv
