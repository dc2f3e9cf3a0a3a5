#include "train/moe_backward.h"

#include <algorithm>

#include "base/check.h"
#include "train/ops_backward.h"

namespace dseek::train {

void ffn_train_forward(const model::FfnWeights& w, const float* x, int64_t n, FfnActivations* act, float* y,
                       LinearHook* hook) {
  const int64_t F = w.gate_proj.out;
  act->gate.resize(static_cast<size_t>(n * F));
  act->up.resize(static_cast<size_t>(n * F));
  linear_forward(x, n, w.gate_proj, act->gate.data(), hook);
  linear_forward(x, n, w.up_proj, act->up.data(), hook);
  std::vector<float> h(static_cast<size_t>(n * F));  // [n, F], recomputed in the backward
  swiglu_forward(act->gate.data(), act->up.data(), n * F, h.data());
  linear_forward(h.data(), n, w.down_proj, y, hook);
}

void ffn_backward(const model::FfnWeights& w, const float* x, int64_t n, const FfnActivations& act, const float* dy,
                  float* dx, const FfnGrads& g, LinearHook* hook) {
  const int64_t F = w.gate_proj.out;
  std::vector<float> h(static_cast<size_t>(n * F)), dh(static_cast<size_t>(n * F), 0.0f);  // [n, F]
  swiglu_forward(act.gate.data(), act.up.data(), n * F, h.data());
  linear_backward(h.data(), dy, n, w.down_proj, dh.data(), g.down_proj, hook);
  std::vector<float> dgate(static_cast<size_t>(n * F), 0.0f), dup(static_cast<size_t>(n * F), 0.0f);
  swiglu_backward(act.gate.data(), act.up.data(), dh.data(), n * F, dgate.data(), dup.data());
  linear_backward(x, dgate.data(), n, w.gate_proj, dx, g.gate_proj, hook);
  linear_backward(x, dup.data(), n, w.up_proj, dx, g.up_proj, hook);
}

void moe_train_forward(const model::ModelConfig& c, const model::MoeWeights& w, const float* x, int64_t T,
                       MoeActivations* act, float* out, LinearHook* hook) {
  const int64_t D = c.hidden_size, E = c.n_routed_experts;
  MoeActivations& a = *act;
  a.router_logits.resize(static_cast<size_t>(T * E));
  linear_forward(x, T, w.gate, a.router_logits.data());  // [T, E]
  a.routing.resize(static_cast<size_t>(T));
  a.experts.assign(static_cast<size_t>(E), {});
  for (int64_t t = 0; t < T; ++t) {
    a.routing[t] = model::route_token(c, a.router_logits.data() + t * E, w.e_score_correction_bias);
    const model::Routing& rt = a.routing[t];
    for (size_t k = 0; k < rt.experts.size(); ++k) {
      a.experts[rt.experts[k]].tokens.push_back(t);
      a.experts[rt.experts[k]].slot.push_back(static_cast<int32_t>(k));
    }
  }

  std::fill(out, out + T * D, 0.0f);
  std::vector<float> xe;
  for (int64_t e = 0; e < E; ++e) {  // expert order, as the inference path accumulates
    MoeActivations::Expert& ex = a.experts[e];
    const int64_t n = static_cast<int64_t>(ex.tokens.size());
    if (n == 0) continue;
    xe.resize(static_cast<size_t>(n * D));
    for (int64_t i = 0; i < n; ++i) std::copy_n(x + ex.tokens[i] * D, D, xe.data() + i * D);
    ex.y.resize(static_cast<size_t>(n * D));
    ffn_train_forward(w.experts[e], xe.data(), n, &ex.ffn, ex.y.data(), hook);  // [n, D]
    for (int64_t i = 0; i < n; ++i) {
      const float weight = a.routing[ex.tokens[i]].weights[ex.slot[i]];
      const float* yi = ex.y.data() + i * D;
      float* oi = out + ex.tokens[i] * D;
      for (int64_t j = 0; j < D; ++j) oi[j] += weight * yi[j];
    }
  }
  if (w.has_shared) {
    std::vector<float> shared(static_cast<size_t>(T * D));
    ffn_train_forward(w.shared, x, T, &a.shared, shared.data(), hook);
    for (int64_t i = 0; i < T * D; ++i) out[i] += shared[i];
  }
}

void moe_backward(const model::ModelConfig& c, const model::MoeWeights& w, const float* x, int64_t T,
                  const MoeActivations& a, const float* dout, float* dx, const MoeGrads& g,
                  LinearHook* hook) {
  const int64_t D = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok;
  DSEEK_CHECK(static_cast<int64_t>(g.experts.size()) == E, "MoE grads for {} experts, config has {}",
              g.experts.size(), E);
  if (w.has_shared) ffn_backward(w.shared, x, T, a.shared, dout, dx, g.shared, hook);

  // out[t] = sum_k weight_k y_k[t]:  d y_k[t] = weight_k dout[t],  d weight_k = dout[t] . y_k[t].
  std::vector<float> dweights(static_cast<size_t>(T * K), 0.0f);  // [T, K]
  std::vector<float> xe, dye, dxe;
  for (int64_t e = 0; e < E; ++e) {
    const MoeActivations::Expert& ex = a.experts[e];
    const int64_t n = static_cast<int64_t>(ex.tokens.size());
    if (n == 0) continue;
    xe.resize(static_cast<size_t>(n * D));
    dye.resize(static_cast<size_t>(n * D));
    dxe.assign(static_cast<size_t>(n * D), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = ex.tokens[i];
      const float weight = a.routing[t].weights[ex.slot[i]];
      const float* dot_ = dout + t * D;
      const float* yi = ex.y.data() + i * D;
      double dw = 0;
      for (int64_t j = 0; j < D; ++j) {
        dye[i * D + j] = weight * dot_[j];
        dw += static_cast<double>(dot_[j]) * yi[j];
      }
      dweights[t * K + ex.slot[i]] = static_cast<float>(dw);
      std::copy_n(x + t * D, D, xe.data() + i * D);
    }
    ffn_backward(w.experts[e], xe.data(), n, ex.ffn, dye.data(), dxe.data(), g.experts[e], hook);
    for (int64_t i = 0; i < n; ++i) {
      float* dxt = dx + ex.tokens[i] * D;
      const float* src = dxe.data() + i * D;
      for (int64_t j = 0; j < D; ++j) dxt[j] += src[j];
    }
  }

  // Router: the weights' gradient into the logits, then through the gate.
  std::vector<float> dlogits(static_cast<size_t>(T * E), 0.0f);  // [T, E]
  for (int64_t t = 0; t < T; ++t) {
    const model::Routing& rt = a.routing[t];
    DSEEK_CHECK(static_cast<int64_t>(rt.experts.size()) == K, "token {} routed to {} experts, expected {}", t,
                rt.experts.size(), K);
    route_weights_backward(c, a.router_logits.data() + t * E, rt.experts.data(), K, dweights.data() + t * K,
                           dlogits.data() + t * E);
  }
  linear_backward(x, dlogits.data(), T, w.gate, dx, g.gate);
}

}  // namespace dseek::train
