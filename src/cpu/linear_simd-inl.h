// The matrix-vector kernels and the block decoder, written once and compiled per family: the
// including file (linear_avx2.cc, linear_avx512.cc) opens its own namespace and defines
//   V, kLanes, vzero, vset1, vloadu, vstoreu, vfmadd, vmul, vsum, f16_scalar, any_fp8_nan,
//   fp8_nan_bits(row, i) (nonzero when one of the kLanes bytes from input i is a NaN code) and
//   template <DType D> V vraw(const uint8_t* row, int64_t i),
//   vraw_q4_split(row, i, &even, &odd) (2 kLanes q4 weights from input i, split into the even and
//   the odd inputs, minus 8) and vadd_interleaved(y, even, odd) (y[2k] += even[k], y[2k+1] += odd[k])
// where vraw loads kLanes unscaled weights starting at input i (i even for q4) from any
// alignment; FP8 comes back as value * 2^-8 (exact, through f16 bits), the 2^8 goes into the
// scale, and NaN bytes are not decoded by it: a segment holding one goes element by element.
// No include guard: included once per family, inside that family's namespace.

constexpr float kFp8Bias = 0x1p8f;

// The scales of one row's segments, located once per row (no divisions in the inner loops).
template <DType D>
struct RowScales {
  const void* p = nullptr;
  RowScales() = default;
  RowScales(const WeightView& w, int64_t row) {
    if constexpr (D == DType::kF8E4M3) {
      p = w.scale_inv + (row / w.block_rows) * ((w.in + w.block_cols - 1) / w.block_cols);
    } else if constexpr (D == DType::kI8 || D == DType::kU8) {
      p = w.group_scales + 2 * row * (w.in / w.group_size);
    }
  }
  float operator[](int64_t seg) const {
    if constexpr (D == DType::kF8E4M3) return static_cast<const float*>(p)[seg];
    if constexpr (D == DType::kI8 || D == DType::kU8)
      return f16_scalar(load_u16(static_cast<const uint8_t*>(p) + 2 * seg));
    return 1.0f;
  }
};

// The scale the vector path multiplies vraw by, or false where the segment must go element by
// element: a scale that is not finite, or an FP8 scale >= 2^120 (would overflow times 2^8).
template <DType D>
inline bool vector_scale(float s, float* out) {
  *out = D == DType::kF8E4M3 ? s * kFp8Bias : s;
  return std::isfinite(*out);  // an infinite or NaN scale: element by element, as the reference
}

// q8/q4 on the float path: R consecutive rows from row r, T tokens: every weight vector is
// decoded once and used by T fused multiply-adds; each x vector is loaded once for R rows.
//
// With T <= 2 a segment's unscaled products are summed first and the sum scaled once
// (s * sum(v x) instead of sum((v s) x)): one multiply per segment instead of one per vector.
// Rounding differs from the reference only in float32 summation order (the products are
// exact integers times the scale). With more tokens the extra accumulators would not fit in
// registers.
template <DType D, int T, int R>
void gemv_rows(const float* x, const WeightView& w, int64_t r, float* y) {
  static_assert(D == DType::kI8 || D == DType::kU8, "the other formats stream a row at a time (gemv_stream_row)");
  constexpr bool kFold = T <= 2;
  const int64_t in = w.in, seg = segment_len(w);
  const uint8_t* rows[R];
  RowScales<D> scales[R];
  for (int j = 0; j < R; ++j) rows[j] = row_ptr(w, r + j), scales[j] = RowScales<D>(w, r + j);
  V acc[R][T];
  float tail[R][T];
  for (int j = 0; j < R; ++j)
    for (int t = 0; t < T; ++t) acc[j][t] = vzero(), tail[j][t] = 0.0f;
  for (int64_t c0 = 0, s = 0; c0 < in; c0 += seg, ++s) {
    const int64_t c1 = std::min(in, c0 + seg);
    float sc[R];
    V sv[R];
    bool fast = true;
    for (int j = 0; j < R; ++j) {
      sc[j] = scales[j][s];
      float vs;
      fast = vector_scale<D>(sc[j], &vs) && fast;
      sv[j] = vset1(vs);
    }
    int64_t i = c0;
    if (fast) {
      if constexpr (kFold) {
        V sacc[R][T];
        for (int j = 0; j < R; ++j)
          for (int t = 0; t < T; ++t) sacc[j][t] = vzero();
        for (; i + kLanes <= c1; i += kLanes) {
          V xv[T];
          for (int t = 0; t < T; ++t) xv[t] = vloadu(x + t * in + i);
          for (int j = 0; j < R; ++j) {
            const V wv = vraw<D>(rows[j], i);
            for (int t = 0; t < T; ++t) sacc[j][t] = vfmadd(wv, xv[t], sacc[j][t]);
          }
        }
        for (int j = 0; j < R; ++j)
          for (int t = 0; t < T; ++t) acc[j][t] = vfmadd(sacc[j][t], sv[j], acc[j][t]);
      } else {
        for (; i + kLanes <= c1; i += kLanes) {
          V xv[T];
          for (int t = 0; t < T; ++t) xv[t] = vloadu(x + t * in + i);
          for (int j = 0; j < R; ++j) {
            const V wv = vmul(vraw<D>(rows[j], i), sv[j]);
            for (int t = 0; t < T; ++t) acc[j][t] = vfmadd(wv, xv[t], acc[j][t]);
          }
        }
      }
    }
    for (; i < c1; ++i) {
      for (int j = 0; j < R; ++j) {
        const float v = raw_element<D>(rows[j], i) * sc[j];
        for (int t = 0; t < T; ++t) tail[j][t] += v * x[t * in + i];
      }
    }
  }
  for (int j = 0; j < R; ++j)
    for (int t = 0; t < T; ++t) y[t * w.out + r + j] = vsum(acc[j][t]) + tail[j][t];
}

constexpr int kGemvRows = 4;

// F32/BF16/F16/FP8 rows streamed one at a time in a single pass, as the bf16 path does
// (linear_bf16_avx512.cc): each row prefetched into L2 kStreamPrefetchBytes ahead, FP8 NaN bytes
// caught on the loaded bytes (the row's block then goes element by element), two partial sums
// per token so that consecutive multiply-adds do not wait on each other, and each FP8 block's sum
// scaled once (the unscaled formats are one block of scale 1).
// On v2-lite-4l (BF16) f32 decode this read 30.3-39.6 tok/s against 24.7-25.0 for 4 rows at a
// time; on v3-slice-fp8 6.4-6.9 against 5.6-6.1 (alternating dseek bench runs). q8/q4 keep the
// 4-row loop: their float path is the fallback for CPUs without VNNI, and their 32-input blocks
// would cost one scaling per 32 inputs here.
constexpr int64_t kStreamPrefetchBytes = 8192;

template <DType D>
constexpr int64_t weight_bytes(int64_t inputs) {
  return D == DType::kF32 ? 4 * inputs : (D == DType::kBF16 || D == DType::kF16) ? 2 * inputs : inputs;
}

// Inputs [c_begin, c_end) of row r (a column tile: see column_tiles; FP8 tiles start on a block),
// prefetching at ahead + the byte offset being read; y assigned on the row's first tile, else
// added to.
template <DType D, int T, bool kCheckNan>
void gemv_stream_row(const float* x, const WeightView& w, int64_t r, int64_t c_begin, int64_t c_end,
                     const uint8_t* ahead, bool first, float* y) {
  const int64_t in = w.in, seg = segment_len(w);
  const uint8_t* row = row_ptr(w, r);
  const RowScales<D> scales(w, r);
  V acc[T];
  float tail[T];
  for (int t = 0; t < T; ++t) acc[t] = vzero(), tail[t] = 0.0f;
  for (int64_t c0 = c_begin, s = c_begin / seg; c0 < c_end; c0 += seg, ++s) {
    const int64_t c1 = std::min(c_end, c0 + seg);
    const float sc = scales[s];
    float vs;
    int64_t i = c0, from = c0;  // the block's element-by-element part starts at `from`
    if (vector_scale<D>(sc, &vs)) {
      V sacc[T][2];
      for (int t = 0; t < T; ++t) sacc[t][0] = sacc[t][1] = vzero();
      uint32_t nan = 0;
      auto step = [&]<int H>(int64_t at, std::integral_constant<int, H>) {
        const int64_t byte = weight_bytes<D>(at);
        if ((byte & 63) < weight_bytes<D>(kLanes)) __builtin_prefetch(ahead + byte, 0, 2);
        if constexpr (D == DType::kF8E4M3 && kCheckNan) nan |= fp8_nan_bits(row, at);
        const V wv = vraw<D>(row, at);
        for (int t = 0; t < T; ++t) sacc[t][H] = vfmadd(wv, vloadu(x + t * in + at), sacc[t][H]);
      };
      i = alternating_steps(i, c1, kLanes, step);
      if (nan == 0) {
        from = i;
        const V sv = vset1(vs);
        for (int t = 0; t < T; ++t) acc[t] = vfmadd(sacc[t][1], sv, vfmadd(sacc[t][0], sv, acc[t]));
      }
    }
    for (int64_t e = from; e < c1; ++e) {
      const float v = raw_element<D>(row, e) * sc;
      for (int t = 0; t < T; ++t) tail[t] += v * x[t * in + e];
    }
  }
  for (int t = 0; t < T; ++t) {
    const float sum = vsum(acc[t]) + tail[t];
    y[t * w.out + r] = first ? sum : y[t * w.out + r] + sum;
  }
}

template <DType D, int T>
void gemv_tokens(const float* x, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  if constexpr (D == DType::kF8E4M3 || D == DType::kBF16 || D == DType::kF16 || D == DType::kF32) {
    // Tiles of whole vectors, and of whole blocks for FP8.
    const int64_t wb = weight_bytes<D>(1), align = D == DType::kF8E4M3 ? segment_len(w) : 4 * kLanes;
    const ColumnTiles tiles = column_tiles(w.in, sizeof(float), wb, align, kStreamPrefetchBytes);
    auto rows = [&]<bool kCheckNan>(std::bool_constant<kCheckNan>) {
      for_each_tile_row(w, r0, r1, tiles, wb, kStreamPrefetchBytes,
                        [&](int64_t r, int64_t c0, int64_t c1, const uint8_t* ahead, bool first) {
                          gemv_stream_row<D, T, kCheckNan>(x, w, r, c0, c1, ahead, first, y);
                        });
    };
    if (D == DType::kF8E4M3 && !w.finite) {  // rows known finite skip the NaN checks
      rows(std::true_type{});
    } else {
      rows(std::false_type{});
    }
  } else {
    int64_t r = r0;
    for (; r + kGemvRows <= r1; r += kGemvRows) gemv_rows<D, T, kGemvRows>(x, w, r, y);
    for (; r < r1; ++r) gemv_rows<D, T, 1>(x, w, r, y);
  }
}

template <DType D>
void gemv_t(const float* x, int64_t T, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  with_gemv_tokens(T, [&](auto t) { gemv_tokens<D, decltype(t)::value>(x, w, r0, r1, y); });
}

template <DType D>
void decode_block_t(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, float* dst, int64_t ld) {
  const int64_t seg = segment_len(w);
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* row = row_ptr(w, r0 + j);
    const RowScales<D> scales(w, r0 + j);
    float* d = dst + j * ld - c0;
    for (int64_t i = c0; i < c0 + k;) {
      const int64_t s = i / seg, end = std::min(c0 + k, (s + 1) * seg);
      const float sc = scales[s];
      float vs;
      if (vector_scale<D>(sc, &vs) && (D != DType::kU8 || i % 2 == 0) &&
          (D != DType::kF8E4M3 || w.finite || !any_fp8_nan(row + i, end - i))) {
        const V sv = vset1(vs);
        for (; i + kLanes <= end; i += kLanes) {
          const V v = vraw<D>(row, i);
          vstoreu(d + i, is_scaled(D) ? vmul(v, sv) : v);
        }
      }
      for (; i < end; ++i) d[i] = raw_element<D>(row, i) * sc;
    }
  }
}

// accumulate_rows (linear_kernels.h): y [in] += sum over j < n of a[j] * row r0 + j, decoded.
// kAccVecs vectors of columns stay in registers while all n rows pass, so no row is written
// out as floats and read back (the decode-then-axpy it replaces, on MLA's W_UK at decode).
constexpr int kAccVecs = 8;

// Rows whose every line the first column block prefetches ahead of its reads: the later blocks
// re-read the same rows from L2, but the first one walks the rows across (a stride of a row),
// which the hardware prefetchers do not cover. Cold (the rows in DRAM, as at decode), one
// V2-Lite layer's W_UK (16 heads, one thread) takes 162 us for q4 and 143 for FP8 with it,
// 195 and 180 without, against 245 and 170 for decode-then-axpy (83 and 65 when cache-hot).
constexpr int64_t kAccumulateAheadRows = 16;  // 32 was no better, 64 and 128 worse

inline void prefetch_row_l2(const uint8_t* row, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(row + b, 0, 2);
}

// Calls body(row, j) for rows r0 + j, j < n, in order; the first column block (`first`) prefetches
// every line of the row kAccumulateAheadRows ahead.
template <class Body>
void for_each_row(const WeightView& w, int64_t r0, int64_t n, bool first, Body&& body) {
  const int64_t rb = row_bytes(w);
  if (first)
    for (int64_t j = 0; j < std::min(n, kAccumulateAheadRows); ++j) prefetch_row_l2(row_ptr(w, r0 + j), rb);
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* row = row_ptr(w, r0 + j);
    if (first && j + kAccumulateAheadRows < n) prefetch_row_l2(row + kAccumulateAheadRows * rb, rb);
    body(row, j);
  }
}

template <DType D, int NV>
void accumulate_columns(const WeightView& w, int64_t r0, int64_t n, const float* coef, int64_t segs, int64_t c0,
                        float* y) {
  const int64_t seg = segment_len(w);
  int64_t seg_of[NV];
  for (int v = 0; v < NV; ++v) seg_of[v] = (c0 + v * kLanes) / seg;
  V acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = vzero();
  for_each_row(w, r0, n, c0 == 0, [&](const uint8_t* row, int64_t j) {
    const float* cj = coef + j * segs;
    for (int v = 0; v < NV; ++v) acc[v] = vfmadd(vraw<D>(row, c0 + v * kLanes), vset1(cj[seg_of[v]]), acc[v]);
  });
  for (int v = 0; v < NV; ++v) vstoreu(y + c0 + v * kLanes, vadd(vloadu(y + c0 + v * kLanes), acc[v]));
}

// The same for q4, NP pairs of vectors: a pair holds 2 kLanes columns split into the even and the
// odd ones (vraw_q4_split), interleaved back once at the end. Each column gets the same products
// in the same order as accumulate_columns' (bit for bit), at half the operations per weight.
// With the vector coefficient set-up below, V2-Lite's W_UK of one layer (16 heads of [128, 512]
// q4, one thread, cache-warm, best of 20 x 100) takes 61 us against 91-99 before.
template <int NP>
void accumulate_columns_q4(const WeightView& w, int64_t r0, int64_t n, const float* coef, int64_t segs, int64_t c0,
                           float* y) {
  const int64_t seg = w.group_size;
  int64_t seg_of[NP];
  for (int p = 0; p < NP; ++p) seg_of[p] = (c0 + 2 * p * kLanes) / seg;
  V even[NP], odd[NP];
  for (int p = 0; p < NP; ++p) even[p] = odd[p] = vzero();
  for_each_row(w, r0, n, c0 == 0, [&](const uint8_t* row, int64_t j) {
    const float* cj = coef + j * segs;
    for (int p = 0; p < NP; ++p) {
      V e, o;
      vraw_q4_split(row, c0 + 2 * p * kLanes, &e, &o);
      const V c = vset1(cj[seg_of[p]]);
      even[p] = vfmadd(e, c, even[p]);
      odd[p] = vfmadd(o, c, odd[p]);
    }
  });
  for (int p = 0; p < NP; ++p) vadd_interleaved(y + c0 + 2 * p * kLanes, even[p], odd[p]);
}

template <DType D>
bool accumulate_rows_t(const WeightView& w, int64_t r0, int64_t n, const float* a, float* y) {
  const int64_t in = w.in, seg = segment_len(w);
  // The element-by-element cases stay with the caller's decode: columns or segments that are not
  // whole vectors, and FP8 bytes not known to be free of NaN codes.
  if (in % kLanes != 0 || seg % kLanes != 0 || (D == DType::kF8E4M3 && !w.finite)) return false;
  const int64_t segs = (in + seg - 1) / seg;  // FP8: the last block may be partial
  // coef [n, segs] = a[j] * (the segment's scale the vector path multiplies vraw by).
  thread_local std::vector<float> coef;
  coef.resize(static_cast<size_t>(n * segs));
  for (int64_t j = 0; j < n; ++j) {
    float* cj = coef.data() + j * segs;
    // c - c is 0 exactly when c is finite: a sum of those is 0 or NaN. Summed 8 lanes apart: a
    // scalar chain of additions was a fifth of V2-Lite's W_UK at decode.
    __m256 zeros = _mm256_setzero_ps();
    float zero = 0.0f;
    int64_t s = 0;
    if constexpr (D == DType::kI8 || D == DType::kU8) {  // F16 group scales, 8 at a time
      const uint8_t* sp = w.group_scales + 2 * (r0 + j) * segs;
      const __m256 aj = _mm256_set1_ps(a[j]);
      for (; s + 8 <= segs; s += 8) {
        const __m256 c =
            _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp + 2 * s))), aj);
        _mm256_storeu_ps(cj + s, c);
        zeros = _mm256_add_ps(zeros, _mm256_sub_ps(c, c));
      }
      for (int64_t t = s; t < segs; ++t) cj[t] = f16_scalar(load_u16(sp + 2 * t));
    } else {
      const RowScales<D> scales(w, r0 + j);
      for (int64_t t = 0; t < segs; ++t)
        if (!vector_scale<D>(scales[t], &cj[t])) return false;
    }
    for (; s < segs; ++s) {
      cj[s] *= a[j];
      zero += cj[s] - cj[s];
    }
    if (zero != 0.0f || _mm256_movemask_ps(_mm256_cmp_ps(zeros, _mm256_setzero_ps(), _CMP_NEQ_UQ)) != 0)
      return false;  // infinite or NaN scales or coefficients: the reference's rules
  }
  int64_t c0 = 0;
  // q4 pairs need whole pairs within a group (a pair's columns share one coefficient).
  if constexpr (D == DType::kU8) {
    if (seg % (2 * kLanes) == 0) {
      constexpr int kPairs = kAccVecs / 2;
      for (; c0 + 2 * kPairs * kLanes <= in; c0 += 2 * kPairs * kLanes)
        accumulate_columns_q4<kPairs>(w, r0, n, coef.data(), segs, c0, y);
      for (; c0 + 2 * kLanes <= in; c0 += 2 * kLanes) accumulate_columns_q4<1>(w, r0, n, coef.data(), segs, c0, y);
    }
  }
  for (; c0 + kAccVecs * kLanes <= in; c0 += kAccVecs * kLanes)
    accumulate_columns<D, kAccVecs>(w, r0, n, coef.data(), segs, c0, y);
  for (; c0 < in; c0 += kLanes) accumulate_columns<D, 1>(w, r0, n, coef.data(), segs, c0, y);
  return true;
}

// The packed product's micro-kernel: each family defines micro_m<M> for M rows (tokens) in
// [1, kMr] (kMr and kNr before including this file); micro picks it by the tile's rows.
template <int M>
void micro_m(const float* xp, const float* wp, int64_t kc, float* c, int64_t ldc, bool accumulate, int n);

template <int M = 1>
void micro_rows(const float* xp, const float* wp, int64_t kc, float* c, int64_t ldc, bool accumulate, int m, int n) {
  if (m == M) return micro_m<M>(xp, wp, kc, c, ldc, accumulate, n);
  if constexpr (M < kMr) {
    micro_rows<M + 1>(xp, wp, kc, c, ldc, accumulate, m, n);
  } else {
    DSEEK_CHECK(false, "micro-kernel rows {} not in [1, {}]", m, kMr);
  }
}

inline void micro(const float* xp, const float* wp, int64_t kc, float* c, int64_t ldc, bool accumulate, int m, int n) {
  micro_rows<1>(xp, wp, kc, c, ldc, accumulate, m, n);
}

#define DSEEK_FOR_EACH_FORMAT(F) F(kF32) F(kBF16) F(kF16) F(kF8E4M3) F(kI8) F(kU8)

inline void gemv(const float* x, int64_t T, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  switch (w.dtype) {
#define DSEEK_CASE(d) \
  case DType::d: return gemv_t<DType::d>(x, T, w, r0, r1, y);
    DSEEK_FOR_EACH_FORMAT(DSEEK_CASE)
#undef DSEEK_CASE
    default: DSEEK_CHECK(false, "linear: no kernel for weight dtype {}", dtype_name(w.dtype));
  }
}

inline void decode_block(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, float* dst,
                         int64_t ld) {
  switch (w.dtype) {
#define DSEEK_CASE(d) \
  case DType::d: return decode_block_t<DType::d>(w, r0, n, c0, k, dst, ld);
    DSEEK_FOR_EACH_FORMAT(DSEEK_CASE)
#undef DSEEK_CASE
    default: DSEEK_CHECK(false, "linear: no kernel for weight dtype {}", dtype_name(w.dtype));
  }
}

inline bool accumulate_rows(const WeightView& w, int64_t r0, int64_t n, const float* a, float* y) {
  switch (w.dtype) {
#define DSEEK_CASE(d) \
  case DType::d: return accumulate_rows_t<DType::d>(w, r0, n, a, y);
    DSEEK_FOR_EACH_FORMAT(DSEEK_CASE)
#undef DSEEK_CASE
    default: return false;
  }
}

#undef DSEEK_FOR_EACH_FORMAT
