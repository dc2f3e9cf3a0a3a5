#include "cpu/compute_type.h"

#include <atomic>

namespace dseek::cpu {
namespace {
std::atomic<int> g_compute{static_cast<int>(ComputeType::kF32)};
}  // namespace

std::string_view compute_type_name(ComputeType c) { return c == ComputeType::kBf16 ? "bf16" : "f32"; }

Expected<ComputeType> parse_compute_type(std::string_view s) {
  if (s == "f32" || s == "float32" || s == "float") return ComputeType::kF32;
  if (s == "bf16" || s == "bfloat16") return ComputeType::kBf16;
  return Status::errorf("--dtype: unknown compute type '{}' (expected f32, float32, bf16 or bfloat16)", s);
}

ComputeType active_compute_type() { return static_cast<ComputeType>(g_compute.load(std::memory_order_relaxed)); }

void set_active_compute_type(ComputeType c) { g_compute.store(static_cast<int>(c), std::memory_order_relaxed); }

}  // namespace dseek::cpu
