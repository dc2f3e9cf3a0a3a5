// The family-independent half of the matrix kernels: choosing the path by T, splitting output
// rows across threads in contiguous chunks, and the packed product's blocking (decode a panel
// of weight rows once, transpose it, reuse it for every token block).
#include <omp.h>

#include <algorithm>
#include <cstdlib>

#include "base/check.h"
#include "base/float_types.h"
#include "cpu/linear_bf16.h"
#include "cpu/linear_int8.h"
#include "cpu/linear_kernels.h"
#include "cpu/row_dealer.h"

namespace dseek::cpu {
namespace {

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kParallelMinMacs = int64_t{1} << 16;

// A per-thread float buffer that only grows: allocated on first use, then reused by every call
// on that thread (no allocation in the steady state). 64-byte aligned.
class Scratch {
 public:
  ~Scratch() { std::free(p_); }
  float* get(int64_t n) {
    if (n > cap_) {
      std::free(p_);
      cap_ = (n + 15) / 16 * 16;
      p_ = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(cap_) * sizeof(float)));
      DSEEK_CHECK(p_ != nullptr, "linear: out of memory for a {}-float scratch buffer", cap_);
    }
    return p_;
  }

 private:
  float* p_ = nullptr;
  int64_t cap_ = 0;
};

thread_local Scratch t_xpack, t_rows, t_wpack, t_int8, t_bf16, t_xround;

// This thread's share [begin, end) of `n` units split in contiguous chunks of `align` units.
void share(int64_t n, int64_t align, int64_t* begin, int64_t* end) {
  const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
  const int64_t units = (n + align - 1) / align;
  const int64_t per = (units + nt - 1) / nt;
  *begin = std::min(n, id * per * align);
  *end = std::min(n, (id + 1) * per * align);
}

bool parallel_gemv(int64_t T, const WeightView& w) { return w.out * w.in * T >= kParallelMinMacs && w.out >= 8; }

// The matrix-vector product (T <= kGemvMaxTokens) by the path the compute type and the weight
// select: x is prepared once, by the calling thread, into its buffer (rounded to bf16 for the
// vdpbf16ps path, quantized for the integer path, as is for the float kernels), then
// for_rows(kernel) runs kernel(r0, r1) over the row ranges it chooses; the ranges share x.
template <typename ForRows>
void gemv_by_path(const LinearKernels& k, ComputeType c, const float* x, int64_t T, const WeightView& w,
                  float* y, ForRows&& for_rows) {
  if (c == ComputeType::kBf16 && bf16_dot_used(k, w)) {
    const Bf16X q{T, w.in, bf16_x_shift(x, T * w.in, w), reinterpret_cast<uint16_t*>(t_bf16.get((T * w.in + 1) / 2))};
    k.round_x_bf16(x, q);
    return for_rows([&](int64_t r0, int64_t r1) { k.gemv_bf16(q, w, r0, r1, y); });
  }
  if (int8_dot_used(k, w)) {
    const Int8X q = prepare_int8_x(T, w, t_int8.get(static_cast<int64_t>(int8_x_bytes(T, w) + 3) / 4));
    k.quantize_x(x, w, q);
    return for_rows([&](int64_t r0, int64_t r1) { k.gemv_int8(q, w, r0, r1, y); });
  }
  if (c == ComputeType::kBf16) {  // the float kernels on x rounded to bf16
    float* xr = t_xround.get(T * w.in);
    round_to_bf16(x, T * w.in, xr);
    x = xr;
  }
  for_rows([&](int64_t r0, int64_t r1) { k.gemv(x, T, w, r0, r1, y); });
}

// Every row, split across the team by a RowDealer.
void gemv(const LinearKernels& k, ComputeType c, const float* x, int64_t T, const WeightView& w, float* y) {
  const bool parallel = parallel_gemv(T, w);
  gemv_by_path(k, c, x, T, w, y, [&](auto&& kernel) {
    RowDealer rows(w.out, 4, parallel ? omp_get_max_threads() : 1);
#pragma omp parallel if (parallel)
    rows.for_each_chunk(kernel);
  });
}

constexpr int64_t kPanelSkew = 48;  // floats: 192 bytes

// Tokens per packed pass: bounds the packed copy of x ([kTc, in] floats); a longer T runs in
// passes that each decode the weights again (cheap next to 2 * kTc FLOPs per weight).
constexpr int64_t kTc = 768;

// First, all threads pack x as [in / kKc][T / mr][kc][mr] (zero-padded tokens). Then each thread
// takes a contiguous range of nr-wide output panels; per block of kKc inputs, each panel's
// nr x kc weights are decoded (row-major) and transposed to [kc][nr] (zero-padded rows), and the
// micro-kernel sweeps every token block over it; y accumulates across input blocks.
void gemm_pass(const LinearKernels& k, const float* x, int64_t T, const WeightView& w, float* y) {
  const int64_t mr = k.mr, nr = k.nr, in = w.in, out = w.out;
  const int64_t panels = (out + nr - 1) / nr, tblocks = (T + mr - 1) / mr;
  const int64_t cblocks = (in + kKc - 1) / kKc, slice = tblocks * mr * kKc;
  float* xp = t_xpack.get(cblocks * slice);  // the calling thread's: shared by the team below
  const bool parallel = w.out * w.in * T >= kParallelMinMacs && panels >= 2;
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t u = 0; u < cblocks * tblocks; ++u) {
      const int64_t cb = u / tblocks, tb = u % tblocks, c0 = cb * kKc, kc = std::min(kKc, in - c0);
      float* dst = xp + cb * slice + tb * mr * kc;
      for (int64_t i = 0; i < mr; ++i) {
        const int64_t t = tb * mr + i;
        if (t < T) {
          const float* src = x + t * in + c0;
          for (int64_t kk = 0; kk < kc; ++kk) dst[kk * mr + i] = src[kk];
        } else {
          for (int64_t kk = 0; kk < kc; ++kk) dst[kk * mr + i] = 0.0f;
        }
      }
    }
    int64_t p0, p1;
    share(panels, 1, &p0, &p1);
    if (p0 < p1) {
      // The decoded rows and their transposed panel in one buffer, the panel 192 bytes past a
      // multiple of 4 KiB from the rows: two separate allocations could land a multiple of 4 KiB
      // apart, and then the transposition's loads wait on its stores to the same 4 KiB offsets
      // (v2-lite-q4 prefill of 16 tokens ran 11.0 tok/s instead of 12.5 after an unrelated change
      // moved the heap).
      float* rows = t_rows.get(2 * nr * kKc + kPanelSkew);
      float* wp = rows + nr * kKc + kPanelSkew;
      for (int64_t cb = 0; cb < cblocks; ++cb) {
        const int64_t c0 = cb * kKc, kc = std::min(kKc, in - c0);
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t r0 = p * nr, n = std::min(nr, out - r0);
          k.decode_block(w, r0, n, c0, kc, rows, kc);
          for (int64_t j = 0; j < n; ++j) {
            const float* src = rows + j * kc;
            for (int64_t kk = 0; kk < kc; ++kk) wp[kk * nr + j] = src[kk];
          }
          for (int64_t j = n; j < nr; ++j)
            for (int64_t kk = 0; kk < kc; ++kk) wp[kk * nr + j] = 0.0f;
          for (int64_t tb = 0; tb < tblocks; ++tb) {
            const int m = static_cast<int>(std::min(mr, T - tb * mr));
            k.micro(xp + cb * slice + tb * mr * kc, wp, kc, y + tb * mr * out + r0, out, cb > 0, m,
                    static_cast<int>(n));
          }
        }
      }
    }
  }
}

// BF16-compute mode's packed product (linear_bf16.h): the blocking of gemm_pass on bf16 pairs.
// x is rounded while packed ([in / kc][T / mr][pairs][mr] words); each panel of kBf16Nr weight
// rows x one block of kc inputs (an FP8 scale block) is packed once and swept by every token block.
void gemm_bf16_pass(const LinearKernels& k, const float* x, int64_t T, const WeightView& w, float* y) {
  constexpr int64_t mr = kBf16Mr, nr = kBf16Nr;
  const bool fp8 = w.dtype == DType::kF8E4M3;
  const int64_t in = w.in, out = w.out, kc = fp8 ? w.block_cols : kBf16Kc, block_pairs = (kc + 1) / 2;
  const int64_t panels = (out + nr - 1) / nr, tblocks = (T + mr - 1) / mr, cblocks = (in + kc - 1) / kc;
  const int64_t slice = tblocks * mr * block_pairs, scale_cols = (in + w.block_cols - 1) / w.block_cols;
  uint32_t* xp = reinterpret_cast<uint32_t*>(t_xpack.get(cblocks * slice));  // shared by the team below
  const bool parallel = w.out * w.in * T >= kParallelMinMacs && panels >= 2;
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t u = 0; u < cblocks * tblocks; ++u) {
      const int64_t cb = u / tblocks, tb = u % tblocks, c0 = cb * kc, kcur = std::min(kc, in - c0);
      const int64_t pairs = (kcur + 1) / 2;
      uint32_t* dst = xp + cb * slice + tb * mr * pairs;
      for (int64_t i = 0; i < mr; ++i) {
        const int64_t t = tb * mr + i;
        for (int64_t p = 0; p < pairs; ++p) {
          uint32_t word = 0;
          if (t < T) {
            const float* src = x + t * in + c0 + 2 * p;
            word = f32_to_bf16(src[0]) | (2 * p + 1 < kcur ? static_cast<uint32_t>(f32_to_bf16(src[1])) << 16 : 0u);
          }
          dst[p * mr + i] = word;
        }
      }
    }
    int64_t p0, p1;
    share(panels, 1, &p0, &p1);
    if (p0 < p1) {
      uint32_t* wp = reinterpret_cast<uint32_t*>(t_wpack.get(nr * block_pairs));
      for (int64_t cb = 0; cb < cblocks; ++cb) {
        const int64_t c0 = cb * kc, kcur = std::min(kc, in - c0), pairs = (kcur + 1) / 2;
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t r0 = p * nr, n = std::min(nr, out - r0);
          k.pack_bf16(w, r0, n, c0, kcur, wp);
          const float scale = fp8 ? w.scale_inv[(r0 / w.block_rows) * scale_cols + cb] : 1.0f;
          for (int64_t tb = 0; tb < tblocks; ++tb) {
            const int m = static_cast<int>(std::min(mr, T - tb * mr));
            k.micro_bf16(xp + cb * slice + tb * mr * pairs, wp, pairs, scale, y + tb * mr * out + r0, out, cb > 0, m,
                         static_cast<int>(n));
          }
        }
      }
    }
  }
}

void gemm(const LinearKernels& k, const float* x, int64_t T, const WeightView& w, float* y) {
  for (int64_t t0 = 0; t0 < T; t0 += kTc) gemm_pass(k, x + t0 * w.in, std::min(kTc, T - t0), w, y + t0 * w.out);
}

void gemm_bf16(const LinearKernels& k, const float* x, int64_t T, const WeightView& w, float* y) {
  for (int64_t t0 = 0; t0 < T; t0 += kTc) gemm_bf16_pass(k, x + t0 * w.in, std::min(kTc, T - t0), w, y + t0 * w.out);
}

void check_scales(const WeightView& w) {
  if (w.dtype == DType::kI8 || w.dtype == DType::kU8) {
    DSEEK_CHECK(w.group_scales != nullptr && w.group_size > 0 && w.in % w.group_size == 0 &&
                    (w.dtype == DType::kI8 || w.group_size % 2 == 0),
                "q8/q4 weight without scales or with group size {} not dividing in = {}", w.group_size, w.in);
  }
  if (w.dtype == DType::kF8E4M3) DSEEK_CHECK(w.scale_inv != nullptr && w.block_rows > 0 && w.block_cols > 0);
}

}  // namespace

const LinearKernels& linear_kernels(Isa isa) {
  DSEEK_CHECK(supported(isa), "linear kernels for {}: not supported by this CPU", isa_name(isa));
  switch (isa) {
    case Isa::kAvx512: return avx512_linear_kernels();
    case Isa::kAvx2: return avx2_linear_kernels();
    case Isa::kScalar: break;
  }
  return scalar_linear_kernels();
}

void linear_with(const LinearKernels& k, ComputeType c, const float* x, int64_t T, const WeightView& w, float* y) {
  DSEEK_CHECK(w.data != nullptr, "linear on an unbound weight");
  if (T <= 0 || w.out <= 0) return;
  if (w.in == 0) {
    std::fill(y, y + T * w.out, 0.0f);
    return;
  }
  check_scales(w);
  if (T <= kGemvMaxTokens) return gemv(k, c, x, T, w, y);
  if (c == ComputeType::kBf16) {
    if (bf16_gemm_used(k, w)) return gemm_bf16(k, x, T, w, y);
    // Elsewhere the same products on the float kernels, from x rounded to bf16.
    float* xr = t_xround.get(T * w.in);
    round_to_bf16(x, T * w.in, xr);
    x = xr;
  }
  gemm(k, x, T, w, y);
}

void linear_rows_with(const LinearKernels& k, ComputeType c, const float* x, const WeightView& w, int64_t r0,
                      int64_t r1, float* y) {
  DSEEK_CHECK(w.data != nullptr && 0 <= r0 && r0 <= r1 && r1 <= w.out, "linear_rows: rows [{}, {}) of {}", r0, r1,
              w.out);
  if (r0 == r1) return;
  if (w.in == 0) {
    std::fill(y + r0, y + r1, 0.0f);
    return;
  }
  check_scales(w);
  gemv_by_path(k, c, x, 1, w, y, [&](auto&& kernel) { kernel(r0, r1); });
}

void linear_with(const LinearKernels& k, const float* x, int64_t T, const WeightView& w, float* y) {
  linear_with(k, ComputeType::kF32, x, T, w, y);
}

void linear(const float* x, int64_t T, const WeightView& w, float* y) {
  linear_with(linear_kernels(active_isa()), active_compute_type(), x, T, w, y);
}

}  // namespace dseek::cpu
