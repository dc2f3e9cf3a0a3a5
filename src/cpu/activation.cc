// SwiGLU's elementwise half: the scalar version and the dispatch (activation.h).
#include "cpu/activation.h"

#include <cmath>

namespace dseek::cpu {

void swiglu_with(Isa isa, float* gate, const float* up, int64_t n) {
  if (isa != Isa::kScalar) return swiglu_avx2(gate, up, n);
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void swiglu(float* gate, const float* up, int64_t n) { swiglu_with(active_isa(), gate, up, n); }

}  // namespace dseek::cpu
