// The family-independent half of the matrix kernels: choosing the path by T, splitting output
// rows across threads in contiguous chunks, and the packed product's blocking (decode a panel
// of weight rows once, transpose it, reuse it for every token block).
#include <omp.h>

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "base/check.h"
#include "base/float_types.h"
#include "base/scratch.h"
#include "cpu/linear_bf16.h"
#include "cpu/linear_fp8.h"
#include "cpu/linear_int8.h"
#include "cpu/linear_kernels.h"
#include "cpu/row_dealer.h"

namespace dseek::cpu {
namespace {

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kParallelMinMacs = int64_t{1} << 16;

thread_local Scratch t_xpack, t_rows, t_wpack, t_gemv_x, t_batch_x, t_xround;

// This thread's share [begin, end) of `n` units split in contiguous chunks of `align` units.
void share(int64_t n, int64_t align, int64_t* begin, int64_t* end) {
  const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
  const int64_t units = (n + align - 1) / align;
  const int64_t per = (units + nt - 1) / nt;
  *begin = std::min(n, id * per * align);
  *end = std::min(n, (id + 1) * per * align);
}

// Whether matrix-vector work of `macs` multiply-adds over `rows` output rows is worth a team.
bool worth_a_team(int64_t macs, int64_t rows) { return macs >= kParallelMinMacs && rows >= 8; }

// How a matrix-vector product (T <= kGemvMaxTokens) runs, by compute type and weight: the
// vdpbf16ps kernels on x rounded to bf16, the integer kernels on x quantized to int8, the GFNI
// FP8 kernel on x scaled and permuted (float32 compute), or the float kernels (on x rounded to
// bf16 in BF16-compute mode).
enum class GemvPath { kBf16Dot, kInt8Dot, kFp8Dot, kFloat };

GemvPath gemv_path(const LinearKernels& k, ComputeType c, const WeightView& w) {
  if (c == ComputeType::kBf16 && bf16_dot_used(k, w)) return GemvPath::kBf16Dot;
  if (int8_dot_used(k, w)) return GemvPath::kInt8Dot;
  if (c == ComputeType::kF32 && fp8_dot_used(k, w)) return GemvPath::kFp8Dot;
  return GemvPath::kFloat;
}

// Floats of buffer the prepared x of a path needs (a multiple of 16: buffers carved one after
// another stay 64-byte aligned).
int64_t gemv_x_floats(GemvPath p, ComputeType c, int64_t T, const WeightView& w) {
  int64_t n = 0;
  if (p == GemvPath::kBf16Dot) n = (T * w.in + 1) / 2;
  if (p == GemvPath::kInt8Dot) n = static_cast<int64_t>(int8_x_bytes(T, w) + 3) / 4;
  if (p == GemvPath::kFp8Dot) n = T * w.in;
  if (p == GemvPath::kFloat && c == ComputeType::kBf16) n = T * w.in;
  return (n + 15) / 16 * 16;
}

// x [T, w.in] as its path's kernel reads it. Prepared once per product, by one thread, into a
// 64-byte aligned buffer of gemv_x_floats; every row range of the product then shares it.
struct GemvX {
  GemvPath path = GemvPath::kFloat;
  int64_t T = 0;
  const float* x = nullptr;  // the float kernels' x: as given, or rounded to bf16
  Bf16X bf16;
  Int8X int8;
  Fp8X fp8;
};

GemvX prepare_gemv_x(const LinearKernels& k, ComputeType c, GemvPath p, const float* x, int64_t T,
                     const WeightView& w, float* buf) {
  GemvX g{p, T, x, {}, {}, {}};
  if (p == GemvPath::kBf16Dot) {
    g.bf16 = Bf16X{T, w.in, bf16_x_shift(x, T * w.in, w), reinterpret_cast<uint16_t*>(buf)};
    k.round_x_bf16(x, g.bf16);
  } else if (p == GemvPath::kInt8Dot) {
    g.int8 = prepare_int8_x(T, w, buf);
    k.quantize_x(x, w, g.int8);
  } else if (p == GemvPath::kFp8Dot) {
    g.fp8 = Fp8X{T, w.in, bf16_x_shift(x, T * w.in, w), x, buf, fp8_byte_permute()};
    k.prepare_x_fp8(g.fp8);
  } else if (c == ComputeType::kBf16) {
    round_to_bf16(x, T * w.in, buf);
    g.x = buf;
  }
  return g;
}

// Rows [r0, r1) of the product of the prepared x with w.
void run_gemv(const LinearKernels& k, const GemvX& g, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  switch (g.path) {
    case GemvPath::kBf16Dot: return k.gemv_bf16(g.bf16, w, r0, r1, y);
    case GemvPath::kInt8Dot: return k.gemv_int8(g.int8, w, r0, r1, y);
    case GemvPath::kFp8Dot: return k.gemv_fp8(g.fp8, w, r0, r1, y);
    case GemvPath::kFloat: return k.gemv(g.x, g.T, w, r0, r1, y);
  }
}

// Every row, split across the team by a RowDealer.
void gemv(const LinearKernels& k, ComputeType c, const float* x, int64_t T, const WeightView& w, float* y) {
  const bool parallel = worth_a_team(w.out * w.in * T, w.out);
  const GemvPath path = gemv_path(k, c, w);
  const GemvX g = prepare_gemv_x(k, c, path, x, T, w, t_gemv_x.get(gemv_x_floats(path, c, T, w)));
  RowDealer rows(w.out, 4, parallel ? omp_get_max_threads() : 1);
#pragma omp parallel if (parallel)
  rows.for_each_chunk([&](int64_t r0, int64_t r1) { run_gemv(k, g, w, r0, r1, y); });
}

constexpr int64_t kPanelSkew = 48;  // floats: 192 bytes

// Inputs of a panel decoded at a time: nr rows x 128 floats (16 KB on AVX-512) stay in L1 between
// the decode and the transposition, where a whole kKc-wide block would go through L2 and back.
constexpr int64_t kDecodeChunk = 128;

// Weight rows [r0, r0 + n) x inputs [c0, c0 + k) requested into L2: the next panel's bytes, while
// the micro-kernel sweeps the current panel. Its rows lie a row apart, a stride the hardware
// prefetchers do not follow, so the decode would otherwise wait on memory row after row.
void prefetch_panel(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k) {
  const int64_t row = row_bytes(w), first = c0 * row / w.in, bytes = k * row / w.in;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(w.data + (r0 + j) * row + first + b, 0, 2);
}

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
          if (k.transpose_panel != nullptr) {
            for (int64_t k0 = 0; k0 < kc; k0 += kDecodeChunk) {
              const int64_t kn = std::min(kDecodeChunk, kc - k0);
              k.decode_block(w, r0, n, c0 + k0, kn, rows, kn);
              k.transpose_panel(rows, n, kn, wp + k0 * nr);
            }
          } else {
            k.decode_block(w, r0, n, c0, kc, rows, kc);
            for (int64_t j = 0; j < n; ++j) {
              const float* src = rows + j * kc;
              for (int64_t kk = 0; kk < kc; ++kk) wp[kk * nr + j] = src[kk];
            }
            for (int64_t j = n; j < nr; ++j)
              for (int64_t kk = 0; kk < kc; ++kk) wp[kk * nr + j] = 0.0f;
          }
          if (p + 1 < p1) {
            prefetch_panel(w, r0 + nr, std::min(nr, out - r0 - nr), c0, kc);
          } else if (cb + 1 < cblocks) {
            prefetch_panel(w, p0 * nr, std::min(nr, out - p0 * nr), c0 + kKc, std::min(kKc, in - c0 - kKc));
          }
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
  const GemvPath path = gemv_path(k, c, w);
  run_gemv(k, prepare_gemv_x(k, c, path, x, 1, w, t_gemv_x.get(gemv_x_floats(path, c, 1, w))), w, r0, r1, y);
}

void linear_with(const LinearKernels& k, const float* x, int64_t T, const WeightView& w, float* y) {
  linear_with(k, ComputeType::kF32, x, T, w, y);
}

void linear_batch_with(const LinearKernels& k, ComputeType c, std::span<const LinearJob> jobs) {
  const bool gemv_sized = std::all_of(jobs.begin(), jobs.end(), [](const LinearJob& j) {
    return j.T >= 1 && j.T <= kGemvMaxTokens && j.w.in > 0 && j.w.out >= 0 && j.w.data != nullptr;
  });
  if (!gemv_sized || jobs.size() < 2) {  // prefill, or nothing to share: one product at a time
    for (const LinearJob& j : jobs) linear_with(k, c, j.x, j.T, j.w, j.y);
    return;
  }
  // Jobs that read the same x the same way share one prepared copy of it (an MoE layer's gate and
  // up projections at decode: one x for every expert).
  struct Input {
    const LinearJob* first;  // the job it is prepared against
    GemvPath path;
    int64_t offset;  // floats into the batch's buffer
    GemvX g;
  };
  std::vector<Input> inputs;
  std::vector<size_t> input_of(jobs.size());
  std::vector<int64_t> first_row(jobs.size() + 1, 0);  // the jobs' rows, numbered one after another
  int64_t floats = 0, macs = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const LinearJob& j = jobs[i];
    first_row[i + 1] = first_row[i] + j.w.out;
    if (j.w.out == 0) continue;  // no rows, nothing to prepare (as linear_with returns at once)
    check_scales(j.w);
    const GemvPath path = gemv_path(k, c, j.w);
    auto same = [&](const Input& in) {
      const WeightView& v = in.first->w;
      return in.first->x == j.x && in.first->T == j.T && in.path == path && v.dtype == j.w.dtype && v.in == j.w.in &&
             v.group_size == j.w.group_size;
    };
    auto it = std::find_if(inputs.begin(), inputs.end(), same);
    if (it == inputs.end()) {
      inputs.push_back({&j, path, floats, {}});
      floats += gemv_x_floats(path, c, j.T, j.w);
      it = inputs.end() - 1;
    }
    input_of[i] = static_cast<size_t>(it - inputs.begin());
    macs += j.T * j.w.out * j.w.in;
  }
  float* buf = t_batch_x.get(floats);
  const bool parallel = worth_a_team(macs, first_row.back());
  RowDealer rows(first_row.back(), 4, parallel ? omp_get_max_threads() : 1);
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static)
    for (size_t u = 0; u < inputs.size(); ++u) {
      Input& in = inputs[u];
      in.g = prepare_gemv_x(k, c, in.path, in.first->x, in.first->T, in.first->w, buf + in.offset);
    }
    rows.for_each_chunk([&](int64_t r0, int64_t r1) {
      // The job holding row r0 (the last one starting at or before it: empty jobs are skipped),
      // then the next ones until r1 (an empty one among them gets no call).
      auto i = static_cast<size_t>(std::upper_bound(first_row.begin(), first_row.end(), r0) - first_row.begin() - 1);
      for (; r0 < r1; ++i) {
        const int64_t end = std::min(r1, first_row[i + 1]);
        if (end > r0)
          run_gemv(k, inputs[input_of[i]].g, jobs[i].w, r0 - first_row[i], end - first_row[i], jobs[i].y);
        r0 = end;
      }
    });
  }
}

std::string describe_linear_kernels(const LinearKernels& k, ComputeType c) {
  std::vector<std::string> paths;
  if (c == ComputeType::kBf16 && k.gemv_bf16 != nullptr) paths.push_back("BF16/FP8 on vdpbf16ps");
  if (c == ComputeType::kF32 && k.gemv_fp8 != nullptr && fp8_dot_enabled()) paths.push_back("FP8 on GFNI");
  if (k.gemv_int8 != nullptr && int8_dot_enabled()) paths.push_back("q8/q4 on VNNI int8");
  std::string s(isa_name(k.isa));
  for (size_t i = 0; i < paths.size(); ++i) s += (i == 0 ? " (decode: " : ", ") + paths[i];
  return paths.empty() ? s : s + ")";
}

void linear(const float* x, int64_t T, const WeightView& w, float* y) {
  linear_with(linear_kernels(active_isa()), active_compute_type(), x, T, w, y);
}

void linear_batch(std::span<const LinearJob> jobs) {
  linear_batch_with(linear_kernels(active_isa()), active_compute_type(), jobs);
}

}  // namespace dseek::cpu
