#include "train/balance.h"

#include <cmath>

#include "base/check.h"
#include "model/tensor_table.h"
#include "train/ops_backward.h"

namespace dseek::train {

std::vector<int64_t> moe_layer_ids(const model::ModelConfig& c) {
  std::vector<int64_t> ids;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if (c.is_moe_layer(l)) ids.push_back(l);
  return ids;
}

ExpertLoad expert_load(const model::ModelConfig& c, const Activations& act) {
  ExpertLoad load;
  for (int64_t l : moe_layer_ids(c)) {
    std::vector<int64_t> counts(static_cast<size_t>(c.n_routed_experts), 0);
    for (const model::Routing& r : act.layers[l].moe.routing)
      for (int32_t e : r.experts) ++counts[e];
    load.counts.push_back(std::move(counts));
  }
  return load;
}

void add_expert_load(const ExpertLoad& from, ExpertLoad* into) {
  if (into->counts.empty()) {
    *into = from;
    return;
  }
  DSEEK_CHECK(into->counts.size() == from.counts.size(), "expert loads of {} and {} MoE layers", into->counts.size(),
              from.counts.size());
  for (size_t m = 0; m < from.counts.size(); ++m) {
    DSEEK_CHECK(into->counts[m].size() == from.counts[m].size(), "MoE layer {}: loads of {} and {} experts", m,
                into->counts[m].size(), from.counts[m].size());
    for (size_t e = 0; e < from.counts[m].size(); ++e) into->counts[m][e] += from.counts[m][e];
  }
}

void update_expert_bias(const ExpertLoad& load, float speed, model::Weights* w) {
  const model::ModelConfig& c = w->config();
  const std::vector<int64_t> ids = moe_layer_ids(c);
  DSEEK_CHECK(load.counts.size() == ids.size(), "expert load of {} MoE layers, the model has {}", load.counts.size(),
              ids.size());
  for (size_t m = 0; m < ids.size(); ++m) {
    std::vector<float>& bias = w->layers[ids[m]].moe.e_score_correction_bias;
    const std::vector<int64_t>& n = load.counts[m];
    DSEEK_CHECK(bias.size() == n.size(), "layer {}: {} bias values (noaux_tc routers only), {} expert loads", ids[m],
                bias.size(), n.size());
    int64_t total = 0;
    for (int64_t x : n) total += x;
    // Compare E * load[e] with the total instead of load[e] with a fractional mean: exact.
    const int64_t E = static_cast<int64_t>(n.size());
    for (int64_t e = 0; e < E; ++e) {
      const int64_t diff = total - E * n[e];  // sign(mean - load[e])
      if (diff > 0) bias[e] += speed;
      else if (diff < 0) bias[e] -= speed;
    }
  }
}

double seq_balance_loss_layer(const model::ModelConfig& c, const float* logits,
                              const std::vector<model::Routing>& routing, int64_t T, float alpha, float* dlogits) {
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
  DSEEK_CHECK(static_cast<int64_t>(routing.size()) == T, "routing of {} tokens, expected {}", routing.size(), T);
  std::vector<double> f(static_cast<size_t>(E), 0.0);  // [E]
  for (const model::Routing& r : routing)
    for (int32_t e : r.experts) f[e] += 1.0;
  for (double& x : f) x *= static_cast<double>(E) / static_cast<double>(K * T);

  // L = alpha/T sum_t sum_e f_e s'_{t,e}: each token contributes on its own.
  const bool sigmoid = c.scoring_func == model::ScoringFunc::kSigmoid;
  const double a = static_cast<double>(alpha);
  double loss = 0;
  std::vector<double> s(static_cast<size_t>(E)), ds(static_cast<size_t>(E));  // [E]
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits + t * E;
    double sum = 0;
    if (sigmoid) {
      for (int64_t e = 0; e < E; ++e) s[e] = 1.0 / (1.0 + std::exp(-static_cast<double>(l[e])));
    } else {
      double mx = l[0];
      for (int64_t e = 1; e < E; ++e) mx = std::max(mx, static_cast<double>(l[e]));
      for (int64_t e = 0; e < E; ++e) s[e] = std::exp(static_cast<double>(l[e]) - mx);
      double z = 0;
      for (int64_t e = 0; e < E; ++e) z += s[e];
      for (int64_t e = 0; e < E; ++e) s[e] /= z;
    }
    for (int64_t e = 0; e < E; ++e) sum += s[e];
    double fs = 0;  // sum_e f_e s'_e
    for (int64_t e = 0; e < E; ++e) fs += f[e] * s[e] / sum;
    loss += a / static_cast<double>(T) * fs;
    if (dlogits == nullptr) continue;
    // d/ds_j of sum_e f_e s_e / S = (f_j - fs) / S; then through the scoring function.
    const double scale = a / static_cast<double>(T) / sum;
    for (int64_t e = 0; e < E; ++e) ds[e] = scale * (f[e] - fs);
    float* dl = dlogits + t * E;
    if (sigmoid) {
      for (int64_t e = 0; e < E; ++e) dl[e] += static_cast<float>(ds[e] * s[e] * (1.0 - s[e]));
    } else {
      double dot = 0;
      for (int64_t e = 0; e < E; ++e) dot += ds[e] * s[e];
      for (int64_t e = 0; e < E; ++e) dl[e] += static_cast<float>(s[e] * (ds[e] - dot));
    }
  }
  return loss;
}

double seq_balance_loss_and_backward(const model::Weights& w, const Activations& act, float alpha, Gradients* grads) {
  const model::ModelConfig& c = w.config();
  const int64_t T = act.T(), E = c.n_routed_experts;
  double loss = 0;
  std::vector<float> dlogits;  // [T, E]
  for (int64_t l : moe_layer_ids(c)) {
    const LayerActivations& a = act.layers[l];
    dlogits.assign(static_cast<size_t>(T * E), 0.0f);
    loss += seq_balance_loss_layer(c, a.moe.router_logits.data(), a.moe.routing, T, alpha, dlogits.data());
    linear_backward(a.ffn_in.data(), dlogits.data(), T, w.layers[l].moe.gate, nullptr,
                    grads->at(model::layer_prefix(l) + "mlp.gate.weight"));
  }
  return loss;
}

}  // namespace dseek::train
