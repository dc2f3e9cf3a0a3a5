// The indexer scoring kernel of indexer_kernels.h, written once and compiled per family: the
// including file (indexer_avx2.cc, indexer_avx512.cc) opens its namespace and defines V, kLanes
// (heads per vector), kKeys (keys per pass), vzero, vset1, vloadu, vstoreu, vfmadd, vmul,
// vrelu, vsum (lane sum) and vfp8_raw (kLanes e4m3 -> floats x 2^-120, attention_simd.h).
// No include guard: included once per family.

// Key s decoded with its scales into out [d].
void decode_key(const IndexerKeys& k, int64_t s, int64_t d, float* out) {
  const uint8_t* k8 = k.keys[s];
  for (int64_t b = 0; b < d / 128; ++b) {
    const V sv = vset1(k.scales[s][b] * kFp8Rescale);
    for (int64_t i = b * 128; i < (b + 1) * 128; i += kLanes) vstoreu(out + i, vmul(vfp8_raw(k8 + i), sv));
  }
}

// Heads [kLanes hv0, kLanes (hv0 + NV)) of kKeys keys: adds sum_j w[j] ReLU(logit) into
// total[kKeys]. Each load of the transposed query serves kKeys FMAs.
template <int NV>
void head_vectors(const PreparedQuery& q, const float* kf, int64_t hv0, float* total) {
  const int64_t Hp = q.heads_padded, d = q.dim;
  V acc[kKeys][NV];
  for (auto& a : acc)
    for (auto& v : a) v = vzero();
  const float* qt = q.qt + hv0 * kLanes;
  for (int64_t i = 0; i < d; ++i) {
    V qv[NV];
    for (int b = 0; b < NV; ++b) qv[b] = vloadu(qt + i * Hp + kLanes * b);
    for (int key = 0; key < kKeys; ++key) {
      const V kv = vset1(kf[key * d + i]);
      for (int b = 0; b < NV; ++b) acc[key][b] = vfmadd(qv[b], kv, acc[key][b]);
    }
  }
  for (int key = 0; key < kKeys; ++key) {
    V t = vzero();
    for (int b = 0; b < NV; ++b) t = vfmadd(vrelu(acc[key][b]), vloadu(q.w + (hv0 + b) * kLanes), t);
    total[key] += vsum(t);
  }
}

void score_range_family(const PreparedQuery& q, const IndexerKeys& k, int64_t begin, int64_t end, float* scores) {
  const int64_t d = q.dim, vectors = q.heads_padded / kLanes;
  std::vector<float> kf(static_cast<size_t>(kKeys * d));  // [kKeys, d] decoded keys
  for (int64_t s0 = begin; s0 < end; s0 += kKeys) {
    const int64_t nk = std::min<int64_t>(kKeys, end - s0);
    for (int64_t key = 0; key < kKeys; ++key) {
      if (key < nk) decode_key(k, s0 + key, d, kf.data() + key * d);
      else std::fill_n(kf.data() + key * d, d, 0.0f);
    }
    float total[kKeys] = {};
    int64_t hv = 0;
    for (; hv + 4 <= vectors; hv += 4) head_vectors<4>(q, kf.data(), hv, total);
    for (; hv + 2 <= vectors; hv += 2) head_vectors<2>(q, kf.data(), hv, total);
    for (; hv < vectors; ++hv) head_vectors<1>(q, kf.data(), hv, total);
    for (int64_t key = 0; key < nk; ++key) scores[s0 + key] = total[key];
  }
}
