// SwiGLU's elementwise half, gate[i] = silu(gate[i]) * up[i] with silu(g) = g / (1 + e^-g): a
// scalar version (std::exp) and a vector one (AVX2, also taken on AVX-512 CPUs), chosen by the
// active instruction set. At decode V2-Lite runs 8 experts x 1408 of them a layer; with std::exp
// that was 49 us a layer on one core, a few percent of a token.
#pragma once

#include <cstdint>

#include "cpu/cpu_features.h"

namespace dseek::cpu {

void swiglu_with(Isa isa, float* gate, const float* up, int64_t n);
// With the active family.
void swiglu(float* gate, const float* up, int64_t n);

// The vector version (activation_avx2.cc): silu from e = e^-|g| (an argument <= 0, so e in
// (0, 1]: no overflow), g / (1 + e) for g >= 0 and g e / (1 + e) below; relative error a few
// float ulps. NaN gives NaN, +inf gives +inf x up, -inf gives NaN, as the scalar form does.
void swiglu_avx2(float* gate, const float* up, int64_t n);

}  // namespace dseek::cpu
