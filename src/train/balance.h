// DeepSeekMoE load balancing for training (DeepSeek-V3 paper §2.1.2, architecture doc §9):
//  * auxiliary-loss-free: a per-expert bias (e_score_correction_bias) steers only the top-k
//    choice; after each optimizer step it moves by ±speed toward the mean load;
//  * the complementary sequence-wise balance loss alpha * sum_e f_e P_e, a small gradient on
//    the routers against extreme imbalance inside one sequence.
// Both read what train_forward keeps per MoE layer (MoeActivations::router_logits, ::routing,
// LayerActivations::ffn_in). MoE layers are numbered 0, 1, ... in layer order over the main
// model's layers l with LayerWeights::is_moe (moe_layer_ids); the MTP block is not included.
//
// Legend: T = tokens of the sequence, E = n_routed_experts, K = num_experts_per_tok.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/moe.h"
#include "model/weights.h"
#include "train/model_grad.h"

namespace dseek::train {

// The main model's MoE layer ids, in order: ExpertLoad's first index maps through it.
std::vector<int64_t> moe_layer_ids(const model::ModelConfig& c);

struct ExpertLoad {
  std::vector<std::vector<int64_t>> counts;  // [MoE layer][n_routed_experts] tokens routed there
};

// Counts each MoE layer's routing choices (the actual, biased selection) in one sequence.
ExpertLoad expert_load(const model::ModelConfig& c, const Activations& act);
// *into += from; an empty *into becomes a copy (sum a step's sequences from an empty load).
void add_expert_load(const ExpertLoad& from, ExpertLoad* into);

// Auxiliary-loss-free balancing, once per optimizer step with the step's summed load:
// bias[e] += speed * sign(mean load - load[e]) per MoE layer (0 at exactly the mean).
// The bias is the float32 copy Weights decoded at bind time (small vectors are never views of
// the mapped file), so every later forward through *w sees the update, but the file does not:
// a checkpoint save must read gate.e_score_correction_bias from w->layers[l].moe (it has no
// gradient and no optimizer state; Gradients skips it). Needs noaux_tc (DSEEK_CHECK).
void update_expert_bias(const ExpertLoad& load, float speed, model::Weights* w);

// One MoE layer's sequence-wise balance loss (architecture doc §9.2):
//   s'_{t,e} = s_{t,e} / sum_j s_{t,j}   (s: the router's affinities, sigmoid or softmax)
//   P_e = mean_t s'_{t,e},  f_e = E / (K T) * #{t : e chosen for t}   (f is a constant)
//   L = alpha * sum_e f_e P_e
// f counts the actual (bias-steered) selection, as Megatron-style implementations do; the
// paper's eq. 18 writes the unbiased top-k (the doc lists this as unconfirmed).
// logits [T, E]; routing [T]; dlogits [T, E] += d L / d logits unless null.
double seq_balance_loss_layer(const model::ModelConfig& c, const float* logits,
                              const std::vector<model::Routing>& routing, int64_t T, float alpha, float* dlogits);

// The sum of seq_balance_loss_layer over the main model's MoE layers for one sequence; adds
// its gradient into each MoE layer's mlp.gate.weight. The router input (ffn_in) is treated as
// detached here: the loss's gradient into the residual stream below each router (alpha-small)
// is not propagated (model_backward has no per-layer router-logit input yet).
double seq_balance_loss_and_backward(const model::Weights& w, const Activations& act, float alpha, Gradients* grads);

}  // namespace dseek::train
