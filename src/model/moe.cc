#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/scratch.h"
#include "cpu/linear_kernels.h"
#include "ops/linear.h"
#include "ops/ops.h"

namespace dseek::model {

Routing route_token(const ModelConfig& c, const float* logits, const std::vector<float>& bias) {
  const int64_t E = c.n_routed_experts;
  std::vector<float> scores(logits, logits + E);
  if (c.scoring_func == ScoringFunc::kSoftmax) {
    ops::softmax_inplace(scores.data(), E);
  } else {
    for (float& s : scores) s = 1.0f / (1.0f + std::exp(-s));
  }
  std::vector<float> choice = scores;  // what selection ranks
  if (c.topk_method == TopkMethod::kNoauxTc && !bias.empty())
    for (int64_t e = 0; e < E; ++e) choice[e] += bias[e];

  if (c.topk_method != TopkMethod::kGreedy && c.n_group > 1) {
    const int64_t per_group = c.experts_per_group();
    std::vector<float> group_score(static_cast<size_t>(c.n_group));
    for (int64_t g = 0; g < c.n_group; ++g) {
      const float* gs = choice.data() + g * per_group;
      if (c.topk_method == TopkMethod::kNoauxTc) {
        const auto best2 = ops::topk_indices(gs, per_group, 2);
        group_score[g] = gs[best2[0]] + gs[best2[1]];
      } else {
        group_score[g] = *std::max_element(gs, gs + per_group);
      }
    }
    const auto kept = ops::topk_indices(group_score.data(), c.n_group, c.topk_group);
    std::vector<bool> keep(static_cast<size_t>(c.n_group), false);
    for (int32_t g : kept) keep[g] = true;
    for (int64_t e = 0; e < E; ++e)
      if (!keep[e / per_group]) choice[e] = -std::numeric_limits<float>::infinity();
  }

  Routing r;
  r.experts = ops::topk_indices(choice.data(), E, c.num_experts_per_tok);
  float sum = 0.0f;
  for (int32_t e : r.experts) {
    r.weights.push_back(scores[e]);
    sum += scores[e];
  }
  for (float& wgt : r.weights) {
    if (c.norm_topk_prob) wgt /= sum + 1e-20f;
    wgt *= static_cast<float>(c.routed_scaling_factor);
  }
  return r;
}

void ffn_forward(const FfnWeights& w, const float* x, int64_t T, float* y) {
  const int64_t F = w.gate_proj.out;
  std::vector<float> gate(static_cast<size_t>(T * F)), up(static_cast<size_t>(T * F));
  const ops::LinearJob gate_up[] = {{x, T, &w.gate_proj, gate.data()}, {x, T, &w.up_proj, up.data()}};
  ops::linear_batch(gate_up);  // at decode: one x preparation and one parallel region for both
  ops::swiglu_inplace(gate.data(), up.data(), T * F);
  ops::linear(gate.data(), T, w.down_proj, y);
}

namespace {

using RoutedTokens = std::vector<std::vector<std::pair<int64_t, float>>>;  // expert -> (token, weight)

// The batched experts' gate, up and output rows (this thread's; reused call after call).
thread_local Scratch t_expert_buffers;

// Below this many SwiGLU activations in a layer, one thread does them (a region costs ~2 us).
constexpr int64_t kParallelSwigluMin = 4096;

// The experts of a few tokens (decode), the same sums in the same order as moe_forward's loop,
// in two batched products: every active expert's gate and up projections (and the shared
// expert's), then every down projection. At decode each expert's matrices are small (V2-Lite:
// 1408 x 2048), so one parallel region per matrix cost more in wake-ups, x preparation and
// uneven finishes than the matrix itself streamed in; a batch deals all the rows in one region.
void moe_experts_batched(const MoeWeights& w, const float* x, int64_t T, const RoutedTokens& routed, float* out) {
  struct Active {
    const FfnWeights* ffn;
    const std::vector<std::pair<int64_t, float>>* tokens;  // null: the shared expert (every token)
    int64_t n;
    std::vector<float> x;  // gathered rows, empty when the expert sees every token in order
    float *gate = nullptr, *up = nullptr, *y = nullptr;  // [n, F], [n, F], [n, D_out] in t_expert_buffers
  };
  std::vector<Active> active;
  for (size_t e = 0; e < routed.size(); ++e) {
    if (routed[e].empty()) continue;
    active.push_back({&w.experts[e], &routed[e], static_cast<int64_t>(routed[e].size()), {}});
  }
  if (w.has_shared) active.push_back({&w.shared, nullptr, T, {}});
  // Every product below writes all of its outputs, so the buffers are not cleared: as
  // std::vectors, clearing them (147 KB a V2-Lite layer) was 0.7% of a decode's samples, on the
  // main thread while the other waited.
  int64_t floats = 0;
  for (const Active& a : active) floats += a.n * (2 * a.ffn->gate_proj.out + a.ffn->down_proj.out);
  float* next = t_expert_buffers.get(floats);
  for (Active& a : active) {
    const int64_t F = a.ffn->gate_proj.out;
    a.gate = next;
    a.up = a.gate + a.n * F;
    a.y = a.up + a.n * F;
    next = a.y + a.n * a.ffn->down_proj.out;
  }
  std::vector<ops::LinearJob> jobs;
  for (Active& a : active) {
    const int64_t Dm = a.ffn->gate_proj.in;
    const float* xa = x;
    bool in_order = a.tokens == nullptr;
    if (!in_order) {
      in_order = a.n == T;
      for (int64_t i = 0; in_order && i < a.n; ++i) in_order = (*a.tokens)[i].first == i;
    }
    if (!in_order) {  // a subset of the tokens: gathered, as moe_forward's loop does
      a.x.resize(static_cast<size_t>(a.n * Dm));
      for (int64_t i = 0; i < a.n; ++i) std::copy_n(x + (*a.tokens)[i].first * Dm, Dm, a.x.data() + i * Dm);
      xa = a.x.data();
    }
    jobs.push_back({xa, a.n, &a.ffn->gate_proj, a.gate});
    jobs.push_back({xa, a.n, &a.ffn->up_proj, a.up});
  }
  ops::linear_batch(jobs);
  jobs.clear();
  // SwiGLU of every expert on the whole team: at decode it was 1.1% of the main thread's time
  // on v2-lite-q4 while the other thread waited.
  int64_t activations = 0;
  for (const Active& a : active) activations += a.n * a.ffn->gate_proj.out;
#pragma omp parallel for schedule(dynamic) if (activations >= kParallelSwigluMin)
  for (size_t i = 0; i < active.size(); ++i)
    ops::swiglu_inplace(active[i].gate, active[i].up, active[i].n * active[i].ffn->gate_proj.out);
  for (Active& a : active) jobs.push_back({a.gate, a.n, &a.ffn->down_proj, a.y});
  ops::linear_batch(jobs);
  for (const Active& a : active) {
    const int64_t Do = a.ffn->down_proj.out;
    if (a.tokens == nullptr) {  // shared: added after every routed expert
      for (int64_t i = 0; i < T * Do; ++i) out[i] += a.y[i];
      continue;
    }
    for (int64_t i = 0; i < a.n; ++i)
      ops::axpy((*a.tokens)[i].second, a.y + i * Do, out + (*a.tokens)[i].first * Do, Do);
  }
}

}  // namespace

void moe_forward(const ModelConfig& c, const MoeWeights& w, const float* x, int64_t T, float* out) {
  const int64_t D = c.hidden_size, E = c.n_routed_experts;
  std::vector<float> logits(static_cast<size_t>(T * E));  // [T, E], float32 router
  ops::linear_f32(x, T, w.gate, logits.data());  // routing: no bf16 near-tie flips

  // Group the tokens by expert so each expert runs once over all the tokens routed to it.
  RoutedTokens routed(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const Routing r = route_token(c, logits.data() + t * E, w.e_score_correction_bias);
    for (size_t k = 0; k < r.experts.size(); ++k) routed[r.experts[k]].emplace_back(t, r.weights[k]);
  }

  std::fill(out, out + T * D, 0.0f);
  if (T <= cpu::kGemvMaxTokens) return moe_experts_batched(w, x, T, routed, out);
  std::vector<float> xe, ye;
  for (int64_t e = 0; e < E; ++e) {  // expert order, as the reference accumulates
    const auto& tokens = routed[e];
    if (tokens.empty()) continue;
    const int64_t n = static_cast<int64_t>(tokens.size());
    xe.resize(static_cast<size_t>(n * D));
    ye.resize(static_cast<size_t>(n * D));
    for (int64_t i = 0; i < n; ++i) std::copy_n(x + tokens[i].first * D, D, xe.data() + i * D);
    ffn_forward(w.experts[e], xe.data(), n, ye.data());  // [n, D]
    for (int64_t i = 0; i < n; ++i) ops::axpy(tokens[i].second, ye.data() + i * D, out + tokens[i].first * D, D);
  }
  if (w.has_shared) {
    std::vector<float> shared(static_cast<size_t>(T * D));
    ffn_forward(w.shared, x, T, shared.data());
    for (int64_t i = 0; i < T * D; ++i) out[i] += shared[i];
  }
}

}  // namespace dseek::model
