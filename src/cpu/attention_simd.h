// Vector helpers of the attention and indexer kernel families and the vector SwiGLU. Include
// only from files compiled for AVX2 or AVX-512 (cmake/isa.cmake); everything here has internal
// linkage, so each family gets its own copy compiled with its own flags (no ODR mixing).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace dseek::cpu {
namespace {

// e^x for 8 floats, x <= 0 expected (softmax, SwiGLU's e^-|g|): x = n ln2 + r with ln 2 in two
// parts (Cody and Waite: r exact to |r| <= ln2 / 2 whatever n), e^r by Cephes' degree-7
// polynomial, times 2^n through the exponent bits; about 1 ulp. Inputs below -87.33 (2^n would be
// subnormal) give 0, -inf included; NaN is taken as -87.33.
[[maybe_unused]] inline __m256 exp_ps256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33f);
  const __m256 tiny = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lo);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

[[maybe_unused]] inline float hmax_ps256(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

[[maybe_unused]] inline float hsum_ps256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 2^120: an e4m3 byte's magnitude bits shifted into a float32's exponent and mantissa fields
// give the value times 2^-120, normals and subnormals alike (NaN bytes are never stored).
constexpr float kFp8Rescale = 1.329227995784916e36f;

// 8 e4m3 bytes -> 8 floats (times 2^-120, see kFp8Rescale).
[[maybe_unused]] inline __m256 fp8x8_raw(const uint8_t* p) {
  const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m256i mag = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x7f)), 20);
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x80)), 24);
  return _mm256_castsi256_ps(_mm256_or_si256(mag, sign));
}

[[maybe_unused]] inline __m256 bf16x8(const uint8_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

#ifdef __AVX512F__
// The zero-masked forms throughout: GCC 12 warns (-Wuninitialized) on the plain forms, whose
// headers start from _mm512_undefined_*; with a full mask they are the same instructions.
[[maybe_unused]] inline __m512 fp8x16_raw(const uint8_t* p) {
  const __m512i v = _mm512_maskz_cvtepu8_epi32(0xffff, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m512i mag = _mm512_maskz_slli_epi32(0xffff, _mm512_and_si512(v, _mm512_set1_epi32(0x7f)), 20);
  const __m512i sign = _mm512_maskz_slli_epi32(0xffff, _mm512_and_si512(v, _mm512_set1_epi32(0x80)), 24);
  return _mm512_castsi512_ps(_mm512_or_si512(mag, sign));
}

[[maybe_unused]] inline __m512 bf16x16(const uint8_t* p) {
  const __m512i v = _mm512_maskz_cvtepu16_epi32(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, v, 16));
}

[[maybe_unused]] inline float hsum_ps512(__m512 v) {
  return hsum_ps256(_mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xff, v, 0), _mm512_maskz_extractf32x8_ps(0xff, v, 1)));
}
#endif

}  // namespace
}  // namespace dseek::cpu
