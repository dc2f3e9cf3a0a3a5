// The whole-model training pass: a float32 forward over one sequence that keeps each layer's
// activations, the next-token loss (kept apart from the model so other objectives plug in),
// and the backward, which mirrors model/deepseek.cc layer by layer in reverse and accumulates
// d loss / d weight into a Gradients map keyed by Hugging Face tensor name.
//
// Scope today: the main model (embedding, MLA, dense FFN, MoE, final norm, lm_head). Hooks for
// what comes later: the MTP module reads the final hidden states and adds into their gradient
// (BackwardInputs::d_hidden); a balance loss adds into the router logits (moe_backward.h);
// LoRA adapters ride along as a LinearHook (lora.h). V3.2: the forward runs sparse attention
// (the indexer's selection, as inference) or, for the indexer's dense warm-up, dense attention;
// the indexer's own loss is train/indexer_backward.h.
//
// Legend: T = tokens of the sequence, D = hidden_size, V = vocab_size.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/config.h"
#include "model/weights.h"
#include "train/mla_backward.h"
#include "train/linear_hook.h"
#include "train/moe_backward.h"
#include "train/ops_backward.h"

namespace dseek::train {

struct GradTensor {
  std::vector<int64_t> shape;  // the weight's shape
  std::vector<float> values;   // row-major, float32
};

// d loss / d weight for every trainable tensor of the main model, by HF name: every row of
// the tensor table in the main group except e_score_correction_bias (selection only). Laid
// out like the weights, so an optimizer walks the same table. With include_mtp, also the MTP
// group's rows (model.layers.{num_hidden_layers}.*, train/mtp.h), the optional copies of the
// embedding and head included: their buffers stay zero when the checkpoint shares the main
// ones (MtpWeights::embed_tokens / shared_head_head empty), so an optimizer skips what the
// checkpoint does not have.
class Gradients {
 public:
  explicit Gradients(const model::ModelConfig& c, bool include_mtp = false);
  // No buffers at all: every weight frozen (LoRA trains only its adapters, lora.h). find()
  // and at() return null, and the backward skips each d weight while still computing d x.
  static Gradients frozen();

  // nullptr when the model has no such trainable tensor.
  float* find(const std::string& name);
  // The buffer of a tensor that must exist (DSEEK_CHECK); null when frozen().
  float* at(const std::string& name);
  const std::map<std::string, GradTensor>& tensors() const { return tensors_; }
  void zero();

 private:
  Gradients() = default;
  std::map<std::string, GradTensor> tensors_;
  bool frozen_ = false;
};

// Everything one decoder layer's backward reads.
struct LayerActivations {
  std::vector<float> x;         // [T, D] residual stream entering the layer
  std::vector<float> attn_in;   // [T, D] input_layernorm(x)
  MlaActivations attn;
  std::vector<float> mid;       // [T, D] residual stream after attention
  std::vector<float> ffn_in;    // [T, D] post_attention_layernorm(mid)
  FfnActivations mlp;           // dense layers
  MoeActivations moe;           // MoE layers
};

struct Activations {
  std::vector<int32_t> tokens;  // [T]
  RopeAngles rope;              // positions [0, T)
  std::vector<LayerActivations> layers;
  std::vector<float> hidden;    // [T, D] final hidden states, before model.norm (MTP reads these)
  std::vector<float> normed;    // [T, D] after model.norm
  std::vector<float> logits;    // [T, V]
  AttentionStage stage = AttentionStage::kSparse;  // how the attention ran (V3.2)
  int64_t T() const { return static_cast<int64_t>(tokens.size()); }
};

// One decoder layer (attention + dense FFN or MoE, each behind its RMSNorm and residual) over
// positions [0, T) (rope holds at least T positions). h [T, D]: the residual stream, updated in
// place; *a receives what layer_backward reads. The main model and the MTP block share it.
// stage: V3.2's dense warm-up or sparse attention (mla_backward.h).
void layer_train_forward(const model::ModelConfig& c, const model::LayerWeights& lw, const RopeAngles& rope,
                         int64_t T, std::vector<float>* h, LayerActivations* a, LinearHook* hook = nullptr,
                         AttentionStage stage = AttentionStage::kSparse);
// dh [T, D]: d loss / d the layer's output on entry, d loss / d its input on return. Parameter
// gradients go into the buffers of *g named `prefix` (model::layer_prefix of the layer).
void layer_backward(const model::ModelConfig& c, const model::LayerWeights& lw, const RopeAngles& rope,
                    const LayerActivations& a, int64_t T, const std::string& prefix, Gradients* g,
                    std::vector<float>* dh, LinearHook* hook = nullptr);

// Checks that `tokens` can be trained on: ids in the vocabulary, at least 2 tokens (one
// prediction), at most max_position_embeddings, and a model the backward supports.
Status check_trainable(const model::ModelConfig& c, std::span<const int32_t> tokens);

// The forward over tokens at positions [0, T) (validated by check_trainable). hook: an extra
// path beside the decoder linears (LoRA adapters, lora.h), or null. stage (V3.2 only): sparse
// attention over the indexer's selection, as `dseek run` computes, or dense for the warm-up.
Activations train_forward(const model::Weights& w, std::span<const int32_t> tokens, LinearHook* hook = nullptr,
                          AttentionStage stage = AttentionStage::kSparse);

// Mean next-token cross-entropy of the logits at positions [0, T-1) against tokens [1, T);
// *dlogits ([T, V], zeroed here) receives d loss / d logits (row T-1 stays 0).
double next_token_loss(const Activations& act, int64_t vocab, std::vector<float>* dlogits);

// Gradients flowing into the model's outputs.
struct BackwardInputs {
  const float* d_logits = nullptr;  // [T, V]
  const float* d_hidden = nullptr;  // [T, D] extra gradient on Activations::hidden (MTP), or null
};

// Adds d loss / d weight into *grads (which it does not zero: sums over sequences accumulate).
// hook: the same as train_forward's; it accumulates its own parameters' gradients.
void model_backward(const model::Weights& w, const Activations& act, const BackwardInputs& in, Gradients* grads,
                    LinearHook* hook = nullptr);

struct LossAndGradients {
  double loss = 0;          // the main model's mean next-token cross-entropy
  double indexer_loss = 0;  // V3.2: L_I (indexer_backward.h), sparse stage; 0 otherwise
  Gradients grads;
};

// check_trainable, train_forward, next_token_loss and model_backward in one call. V3.2: sparse
// attention; the main weights get d loss / d weight, the indexer tensors d L_I / d weight.
Expected<LossAndGradients> loss_and_gradients(const model::Weights& w, std::span<const int32_t> tokens);

}  // namespace dseek::train
