#include "train/model_grad.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include "base/check.h"
#include "model/rope.h"
#include "model/tensor_table.h"
#include "train/indexer_backward.h"

namespace dseek::train {

Gradients::Gradients(const model::ModelConfig& c, bool include_mtp) {
  for (const model::TensorSpec& spec : model::build_tensor_table(c)) {
    const bool wanted = spec.group == model::TensorGroup::kMain || include_mtp;
    if (!wanted || spec.kind == model::TensorKind::kBias) continue;
    int64_t n = 1;
    for (int64_t d : spec.shape) n *= d;
    tensors_[spec.name] = GradTensor{spec.shape, std::vector<float>(static_cast<size_t>(n), 0.0f)};
  }
}

Gradients Gradients::frozen() {
  Gradients g;
  g.frozen_ = true;
  return g;
}

float* Gradients::find(const std::string& name) {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.values.data();
}

float* Gradients::at(const std::string& name) {
  float* p = find(name);
  DSEEK_CHECK(p != nullptr || frozen_, "no gradient buffer for tensor '{}'", name);
  return p;
}

void Gradients::zero() {
  for (auto& [name, t] : tensors_) std::fill(t.values.begin(), t.values.end(), 0.0f);
}

namespace {

// The gradient buffers of one layer, bound by the names the tensor table gives them.
AttentionGrads attention_grads(Gradients& g, const std::string& prefix) {
  const std::string a = prefix + "self_attn.";
  AttentionGrads out;
  out.q_a_proj = g.find(a + "q_a_proj.weight");
  out.q_a_layernorm = g.find(a + "q_a_layernorm.weight");
  out.q_b_proj = g.find(a + "q_b_proj.weight");
  out.q_proj = g.find(a + "q_proj.weight");
  out.kv_a_proj_with_mqa = g.at(a + "kv_a_proj_with_mqa.weight");
  out.kv_a_layernorm = g.at(a + "kv_a_layernorm.weight");
  out.kv_b_proj = g.at(a + "kv_b_proj.weight");
  out.o_proj = g.at(a + "o_proj.weight");
  return out;
}

FfnGrads ffn_grads(Gradients& g, const std::string& prefix) {
  return {g.at(prefix + "gate_proj.weight"), g.at(prefix + "up_proj.weight"), g.at(prefix + "down_proj.weight")};
}

MoeGrads moe_grads(const model::ModelConfig& c, Gradients& g, const std::string& prefix) {
  const std::string m = prefix + "mlp.";
  MoeGrads out;
  out.gate = g.at(m + "gate.weight");
  for (int64_t e = 0; e < c.n_routed_experts; ++e) out.experts.push_back(ffn_grads(g, fmt::format("{}experts.{}.", m, e)));
  if (c.n_shared_experts > 0) out.shared = ffn_grads(g, m + "shared_experts.");
  return out;
}

void add_into(const std::vector<float>& x, std::vector<float>* y) {
  for (size_t i = 0; i < x.size(); ++i) (*y)[i] += x[i];
}

}  // namespace

void layer_train_forward(const model::ModelConfig& c, const model::LayerWeights& lw, const RopeAngles& rope,
                         int64_t T, std::vector<float>* hp, LayerActivations* ap, LinearHook* hook,
                         AttentionStage stage) {
  const int64_t D = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  std::vector<float>& h = *hp;
  LayerActivations& a = *ap;
  DSEEK_CHECK(static_cast<int64_t>(h.size()) == T * D, "layer input has {} values, expected {} x {}", h.size(), T, D);
  std::vector<float> branch(h.size());  // [T, D]
  a.x = h;
  a.attn_in.resize(h.size());
  rms_norm_forward(h.data(), lw.input_layernorm.data(), T, D, eps, a.attn_in.data());
  mla_train_forward(c, lw.attn, rope, a.attn_in.data(), T, &a.attn, branch.data(), hook, stage);
  add_into(branch, &h);  // residual
  a.mid = h;
  a.ffn_in.resize(h.size());
  rms_norm_forward(h.data(), lw.post_attention_layernorm.data(), T, D, eps, a.ffn_in.data());
  if (lw.is_moe) moe_train_forward(c, lw.moe, a.ffn_in.data(), T, &a.moe, branch.data(), hook);
  else ffn_train_forward(lw.mlp, a.ffn_in.data(), T, &a.mlp, branch.data(), hook);
  add_into(branch, &h);  // residual
}

void layer_backward(const model::ModelConfig& c, const model::LayerWeights& lw, const RopeAngles& rope,
                    const LayerActivations& a, int64_t T, const std::string& p, Gradients* grads,
                    std::vector<float>* dhp, LinearHook* hook) {
  const int64_t D = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Gradients& g = *grads;
  std::vector<float>& dh = *dhp;
  // dh is d loss / d (the residual stream at that point): each branch adds its input's
  // gradient into it (the residual path carries dh through unchanged).
  std::vector<float> d_in(static_cast<size_t>(T * D), 0.0f);  // [T, D] gradient of a branch's normed input
  if (lw.is_moe) moe_backward(c, lw.moe, a.ffn_in.data(), T, a.moe, dh.data(), d_in.data(), moe_grads(c, g, p), hook);
  else ffn_backward(lw.mlp, a.ffn_in.data(), T, a.mlp, dh.data(), d_in.data(), ffn_grads(g, p + "mlp."), hook);
  rms_norm_backward(a.mid.data(), lw.post_attention_layernorm.data(), d_in.data(), T, D, eps, dh.data(),
                    g.at(p + "post_attention_layernorm.weight"));

  std::fill(d_in.begin(), d_in.end(), 0.0f);
  mla_backward(c, lw.attn, rope, a.attn_in.data(), T, a.attn, dh.data(), d_in.data(), attention_grads(g, p), hook);
  rms_norm_backward(a.x.data(), lw.input_layernorm.data(), d_in.data(), T, D, eps, dh.data(),
                    g.at(p + "input_layernorm.weight"));
}

Status check_trainable(const model::ModelConfig& c, std::span<const int32_t> tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (T < 2) return Status::errorf("{} token(s): need at least 2 (the loss predicts each next token)", T);
  if (T > c.max_position_embeddings)
    return Status::errorf("{} tokens exceed the context of {} (max_position_embeddings)", T,
                          c.max_position_embeddings);
  for (int64_t t = 0; t < T; ++t)
    if (tokens[t] < 0 || tokens[t] >= c.vocab_size)
      return Status::errorf("token id {} at index {} is outside the vocabulary [0, {})", tokens[t], t, c.vocab_size);
  return {};
}

Activations train_forward(const model::Weights& w, std::span<const int32_t> tokens, LinearHook* hook,
                          AttentionStage stage) {
  const model::ModelConfig& c = w.config();
  const int64_t T = static_cast<int64_t>(tokens.size()), D = c.hidden_size, V = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Activations act;
  act.tokens.assign(tokens.begin(), tokens.end());
  act.rope = rope_angles(model::RopeTable(c), T);
  act.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  act.stage = stage;

  std::vector<float> h(static_cast<size_t>(T * D));  // [T, D]
  embedding_forward(w.embed_tokens, act.tokens.data(), T, h.data());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    layer_train_forward(c, w.layers[l], act.rope, T, &h, &act.layers[l], hook, stage);
  act.hidden = std::move(h);
  act.normed.resize(act.hidden.size());
  rms_norm_forward(act.hidden.data(), w.norm.data(), T, D, eps, act.normed.data());
  act.logits.resize(static_cast<size_t>(T * V));
  linear_forward(act.normed.data(), T, w.lm_head, act.logits.data());
  return act;
}

double next_token_loss(const Activations& act, int64_t vocab, std::vector<float>* dlogits) {
  const int64_t T = act.T(), N = T - 1;
  DSEEK_CHECK(N >= 1, "next_token_loss needs at least 2 tokens, got {}", T);
  const int32_t* targets = act.tokens.data() + 1;
  dlogits->assign(static_cast<size_t>(T * vocab), 0.0f);
  cross_entropy_backward(act.logits.data(), targets, N, vocab, 1.0f, dlogits->data());
  return cross_entropy_forward(act.logits.data(), targets, N, vocab);
}

void model_backward(const model::Weights& w, const Activations& act, const BackwardInputs& in, Gradients* grads,
                    LinearHook* hook) {
  const model::ModelConfig& c = w.config();
  const int64_t T = act.T(), D = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Gradients& g = *grads;
  DSEEK_CHECK(in.d_logits != nullptr, "model_backward without d loss / d logits");

  // Head: logits = norm(hidden) lm_head^T (lm_head is the embedding when tied).
  std::vector<float> d_normed(static_cast<size_t>(T * D), 0.0f), dh(static_cast<size_t>(T * D), 0.0f);  // [T, D]
  linear_backward(act.normed.data(), in.d_logits, T, w.lm_head, d_normed.data(),
                  g.at(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
  if (in.d_hidden != nullptr)
    for (int64_t i = 0; i < T * D; ++i) dh[i] += in.d_hidden[i];
  rms_norm_backward(act.hidden.data(), w.norm.data(), d_normed.data(), T, D, eps, dh.data(), g.at("model.norm.weight"));

  // Layers in reverse. dh is d loss / d (the residual stream at that point): each branch adds
  // its input's gradient into it (the residual path carries dh through unchanged).
  for (int64_t l = c.num_hidden_layers - 1; l >= 0; --l)
    layer_backward(c, w.layers[l], act.rope, act.layers[l], T, model::layer_prefix(l), &g, &dh, hook);
  if (float* d_embed = g.at("model.embed_tokens.weight")) embedding_backward(act.tokens.data(), dh.data(), T, D, d_embed);
}

Expected<LossAndGradients> loss_and_gradients(const model::Weights& w, std::span<const int32_t> tokens) {
  const model::ModelConfig& c = w.config();
  DSEEK_RETURN_IF_ERROR(check_trainable(c, tokens));
  const Activations act = train_forward(w, tokens);
  std::vector<float> dlogits;  // [T, V]
  LossAndGradients out{next_token_loss(act, c.vocab_size, &dlogits), 0.0, Gradients(c)};
  model_backward(w, act, {dlogits.data(), nullptr}, &out.grads);
  out.indexer_loss = model_indexer_loss(w, act, 1.0f, &out.grads);  // only the indexer tensors
  return out;
}

}  // namespace dseek::train
