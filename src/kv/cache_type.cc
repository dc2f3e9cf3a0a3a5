#include "kv/cache_type.h"

namespace dseek::kv {

Expected<CacheType> parse_cache_type(std::string_view name) {
  if (name == "f32") return CacheType::kF32;
  if (name == "bf16") return CacheType::kBf16;
  if (name == "fp8") return CacheType::kFp8;
  return Status::errorf("--cache-type-k: unknown KV cache type '{}' (expected f32, bf16 or fp8)", name);
}

}  // namespace dseek::kv
