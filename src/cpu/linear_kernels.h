// y [T, out] = x [T, in] . W^T in float32 for every weight format, one kernel table per
// instruction-set family (cpu_features.h), chosen at run time. See docs/kernels.md.
//
// Two paths, picked by T:
//   T <= kGemvMaxTokens: matrix-vector products that stream each weight byte once (decode).
//   larger T: a packed product: a panel of nr weight rows x kKc inputs is decoded once into
//   float32, transposed to [kKc, nr], and reused by an mr x nr register-blocked micro-kernel
//   for every block of mr tokens (prefill, MoE experts with many routed tokens).
//
// Legend: T = tokens, in = input features, out = output features, kc = inputs of one block.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

#include "base/check.h"

#include "cpu/compute_type.h"
#include "cpu/cpu_features.h"
#include "cpu/weight_view.h"

namespace dseek::cpu {

struct Int8X;  // linear_int8.h
struct Bf16X;  // linear_bf16.h
struct Fp8X;   // linear_fp8.h

constexpr int kGemvMaxTokens = 4;
// Inputs per packed block: a [kKc, nr] float panel (128 KB on AVX-512) stays in L2. Each block
// reads and writes the outputs once more, and those [T, out] floats are too many for any cache
// at prefill; 1024 ran the v3-slice FP8 shapes 10-16% faster than 256 (docs/kernels.md).
constexpr int64_t kKc = 1024;

struct LinearKernels {
  Isa isa = Isa::kScalar;
  // y rows [r0, r1) of every token, T in [1, kGemvMaxTokens]; y is [T, w.out].
  void (*gemv)(const float* x, int64_t T, const WeightView& w, int64_t r0, int64_t r1, float* y) = nullptr;
  // dst [n, ld] (first k columns written) = decoded w[r0 : r0 + n, c0 : c0 + k]; c0 even.
  void (*decode_block)(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, float* dst,
                       int64_t ld) = nullptr;
  // c [m, n] (row stride ldc) = (accumulate ? c : 0) + xp . wp, with xp [kc, mr] (token i of
  // input kk at kk * mr + i) and wp [kc, nr]; m <= mr, n <= nr; padding lanes of xp/wp are zero.
  void (*micro)(const float* xp, const float* wp, int64_t kc, float* c, int64_t ldc, bool accumulate, int m,
                int n) = nullptr;
  int mr = 1, nr = 1;
  // wp [kc, nr] = rows [n, kc] (row stride kc) transposed, rows n..nr-1 zero (n <= nr): the
  // packed product's panel. Null: the driver's plain loop.
  void (*transpose_panel)(const float* rows, int64_t n, int64_t kc, float* wp) = nullptr;
  // The integer dot-product path for q8/q4 at T <= kGemvMaxTokens (linear_int8.h); null where the
  // family or the CPU has none. quantize_x fills x (laid out by prepare_int8_x) once per call from
  // float x [T, in]; gemv_int8 writes y rows [r0, r1) of every token, like gemv.
  void (*quantize_x)(const float* x, const WeightView& w, const Int8X& q) = nullptr;
  void (*gemv_int8)(const Int8X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) = nullptr;
  // The vdpbf16ps path of BF16-compute mode for BF16/FP8 at T <= kGemvMaxTokens (linear_bf16.h);
  // null where the family or the CPU has none. round_x_bf16 fills q.data from float x [T, in]
  // (q.shift already set); gemv_bf16 writes y rows [r0, r1) of every token, like gemv.
  void (*round_x_bf16)(const float* x, const Bf16X& q) = nullptr;
  void (*gemv_bf16)(const Bf16X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) = nullptr;
  // The packed product of BF16-compute mode for BF16/FP8 at larger T (linear_bf16.h): panel
  // packing of n <= kBf16Nr weight rows and the vdpbf16ps micro-kernel; null where absent.
  void (*pack_bf16)(const WeightView& w, int64_t r0, int64_t n, int64_t c0, int64_t k, uint32_t* wp) = nullptr;
  void (*micro_bf16)(const uint32_t* xp, const uint32_t* wp, int64_t pairs, float scale, float* c, int64_t ldc,
                     bool accumulate, int m, int n) = nullptr;
  // The float32 path for FP8 at T <= kGemvMaxTokens on GFNI byte transforms (linear_fp8.h); null
  // where the family or the CPU has none. prepare_x_fp8 fills q.data from q.x (q.shift already
  // set); gemv_fp8 writes y rows [r0, r1) of every token, like gemv.
  void (*prepare_x_fp8)(const Fp8X& q) = nullptr;
  void (*gemv_fp8)(const Fp8X& q, const WeightView& w, int64_t r0, int64_t r1, float* y) = nullptr;
  // y [in] += sum over j < n of a[j] * (row r0 + j of w, decoded): the product x^T W over a block
  // of rows (MLA's absorption q_lat = W_UK^T q_nope at decode), without the rows as floats.
  // Returns false, having written nothing, where the weights need the element-by-element
  // rules (segments that are not whole vectors, non-finite scales or coefficients, FP8 bytes
  // not known free of NaN codes): the caller then decodes the rows and adds them itself.
  // Null where the family has none (scalar).
  bool (*accumulate_rows)(const WeightView& w, int64_t r0, int64_t n, const float* a, float* y) = nullptr;
};

// Calls f(std::integral_constant<int, T>{}) for the T of a matrix-vector call: the kernels are
// templates on T (their accumulators are arrays of T registers).
template <typename F>
void with_gemv_tokens(int64_t T, F&& f) {
  switch (T) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: DSEEK_CHECK(false, "matrix-vector product with T = {} not in [1, {}]", T, kGemvMaxTokens);
  }
}

// The streaming matrix-vector kernels' inner loop: calls step(at, std::integral_constant<int, H>{})
// for each `width`-input step from input i that fits below `end`, H alternating 0, 1 (two partial
// sums, indexed by a constant so that they stay in registers, keep consecutive multiply-adds
// apart). Returns the first input no step covered.
template <typename Step>
int64_t alternating_steps(int64_t i, int64_t end, int64_t width, Step&& step) {
  for (; i + 2 * width <= end; i += 2 * width) {
    step(i, std::integral_constant<int, 0>{});
    step(i + width, std::integral_constant<int, 1>{});
  }
  if (i + width <= end) {
    step(i, std::integral_constant<int, 0>{});
    i += width;
  }
  return i;
}

// Column tiles of a streamed matrix-vector product. Each row's weights pass through L1 next to
// x; once the two exceed about 24 KiB, the streaming weights evict x (L1D is 32 KiB,
// 8-way, on Zen 4 and recent Intel cores) and x is read again from L2 for every row. So a kernel
// walks its rows in tiles of inputs, and each tile's x stays in L1; y takes the first tile's sums
// and adds the others'. Tile boundaries are multiples of `align` (FP8: a block, whose sum is scaled
// once). One tile (count 1) when everything fits: the untiled walk.
// Rows go in blocks of kTileBlockRows: every tile of a block's rows, then the next block, so the
// reads stay within a few hundred KiB at a time. 2 threads, weights from memory, share of a plain
// read of the same bytes at 45+ GB/s (tiled against untiled, same rounds; docs/kernels.md):
// [36864, 7168] BF16 (V3's lm_head width) on the float kernel 78-85% against 54-79%;
// [16384, 16384] FP8 (V3's o_proj width) on the GFNI kernel 66-72% against 42-47%; [7168, 18432]
// BF16 on the float kernel 82% against 67%. The vdpbf16ps kernel (bf16 x) is not tiled: on
// v3-slice-fp8 --dtype bf16 decode, tiling it lost 12 points of bandwidth in fast memory.
constexpr int64_t kTileBytes = 24 * 1024;
constexpr int64_t kTileBlockRows = 16;

struct ColumnTiles {
  int64_t width = 0;  // inputs per tile (the last may be shorter)
  int64_t count = 1;
  // The software prefetch reads this many rows on in the walk (tiles > 1): the bytes the kernel
  // wants next are no longer the row's own.
  int64_t rows_ahead = 0;
};

// x_bytes per x element, w_bytes per weight (FP8 1, BF16 2, F32 4), lookahead in bytes of weights.
// Sized for one token whatever T is: the tiles set the order of a token's float32 additions, and
// a token must get the same bits decoded alone or in a batch (with T tokens, x's share of L1 is
// T times larger; a batch reads each weight for all of them).
inline ColumnTiles column_tiles(int64_t in, int64_t x_bytes, int64_t w_bytes, int64_t align, int64_t lookahead) {
  ColumnTiles c{in, 1, 0};
  const int64_t n = (in * (x_bytes + w_bytes) + kTileBytes - 1) / kTileBytes;
  if (n <= 1) return c;
  const int64_t width = ((in + n - 1) / n + align - 1) / align * align;
  if (width >= in) return c;
  c.width = width;
  c.count = (in + width - 1) / width;
  c.rows_ahead = std::max<int64_t>(1, (lookahead + width * w_bytes - 1) / (width * w_bytes));
  return c;
}

// Calls row(r, c0, c1, ahead, first) for rows [r0, r1) over every tile: inputs [c0, c1) of row r,
// software prefetches at ahead + (the byte offset in the row being read), first = whether this is
// the row's first tile (y assigned, else added to). Untiled: rows in order, ahead = the row itself
// plus `lookahead`. Tiled: per block of kTileBlockRows rows, each tile over the block's rows; ahead
// points rows_ahead items further along that walk (later rows of the tile, then the next tile's or
// the next block's), at the same position within the tile; past r1, at the row itself (a harmless
// prefetch of what is being read).
template <typename Row>
void for_each_tile_row(const WeightView& w, int64_t r0, int64_t r1, const ColumnTiles& tiles, int64_t w_bytes,
                       int64_t lookahead, Row&& row) {
  const int64_t rb = w_bytes * w.in;
  if (tiles.count == 1) {
    for (int64_t r = r0; r < r1; ++r) row(r, int64_t{0}, w.in, w.data + r * rb + lookahead, true);
    return;
  }
  for (int64_t b0 = r0; b0 < r1; b0 += kTileBlockRows) {
    const int64_t b1 = std::min(r1, b0 + kTileBlockRows), n = b1 - b0;
    for (int64_t k = 0; k < tiles.count; ++k) {
      const int64_t c0 = k * tiles.width, c1 = std::min(w.in, c0 + tiles.width);
      for (int64_t r = b0; r < b1; ++r) {
        int64_t j = r - b0 + tiles.rows_ahead, kk = k, base = b0;  // row base + j of tile kk
        while (j >= n && kk < tiles.count) j -= n, ++kk;
        if (kk == tiles.count) kk = 0, base = b1;  // the next block (a full one unless it is the last)
        const int64_t target = base + j;
        const uint8_t* ahead =
            target < r1 ? w.data + target * rb + (kk - k) * tiles.width * w_bytes : w.data + r * rb;
        row(r, c0, c1, ahead, k == 0);
      }
    }
  }
}

// The table of a family (must be supported by the CPU).
const LinearKernels& linear_kernels(Isa isa);

// Whole product with the active family and compute type (compute_type.h), multithreaded over
// output rows (OpenMP).
void linear(const float* x, int64_t T, const WeightView& w, float* y);

// Same with an explicit family and compute type: benchmarks and tests compare them in one process.
void linear_with(const LinearKernels& k, ComputeType c, const float* x, int64_t T, const WeightView& w, float* y);
// float32 compute.
void linear_with(const LinearKernels& k, const float* x, int64_t T, const WeightView& w, float* y);

// One x [in] against rows [r0, r1) only, on the calling thread (for callers inside their own
// parallel loop): y[r] for r in [r0, r1), each row computed exactly as linear_with computes it
// for T = 1 (same path: vdpbf16ps, integer or float kernels; same bits).
void linear_rows_with(const LinearKernels& k, ComputeType c, const float* x, const WeightView& w, int64_t r0,
                      int64_t r1, float* y);

// One product of a batch: y [T, w.out] = x [T, w.in] . W^T.
struct LinearJob {
  const float* x = nullptr;
  int64_t T = 0;
  WeightView w;
  float* y = nullptr;
};

// Every job of the batch, each exactly as linear_with computes it (same path, same bits). When
// every job is a matrix-vector product (T <= kGemvMaxTokens), they run in one parallel region:
// each distinct x is prepared once (jobs with the same x pointer, T and input layout share it),
// and the rows of all the jobs are dealt to the threads as one product's rows. So an MoE layer at
// decode pays for one region, not three per expert. Otherwise the jobs run one after another.
// Outputs must not overlap each other or any input.
void linear_batch_with(const LinearKernels& k, ComputeType c, std::span<const LinearJob> jobs);
// With the active family and compute type.
void linear_batch(std::span<const LinearJob> jobs);

// k's family and the optional matrix-vector paths it takes at decode with compute type c on this
// CPU and with the current switches (DSEEK_INT8_DOT, DSEEK_FP8_DOT), for reports: e.g.
// "avx512 (decode: FP8 on GFNI, q8/q4 on VNNI int8)", or "scalar".
std::string describe_linear_kernels(const LinearKernels& k, ComputeType c);

// Per-family tables (defined in linear_{scalar,avx2,avx512}.cc).
const LinearKernels& scalar_linear_kernels();
const LinearKernels& avx2_linear_kernels();
const LinearKernels& avx512_linear_kernels();

}  // namespace dseek::cpu
