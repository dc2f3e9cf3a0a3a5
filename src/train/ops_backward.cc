#include "train/ops_backward.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/check.h"

namespace dseek::train {

namespace {

constexpr int64_t kRowBlock = 16;  // weight rows decoded at a time

template <typename F>
F dot(const F* a, const F* b, int64_t n) {
  F acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

template <typename F>
void axpy(F a, const F* x, F* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

template <typename F>
F sigmoid(F x) {
  return F(1) / (F(1) + std::exp(-x));
}

}  // namespace

// --- linear ---------------------------------------------------------------------------------

void linear_forward(const float* x, int64_t T, const ops::LinearWeight& w, float* y) { ops::linear(x, T, w, y); }

void linear_backward(const float* x, const float* dy, int64_t T, const ops::LinearWeight& w, float* dx, float* dw) {
  DSEEK_CHECK(!w.empty(), "linear_backward on an unbound weight");
  const int64_t out = w.out, in = w.in;
  if (dw != nullptr) {
    // dw[o] += sum_t dy[t, o] x[t]: rows of dw are independent, so threads split them.
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; ++o) {
      float* row = dw + o * in;
      for (int64_t t = 0; t < T; ++t) {
        const float a = dy[t * out + o];
        if (a != 0.0f) axpy(a, x + t * in, row, in);
      }
    }
  }
  if (dx != nullptr) {
    // dx[t] += sum_o dy[t, o] W[o]: each thread owns a range of tokens and walks the weight
    // in decoded blocks of rows (decoding it once per thread, a cost of 1/T of the products).
#pragma omp parallel
    {
      const int64_t nth = omp_get_num_threads(), id = omp_get_thread_num();
      const int64_t t0 = T * id / nth, t1 = T * (id + 1) / nth;
      if (t0 < t1) {
        std::vector<float> rows(static_cast<size_t>(kRowBlock * in));
        for (int64_t r0 = 0; r0 < out; r0 += kRowBlock) {
          const int64_t n = std::min(kRowBlock, out - r0);
          ops::decode_rows(w, r0, n, rows.data());
          for (int64_t t = t0; t < t1; ++t) {
            const float* dyt = dy + t * out + r0;
            float* dxt = dx + t * in;
            for (int64_t r = 0; r < n; ++r)
              if (dyt[r] != 0.0f) axpy(dyt[r], rows.data() + r * in, dxt, in);
          }
        }
      }
    }
  }
}

// --- embedding ------------------------------------------------------------------------------

void embedding_forward(const ops::LinearWeight& table, const int32_t* tokens, int64_t T, float* y) {
  for (int64_t t = 0; t < T; ++t) ops::decode_rows(table, tokens[t], 1, y + t * table.in);
}

void embedding_backward(const int32_t* tokens, const float* dy, int64_t T, int64_t C, float* dtable) {
  // Serial: a token repeated in the sequence adds into the same row.
  for (int64_t t = 0; t < T; ++t) axpy(1.0f, dy + t * C, dtable + static_cast<int64_t>(tokens[t]) * C, C);
}

// --- RMSNorm --------------------------------------------------------------------------------

template <typename F>
void rms_norm_forward(const F* x, const F* w, int64_t T, int64_t C, F eps, F* y) {
  for (int64_t t = 0; t < T; ++t) {
    const F* xt = x + t * C;
    const F inv = F(1) / std::sqrt(dot(xt, xt, C) / static_cast<F>(C) + eps);
    for (int64_t i = 0; i < C; ++i) y[t * C + i] = xt[i] * inv * w[i];
  }
}

template <typename F>
void rms_norm_backward(const F* x, const F* w, const F* dy, int64_t T, int64_t C, F eps, F* dx, F* dw) {
  // With r = (mean(x^2) + eps)^-1/2 and g = dy * w:  dx = r * (g - x * r^2 * mean(g * x)).
  for (int64_t t = 0; t < T; ++t) {
    const F* xt = x + t * C;
    const F* dyt = dy + t * C;
    const F r = F(1) / std::sqrt(dot(xt, xt, C) / static_cast<F>(C) + eps);
    F gx = 0;
    for (int64_t i = 0; i < C; ++i) gx += dyt[i] * w[i] * xt[i];
    const F k = r * r * gx / static_cast<F>(C);
    for (int64_t i = 0; i < C; ++i) dx[t * C + i] += r * (dyt[i] * w[i] - xt[i] * k);
    if (dw != nullptr)
      for (int64_t i = 0; i < C; ++i) dw[i] += dyt[i] * xt[i] * r;
  }
}

// --- RoPE -----------------------------------------------------------------------------------

RopeAngles rope_angles(const model::RopeTable& rope, int64_t T) {
  RopeAngles a;
  a.half = rope.dim() / 2;
  a.cos.resize(static_cast<size_t>(T * a.half));
  a.sin.resize(static_cast<size_t>(T * a.half));
  const std::vector<float>& inv_freq = rope.inv_freq();
  for (int64_t p = 0; p < T; ++p) {
    for (int64_t i = 0; i < a.half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[i];  // as RopeTable: float angle
      a.cos[p * a.half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      a.sin[p * a.half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
  return a;
}

template <typename F>
void rope_forward(F* x, const F* cos, const F* sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const F a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * cos[i] - b * sin[i];
    x[2 * i + 1] = a * sin[i] + b * cos[i];
  }
}

template <typename F>
void rope_backward(F* d, const F* cos, const F* sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {  // the transposed 2x2 rotation
    const F a = d[2 * i], b = d[2 * i + 1];
    d[2 * i] = a * cos[i] + b * sin[i];
    d[2 * i + 1] = -a * sin[i] + b * cos[i];
  }
}

// --- causal attention -----------------------------------------------------------------------

template <typename F>
void attention_forward(const F* q, const F* k, const F* v, int64_t T, int64_t H, int64_t dk, int64_t dv, F scale,
                       F* o, F* lse) {
#pragma omp parallel
  {
    std::vector<F> p(static_cast<size_t>(T));
#pragma omp for schedule(static) collapse(2)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const F* qt = q + (t * H + h) * dk;
        F mx = -std::numeric_limits<F>::infinity();
        for (int64_t s = 0; s <= t; ++s) {
          p[s] = scale * dot(qt, k + (s * H + h) * dk, dk);
          mx = std::max(mx, p[s]);
        }
        F sum = 0;
        for (int64_t s = 0; s <= t; ++s) sum += p[s] = std::exp(p[s] - mx);
        lse[h * T + t] = mx + std::log(sum);
        F* ot = o + (t * H + h) * dv;
        std::fill(ot, ot + dv, F(0));
        for (int64_t s = 0; s <= t; ++s) axpy(p[s] / sum, v + (s * H + h) * dv, ot, dv);
      }
    }
  }
}

template <typename F>
void attention_backward(const F* q, const F* k, const F* v, const F* o, const F* lse, const F* dout, int64_t T,
                        int64_t H, int64_t dk, int64_t dv, F scale, F* dq, F* dkey, F* dval) {
  // Per row t: p_s = exp(l_s - lse_t); dS_s = p_s (dout_t . v_s - dout_t . o_t) (the softmax
  // Jacobian, with sum_s p_s dout_t . v_s = dout_t . o_t); dq_t += scale sum_s dS_s k_s,
  // dk_s += scale dS_s q_t, dv_s += p_s dout_t. Heads touch disjoint slices: one per thread.
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t t = 0; t < T; ++t) {
      const F* qt = q + (t * H + h) * dk;
      const F* dot_ = dout + (t * H + h) * dv;
      const F d_row = dot(dot_, o + (t * H + h) * dv, dv);
      const F l = lse[h * T + t];
      F* dqt = dq + (t * H + h) * dk;
      for (int64_t s = 0; s <= t; ++s) {
        const F* ks = k + (s * H + h) * dk;
        const F* vs = v + (s * H + h) * dv;
        const F p = std::exp(scale * dot(qt, ks, dk) - l);
        const F ds = p * (dot(dot_, vs, dv) - d_row);
        axpy(scale * ds, ks, dqt, dk);
        axpy(scale * ds, qt, dkey + (s * H + h) * dk, dk);
        axpy(p, dot_, dval + (s * H + h) * dv, dv);
      }
    }
  }
}

// --- SwiGLU ---------------------------------------------------------------------------------

template <typename F>
void swiglu_forward(const F* g, const F* u, int64_t n, F* h) {
  for (int64_t i = 0; i < n; ++i) h[i] = g[i] * sigmoid(g[i]) * u[i];
}

template <typename F>
void swiglu_backward(const F* g, const F* u, const F* dh, int64_t n, F* dg, F* du) {
  for (int64_t i = 0; i < n; ++i) {
    const F s = sigmoid(g[i]);
    du[i] += dh[i] * g[i] * s;
    dg[i] += dh[i] * u[i] * s * (F(1) + g[i] * (F(1) - s));  // silu'(g) = s (1 + g (1 - s))
  }
}

// --- router weights -------------------------------------------------------------------------

namespace {

template <typename F>
std::vector<F> router_scores(const model::ModelConfig& c, const F* logits) {
  const int64_t E = c.n_routed_experts;
  std::vector<F> s(logits, logits + E);
  if (c.scoring_func == model::ScoringFunc::kSoftmax) {
    const F mx = *std::max_element(s.begin(), s.end());
    F sum = 0;
    for (F& x : s) sum += x = std::exp(x - mx);
    for (F& x : s) x /= sum;
  } else {
    for (F& x : s) x = sigmoid(x);
  }
  return s;
}

}  // namespace

template <typename F>
void route_weights_forward(const model::ModelConfig& c, const F* logits, const int32_t* chosen, int64_t K,
                           F* weights) {
  const std::vector<F> s = router_scores(c, logits);
  F sum = 0;
  for (int64_t k = 0; k < K; ++k) sum += weights[k] = s[chosen[k]];
  for (int64_t k = 0; k < K; ++k) {
    if (c.norm_topk_prob) weights[k] /= sum + F(1e-20);
    weights[k] *= static_cast<F>(c.routed_scaling_factor);
  }
}

template <typename F>
void route_weights_backward(const model::ModelConfig& c, const F* logits, const int32_t* chosen, int64_t K,
                            const F* dweights, F* dlogits) {
  const int64_t E = c.n_routed_experts;
  const std::vector<F> s = router_scores(c, logits);
  const F rsf = static_cast<F>(c.routed_scaling_factor);
  std::vector<F> ds(static_cast<size_t>(E), F(0));  // d loss / d s, non-zero on the chosen experts
  if (c.norm_topk_prob) {
    // w_k = rsf s_k / den, den = sum_j s_j + 1e-20:  ds_j = rsf / den (dw_j - sum_k dw_k s_k / den)
    F den = F(1e-20);
    for (int64_t k = 0; k < K; ++k) den += s[chosen[k]];
    F a = 0;
    for (int64_t k = 0; k < K; ++k) a += dweights[k] * s[chosen[k]];
    a /= den;
    for (int64_t k = 0; k < K; ++k) ds[chosen[k]] = rsf / den * (dweights[k] - a);
  } else {
    for (int64_t k = 0; k < K; ++k) ds[chosen[k]] = rsf * dweights[k];
  }
  if (c.scoring_func == model::ScoringFunc::kSoftmax) {
    F sds = 0;
    for (int64_t e = 0; e < E; ++e) sds += s[e] * ds[e];
    for (int64_t e = 0; e < E; ++e) dlogits[e] += s[e] * (ds[e] - sds);
  } else {
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = chosen[k];
      dlogits[e] += ds[e] * s[e] * (F(1) - s[e]);
    }
  }
}

// --- cross-entropy --------------------------------------------------------------------------

namespace {

template <typename F>
double row_logsumexp(const F* x, int64_t V) {
  const double mx = static_cast<double>(*std::max_element(x, x + V));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(x[i]) - mx);
  return mx + std::log(sum);
}

}  // namespace

template <typename F>
double cross_entropy_forward(const F* logits, const int32_t* targets, int64_t N, int64_t V) {
  double total = 0;
  for (int64_t n = 0; n < N; ++n) total += row_logsumexp(logits + n * V, V) - static_cast<double>(logits[n * V + targets[n]]);
  return total / static_cast<double>(N);
}

template <typename F>
void cross_entropy_backward(const F* logits, const int32_t* targets, int64_t N, int64_t V, F dloss, F* dlogits) {
  const double k = static_cast<double>(dloss) / static_cast<double>(N);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const F* x = logits + n * V;
    const double lse = row_logsumexp(x, V);
    for (int64_t i = 0; i < V; ++i) dlogits[n * V + i] += static_cast<F>(k * std::exp(static_cast<double>(x[i]) - lse));
    dlogits[n * V + targets[n]] -= static_cast<F>(k);
  }
}

// --- instantiations -------------------------------------------------------------------------

#define DSEEK_TRAIN_OPS(F)                                                                                       \
  template void rms_norm_forward<F>(const F*, const F*, int64_t, int64_t, F, F*);                                \
  template void rms_norm_backward<F>(const F*, const F*, const F*, int64_t, int64_t, F, F*, F*);                 \
  template void rope_forward<F>(F*, const F*, const F*, int64_t);                                                \
  template void rope_backward<F>(F*, const F*, const F*, int64_t);                                               \
  template void attention_forward<F>(const F*, const F*, const F*, int64_t, int64_t, int64_t, int64_t, F, F*, F*); \
  template void attention_backward<F>(const F*, const F*, const F*, const F*, const F*, const F*, int64_t,        \
                                      int64_t, int64_t, int64_t, F, F*, F*, F*);                                 \
  template void swiglu_forward<F>(const F*, const F*, int64_t, F*);                                              \
  template void swiglu_backward<F>(const F*, const F*, const F*, int64_t, F*, F*);                               \
  template void route_weights_forward<F>(const model::ModelConfig&, const F*, const int32_t*, int64_t, F*);      \
  template void route_weights_backward<F>(const model::ModelConfig&, const F*, const int32_t*, int64_t,          \
                                          const F*, F*);                                                         \
  template double cross_entropy_forward<F>(const F*, const int32_t*, int64_t, int64_t);                          \
  template void cross_entropy_backward<F>(const F*, const int32_t*, int64_t, int64_t, F, F*);

DSEEK_TRAIN_OPS(float)
DSEEK_TRAIN_OPS(double)

#undef DSEEK_TRAIN_OPS

}  // namespace dseek::train
