// The vector SwiGLU of activation.h, AVX2 + FMA (cmake/isa.cmake); AVX-512 CPUs run it too.
#include <immintrin.h>

#include <cmath>

#include "cpu/activation.h"
#include "cpu/attention_simd.h"

namespace dseek::cpu {

void swiglu_avx2(float* gate, const float* up, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp_ps256(_mm256_or_ps(g, sign));  // e^-|g|
    const __m256 negative = _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 num = _mm256_blendv_ps(g, _mm256_mul_ps(g, e), negative);
    const __m256 silu = _mm256_div_ps(num, _mm256_add_ps(one, e));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) {  // the same formula, one element at a time
    const float g = gate[i], e = std::exp(-std::fabs(g));
    gate[i] = (g < 0.0f ? g * e : g) / (1.0f + e) * up[i];
  }
}

}  // namespace dseek::cpu
