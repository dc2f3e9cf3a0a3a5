// Depth-1 multi-token prediction for training (DeepSeek-V3 paper §2.2, eqs. 21-25): the MTP
// module (model::MtpWeights, layer num_hidden_layers) reads the main model's representation of
// token i and the embedding of token i+1 and predicts token i+2:
//   g_i = hnorm(h_i)                 h_i: the main model's final hidden state (see MtpHidden)
//   e_i = enorm(Emb(t_{i+1}))        Emb: the MTP copy when the checkpoint has one, else shared
//   u_i = eh_proj([e_i ; g_i])       embedding FIRST: the released eh_proj's layout (the paper's
//                                    text shows the reverse; vLLM/SGLang and the doc agree)
//   v   = Block(u) at positions [0, N) (causal, u_i at the position of h_i, own RoPE/attention)
//   logits_i = Head(shared_head.norm(v_i)), target t_{i+2}, i in [0, N), N = T - 2.
// Loss = mean cross-entropy over the N predictions (the paper's 1/T differs only by N/T; the
// caller applies λ). The embedding at position 0 is NOT zeroed (vLLM does so at inference).
// Only the MoE/dense block inside reuses the main model's layer code (model_grad.h).
//
// Legend: T = tokens of the sequence, N = T - 2 predictions, D = hidden_size, V = vocab_size.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "model/weights.h"
#include "train/model_grad.h"

namespace dseek::train {

// Which of the main model's states feeds hnorm. DeepSeek has not said (issue #839); vLLM and
// SGLang, the engines that run the released MTP weights, feed the output of model.norm, so
// that is the default: training keeps the module usable as those engines' drafter. Either way
// the gradient is returned on Activations::hidden (through model.norm in the default mode).
enum class MtpHidden {
  kAfterFinalNorm,   // Activations::normed (vLLM/SGLang)
  kBeforeFinalNorm,  // Activations::hidden
};

struct MtpOptions {
  MtpHidden hidden = MtpHidden::kAfterFinalNorm;
};

// What mtp_backward reads, saved by mtp_forward.
struct MtpActivations {
  int64_t N = 0;                // predictions (T - 2; 0 for T < 3: no loss, no gradient)
  RopeAngles rope;              // positions [0, N)
  std::vector<int32_t> inputs;  // [N] t_{i+1}
  std::vector<int32_t> targets; // [N] t_{i+2}
  std::vector<float> h;         // [N, D] the main states fed in (rows of normed or hidden)
  std::vector<float> emb;       // [N, D] Emb(t_{i+1})
  std::vector<float> cat;       // [N, 2D] [enorm(emb) ; hnorm(h)], eh_proj's input
  LayerActivations block;       // the decoder block, its input block.x = eh_proj(cat)
  std::vector<float> out;       // [N, D] the block's output v
  std::vector<float> normed;    // [N, D] shared_head.norm(v)
  std::vector<float> logits;    // [N, V]
};

// Errors when the model cannot train an MTP loss: no MTP layer in the config or checkpoint.
Status check_mtp_trainable(const model::Weights& w);

// The MTP forward over one sequence's main-model activations (train_forward's). Needs
// w.mtp non-empty (DSEEK_CHECK).
MtpActivations mtp_forward(const model::Weights& w, const Activations& act, const MtpOptions& options = {});

// Mean cross-entropy of the N predictions (0 when N = 0).
double mtp_loss(const MtpActivations& m, int64_t vocab);

// Adds weight x d loss / d weight into *grads (constructed with include_mtp: the MTP rows, and
// model.embed_tokens / lm_head (or the tied embedding) when the module shares them, plus
// model.norm in kAfterFinalNorm mode) and weight x d loss / d act.hidden into *d_hidden [T, D].
void mtp_backward(const model::Weights& w, const Activations& act, const MtpActivations& m, float weight,
                  Gradients* grads, std::vector<float>* d_hidden, const MtpOptions& options = {});

// The trainer's entry point: mtp_forward, mtp_loss, mtp_backward (default options). Returns
// the unweighted loss. *d_hidden is sized [T, D] and zeroed by the caller; it goes to
// model_backward as BackwardInputs::d_hidden.
double mtp_loss_and_backward(const model::Weights& w, const Activations& act, float weight, Gradients* grads,
                             std::vector<float>* d_hidden);
double mtp_loss_and_backward(const model::Weights& w, const Activations& act, float weight, Gradients* grads,
                             std::vector<float>* d_hidden, const MtpOptions& options);

}  // namespace dseek::train
