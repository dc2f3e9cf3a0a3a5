// Float-vector primitives of the AVX2 family (8 lanes), shared by its kernel files
// (linear_avx2.cc, attention_avx2.cc, indexer_avx2.cc) and the "-inl.h" kernels they include.
// No include guard: included once per file, inside that file's namespace.

using V = __m256;
constexpr int kLanes = 8;

inline V vzero() { return _mm256_setzero_ps(); }
inline V vset1(float v) { return _mm256_set1_ps(v); }
inline V vloadu(const float* p) { return _mm256_loadu_ps(p); }
inline void vstoreu(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V vfmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
// Halves, then pairs: the same order in every kernel that sums lanes.
inline float vsum(V v) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}
