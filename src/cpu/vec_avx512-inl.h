// Float-vector primitives of the AVX-512 family (16 lanes), shared by its kernel files
// (linear_avx512.cc, attention_avx512.cc, indexer_avx512.cc) and the "-inl.h" kernels they
// include. Zero-masked forms where GCC 12 warns (-Wuninitialized) on the plain ones; with a
// full mask they are the same instructions. No include guard: included once per file, inside
// that file's namespace.

using V = __m512;
constexpr int kLanes = 16;

inline V vzero() { return _mm512_setzero_ps(); }
inline V vset1(float v) { return _mm512_set1_ps(v); }
inline V vloadu(const float* p) { return _mm512_loadu_ps(p); }
inline void vstoreu(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V vfmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
// Halves, then quarters, then pairs: the same order in every kernel that sums lanes.
inline float vsum(V v) {
  const __m256 h = _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xff, v, 0), _mm512_maskz_extractf32x8_ps(0xff, v, 1));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

// Nonzero when one of the 16 FP8 bytes from p[i] is a NaN (S.1111.111).
inline uint32_t fp8_nan_bits(const uint8_t* p, int64_t i) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
  return _mm_cmpeq_epi8_mask(_mm_or_si128(b, _mm_set1_epi8(static_cast<char>(0x80))), _mm_set1_epi8(-1));
}

// Whether any of n FP8 bytes is a NaN (S.1111.111).
inline bool any_fp8_nan(const uint8_t* p, int64_t n) {
  const __m512i sign = _mm512_set1_epi8(static_cast<char>(0x80)), ones = _mm512_set1_epi8(-1);
  __mmask64 hit = 0;
  for (int64_t i = 0; i < n; i += 64) {
    const __mmask64 live = n - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (n - i)) - 1;
    hit |= _mm512_mask_cmpeq_epi8_mask(live, _mm512_or_si512(_mm512_maskz_loadu_epi8(live, p + i), sign), ones);
  }
  return hit != 0;
}
