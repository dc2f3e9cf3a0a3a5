// Scalar family of the absorbed MLA attention: the tiled online-softmax algorithm of the
// vector families in plain C++ (attention_family.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/attention_family.h"

namespace dseek::cpu::attention_detail {

void attend_rows_scalar(const MlaAttendArgs& a, const float* qp, int64_t begin, int64_t end, const PartialState& st) {
  const int64_t H = a.heads, Rp = pad16(a.layout.rank), K = Rp + pad16(a.layout.rope);
  std::fill(st.m, st.m + H, -std::numeric_limits<float>::infinity());
  std::fill(st.l, st.l + H, 0.0f);
  std::fill(st.acc, st.acc + H * Rp, 0.0f);
  std::vector<float> tile(static_cast<size_t>(kTileRows * K));  // [B, K]
  float p[kTileRows];
  for (int64_t t0 = begin; t0 < end; t0 += kTileRows) {
    const int64_t nb = std::min(kTileRows, end - t0);
    decode_tile_scalar(a, t0, nb, tile.data());
    for (int64_t h = 0; h < H; ++h) {
      const float* q = qp + h * K;
      float mt = -std::numeric_limits<float>::infinity();
      for (int64_t b = 0; b < nb; ++b) {
        float dot = 0.0f;
        for (int64_t i = 0; i < K; ++i) dot += q[i] * tile[b * K + i];
        p[b] = dot;
        mt = std::max(mt, dot);
      }
      const float m_new = std::max(st.m[h], mt);
      const float corr = std::exp(st.m[h] - m_new);  // 0 on the first tile (m = -inf)
      float sum = 0.0f;
      for (int64_t b = 0; b < nb; ++b) sum += (p[b] = std::exp(p[b] - m_new));
      st.l[h] = st.l[h] * corr + sum;
      st.m[h] = m_new;
      float* acc = st.acc + h * Rp;
      for (int64_t i = 0; i < Rp; ++i) {
        float v = acc[i] * corr;
        for (int64_t b = 0; b < nb; ++b) v += p[b] * tile[b * K + i];
        acc[i] = v;
      }
    }
  }
}

}  // namespace dseek::cpu::attention_detail
