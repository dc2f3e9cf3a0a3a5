// The ops of the training forward pass, each forward beside its backward (llm.c's twins), on
// plain row-major arrays. The row-wise ops are templated on the scalar so the unit tests check
// every backward against central finite differences in double; the model uses float. These
// are not the inference ops (ops/): those keep nothing a backward needs.
//
// Accumulation rule, the same everywhere: a backward ADDS (+=) into every gradient it writes,
// parameters and inputs alike, so a tensor read by several ops (x feeds q_a_proj and
// kv_a_proj; the residual stream feeds a branch and skips it) sums its gradients without
// temporaries. Callers zero a buffer before its first contribution. The one exception is
// rope_backward, which rotates a gradient in place (RoPE is orthogonal: its backward is the
// same rotation by the opposite angle).
//
// Legend: T = tokens (rows), C = channels, H = heads, dk/dv = key/value head dims,
// V = vocab, E = n_routed_experts, K = chosen experts, half = qk_rope_head_dim / 2.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/rope.h"
#include "ops/linear.h"

namespace dseek::train {

// --- linear: y = x W^T, W [out, in] read in its stored dtype (BF16/F16/F32/FP8) -------------

// y [T, out] = x [T, in] W^T (ops::linear).
void linear_forward(const float* x, int64_t T, const ops::LinearWeight& w, float* y);
// dx [T, in] += dy W (skipped when dx is null); dw [out, in] += dy^T x (skipped when null).
void linear_backward(const float* x, const float* dy, int64_t T, const ops::LinearWeight& w, float* dx, float* dw);

// --- embedding: y[t] = table[tokens[t]] -----------------------------------------------------

void embedding_forward(const ops::LinearWeight& table, const int32_t* tokens, int64_t T, float* y);  // y [T, C]
// dtable [V, C] += dy [T, C] scattered to the rows of tokens.
void embedding_backward(const int32_t* tokens, const float* dy, int64_t T, int64_t C, float* dtable);

// --- RMSNorm: y[t] = w * x[t] / sqrt(mean(x[t]^2) + eps) -------------------------------------

template <typename F>
void rms_norm_forward(const F* x, const F* w, int64_t T, int64_t C, F eps, F* y);  // x, y [T, C]; w [C]
// dx [T, C] += ..., dw [C] += ... (dw may be null).
template <typename F>
void rms_norm_backward(const F* x, const F* w, const F* dy, int64_t T, int64_t C, F eps, F* dx, F* dw);

// --- interleaved RoPE: pairs (x[2i], x[2i+1]) rotated by angle(p, i) ------------------------

// cos/sin of every position's angles [T, half] for positions [0, T), computed exactly as
// model::RopeTable does (float angle p * theta'_i, cos/sin in double, rounded to float).
struct RopeAngles {
  int64_t half = 0;
  std::vector<float> cos, sin;  // [T, half]
  const float* cos_at(int64_t pos) const { return cos.data() + pos * half; }
  const float* sin_at(int64_t pos) const { return sin.data() + pos * half; }
};
RopeAngles rope_angles(const model::RopeTable& rope, int64_t T);

// Rotates one vector x [2 * half] in place.
template <typename F>
void rope_forward(F* x, const F* cos, const F* sin, int64_t half);
// dx = R^T dy, in place in d [2 * half].
template <typename F>
void rope_backward(F* d, const F* cos, const F* sin, int64_t half);

// --- causal softmax attention, every head on its own keys -----------------------------------
// o[t, h] = sum_{s <= t} softmax_s(scale * q[t, h] . k[s, h]) v[s, h]
// q, k: [T, H, dk]; v, o: [T, H, dv]; lse: [H, T] the log-sum-exp of each row's scaled logits,
// kept so the backward recomputes the probabilities rather than storing [H, T, T].

template <typename F>
void attention_forward(const F* q, const F* k, const F* v, int64_t T, int64_t H, int64_t dk, int64_t dv, F scale,
                       F* o, F* lse);
// dq, dk [T, H, dk] += ...; dv [T, H, dv] += ...
template <typename F>
void attention_backward(const F* q, const F* k, const F* v, const F* o, const F* lse, const F* dout, int64_t T,
                        int64_t H, int64_t dk, int64_t dv, F scale, F* dq, F* dkey, F* dval);

// --- SwiGLU: h = silu(g) * u ----------------------------------------------------------------

template <typename F>
void swiglu_forward(const F* g, const F* u, int64_t n, F* h);
// dg, du [n] += ...
template <typename F>
void swiglu_backward(const F* g, const F* u, const F* dh, int64_t n, F* dg, F* du);

// --- router output weights, for a given (discrete) choice of experts -------------------------
// s = sigmoid(logits) or softmax(logits) over all E; w_k = s[chosen_k], / sum_k s[chosen_k]
// (+ 1e-20) if norm_topk_prob, * routed_scaling_factor: the weights of model::route_token. The
// choice itself (bias, groups, top-k) has no gradient; the weights carry it into the gate.

template <typename F>
void route_weights_forward(const model::ModelConfig& c, const F* logits, const int32_t* chosen, int64_t K,
                           F* weights);  // logits [E], weights [K]
// dlogits [E] += ...
template <typename F>
void route_weights_backward(const model::ModelConfig& c, const F* logits, const int32_t* chosen, int64_t K,
                            const F* dweights, F* dlogits);

// --- cross-entropy, mean over rows ----------------------------------------------------------
// loss = mean_n (logsumexp(logits[n]) - logits[n, targets[n]]); logits [N, V], targets [N].

template <typename F>
double cross_entropy_forward(const F* logits, const int32_t* targets, int64_t N, int64_t V);
// dlogits [N, V] += dloss * (softmax(logits[n]) - onehot(targets[n])) / N
template <typename F>
void cross_entropy_backward(const F* logits, const int32_t* targets, int64_t N, int64_t V, F dloss, F* dlogits);

}  // namespace dseek::train
