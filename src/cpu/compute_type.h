// The arithmetic of the matrix products (`--dtype`, as vLLM spells it): float32, the reference
// precision, or bfloat16 activations with float32 accumulation. See docs/kernels.md.
//
// kBf16: every linear rounds its input x to bfloat16 (round to nearest even) and multiplies it
// with the weights as stored, summing in float32; q8/q4 weights keep their own int8 activations
// (linear_int8.h). On CPUs with AVX512_BF16, BF16 and FP8 weights at decode go through vdpbf16ps
// (linear_bf16.h), which treats FP8's subnormal codes (|v| < 2^-6 x block scale) as zero; elsewhere
// the rounded x goes through the float32 kernels. Attention, norms and routing stay float32.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace dseek::cpu {

enum class ComputeType { kF32, kBf16 };

std::string_view compute_type_name(ComputeType c);  // "f32" | "bf16"

// Accepts f32/float32/float and bf16/bfloat16 (vLLM's names and llama.cpp's short ones).
Expected<ComputeType> parse_compute_type(std::string_view s);

// The process-wide setting the matrix kernels read (kF32 until set).
ComputeType active_compute_type();
void set_active_compute_type(ComputeType c);

// Sets a compute type for a scope and restores the previous one (tests, benchmarks).
class ScopedComputeType {
 public:
  explicit ScopedComputeType(ComputeType c) : previous_(active_compute_type()) { set_active_compute_type(c); }
  ~ScopedComputeType() { set_active_compute_type(previous_); }
  ScopedComputeType(const ScopedComputeType&) = delete;
  ScopedComputeType& operator=(const ScopedComputeType&) = delete;

 private:
  ComputeType previous_;
};

}  // namespace dseek::cpu
