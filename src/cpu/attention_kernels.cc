// Dispatch, thread split and merge of the absorbed MLA attention kernels, and their slow twin.
#include "cpu/attention_kernels.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "base/check.h"
#include "base/scratch.h"
#include "cpu/attention_family.h"

namespace dseek::cpu {

using attention_detail::PartialState;
using attention_detail::pad16;

namespace {

// Below this many rows per thread, splitting costs more (one more [H, r] merge) than it saves.
// V2-Lite's 16 heads x 512 on one thread: 22 us at 32 rows, 42 at 64, 83 at 128, where two threads
// took 46 (about 4 us for the second part's merge and wake-up): a decode at a short context
// (every token of `dseek bench -p 16`) was serial at the former 64.
constexpr int64_t kMinRowsPerThread = 16;

// The calling thread's queries and partial states, reused call after call: as vectors they were
// allocated and cleared (100 KB for V2-Lite) every layer of every token.
thread_local Scratch t_attend_buffers;

attention_detail::AttendRowsFn family(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return attention_detail::attend_rows_avx512;
    case Isa::kAvx2: return attention_detail::attend_rows_avx2;
    case Isa::kScalar: break;
  }
  return attention_detail::attend_rows_scalar;
}

}  // namespace

void mla_attend_isa(Isa isa, const MlaAttendArgs& a, float* o_lat, int threads) {
  DSEEK_CHECK(a.n >= 1 && a.heads >= 1, "mla_attend: {} rows, {} heads", a.n, a.heads);
  DSEEK_CHECK(supported(isa), "mla_attend: {} is not supported by this CPU", isa_name(isa));
  const int64_t H = a.heads, r = a.layout.rank, dr = a.layout.rope, Rp = pad16(r), K = Rp + pad16(dr);
  int64_t parts = threads > 0 ? threads : omp_get_max_threads();
  if (omp_in_parallel()) parts = 1;
  parts = std::clamp<int64_t>(a.n / kMinRowsPerThread, 1, parts);
  // Queries [H, K], then the partial states [parts] x (m [H], l [H], acc [H, Rp]), which each
  // part initializes itself: only the queries' padding is cleared here.
  float* const qp = t_attend_buffers.get(H * K + parts * H * (2 + Rp));
  float* const m = qp + H * K;
  float* const l = m + parts * H;
  float* const acc = l + parts * H;
  // Queries with the scale folded in, padded like the decoded tiles.
  for (int64_t h = 0; h < H; ++h) {
    const float* q = a.q + h * (r + dr);
    float* qh = qp + h * K;
    for (int64_t i = 0; i < r; ++i) qh[i] = q[i] * a.scale;
    std::fill(qh + r, qh + Rp, 0.0f);
    for (int64_t i = 0; i < dr; ++i) qh[Rp + i] = q[r + i] * a.scale;
    std::fill(qh + Rp + dr, qh + K, 0.0f);
  }
  const attention_detail::AttendRowsFn fn = family(isa);
  auto run_part = [&](int64_t i) {
    const int64_t begin = a.n * i / parts, end = a.n * (i + 1) / parts;
    fn(a, qp, begin, end, PartialState{m + i * H, l + i * H, acc + i * H * Rp});
  };
  if (parts == 1) {
    run_part(0);
  } else {
#pragma omp parallel for num_threads(static_cast<int>(parts)) schedule(static, 1)
    for (int64_t i = 0; i < parts; ++i) run_part(i);
  }

  // Log-sum-exp merge: o = sum_i exp(m_i - M) acc_i / sum_i exp(m_i - M) l_i.
  for (int64_t h = 0; h < H; ++h) {
    float M = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < parts; ++i) M = std::max(M, m[i * H + h]);
    float L = 0.0f;
    float* o = o_lat + h * r;
    std::fill(o, o + r, 0.0f);
    for (int64_t i = 0; i < parts; ++i) {
      if (l[i * H + h] == 0.0f) continue;  // a part whose rows all had -inf logits
      const float w = std::exp(m[i * H + h] - M);
      L += w * l[i * H + h];
      const float* ai = acc + (i * H + h) * Rp;
      for (int64_t j = 0; j < r; ++j) o[j] += w * ai[j];
    }
    const float inv = 1.0f / L;
    for (int64_t j = 0; j < r; ++j) o[j] *= inv;
  }
}

void mla_attend(const MlaAttendArgs& a, float* o_lat, int threads) { mla_attend_isa(active_isa(), a, o_lat, threads); }

void mla_attend_reference(const MlaAttendArgs& a, float* o_lat) {
  const int64_t H = a.heads, r = a.layout.rank, w = a.layout.width();
  std::vector<float> rows(static_cast<size_t>(a.n * w));  // [n, r + d_r] decoded
  for (int64_t s = 0; s < a.n; ++s) decode_latent_row(a.layout, a.rows[s], rows.data() + s * w);
  std::vector<double> p(static_cast<size_t>(a.n)), o(static_cast<size_t>(r));
  for (int64_t h = 0; h < H; ++h) {
    const float* q = a.q + h * w;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t s = 0; s < a.n; ++s) {
      double dot = 0;
      for (int64_t i = 0; i < w; ++i) dot += static_cast<double>(q[i]) * rows[s * w + i];
      p[s] = static_cast<double>(a.scale) * dot;
      mx = std::max(mx, p[s]);
    }
    double sum = 0;
    for (int64_t s = 0; s < a.n; ++s) sum += (p[s] = std::exp(p[s] - mx));
    std::fill(o.begin(), o.end(), 0.0);
    for (int64_t s = 0; s < a.n; ++s)
      for (int64_t i = 0; i < r; ++i) o[i] += p[s] / sum * rows[s * w + i];
    for (int64_t i = 0; i < r; ++i) o_lat[h * r + i] = static_cast<float>(o[i]);
  }
}

namespace attention_detail {

void decode_tile_scalar(const MlaAttendArgs& a, int64_t begin, int64_t count, float* tile) {
  const int64_t r = a.layout.rank, dr = a.layout.rope, Rp = pad16(r), K = Rp + pad16(dr);
  std::fill(tile, tile + kTileRows * K, 0.0f);
  std::vector<float> row(static_cast<size_t>(r + dr));
  for (int64_t b = 0; b < count; ++b) {
    decode_latent_row(a.layout, a.rows[begin + b], row.data());
    std::copy_n(row.data(), r, tile + b * K);
    std::copy_n(row.data() + r, dr, tile + b * K + Rp);
  }
}

}  // namespace attention_detail

}  // namespace dseek::cpu
