#include "train/mtp.h"

#include <algorithm>

#include "base/check.h"
#include "model/rope.h"
#include "model/tensor_table.h"

namespace dseek::train {

namespace {

const model::MtpWeights& mtp_module(const model::Weights& w) {
  DSEEK_CHECK(!w.mtp.empty(), "MTP loss on a model without an MTP layer (check_mtp_trainable first)");
  return w.mtp[0];
}

// The module's own copies when the checkpoint has them, else the main model's tensors.
const ops::LinearWeight& mtp_embedding(const model::Weights& w, const model::MtpWeights& m) {
  return m.embed_tokens.empty() ? w.embed_tokens : m.embed_tokens;
}
const ops::LinearWeight& mtp_head(const model::Weights& w, const model::MtpWeights& m) {
  return m.shared_head_head.empty() ? w.lm_head : m.shared_head_head;
}

}  // namespace

Status check_mtp_trainable(const model::Weights& w) {
  const model::ModelConfig& c = w.config();
  if (c.num_nextn_predict_layers < 1) return Status::error("the MTP loss needs num_nextn_predict_layers >= 1 in config.json");
  if (w.mtp.empty())
    return Status::errorf("the MTP loss needs the MTP layer's tensors ({}*) in the checkpoint",
                          model::layer_prefix(c.num_hidden_layers));
  return {};
}

MtpActivations mtp_forward(const model::Weights& w, const Activations& act, const MtpOptions& options) {
  const model::ModelConfig& c = w.config();
  const model::MtpWeights& mw = mtp_module(w);
  const int64_t T = act.T(), D = c.hidden_size, V = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  MtpActivations m;
  m.N = std::max<int64_t>(T - 2, 0);
  const int64_t N = m.N;
  if (N == 0) return m;
  m.rope = rope_angles(model::RopeTable(c), N);
  m.inputs.assign(act.tokens.begin() + 1, act.tokens.begin() + 1 + N);
  m.targets.assign(act.tokens.begin() + 2, act.tokens.end());

  const std::vector<float>& src = options.hidden == MtpHidden::kAfterFinalNorm ? act.normed : act.hidden;
  m.h.assign(src.begin(), src.begin() + N * D);
  m.emb.resize(static_cast<size_t>(N * D));
  embedding_forward(mtp_embedding(w, mw), m.inputs.data(), N, m.emb.data());

  std::vector<float> e(static_cast<size_t>(N * D)), g(static_cast<size_t>(N * D));  // [N, D]
  rms_norm_forward(m.emb.data(), mw.enorm.data(), N, D, eps, e.data());
  rms_norm_forward(m.h.data(), mw.hnorm.data(), N, D, eps, g.data());
  m.cat.resize(static_cast<size_t>(N * 2 * D));
  for (int64_t i = 0; i < N; ++i) {
    std::copy_n(e.data() + i * D, D, m.cat.data() + i * 2 * D);
    std::copy_n(g.data() + i * D, D, m.cat.data() + i * 2 * D + D);
  }

  std::vector<float> u(static_cast<size_t>(N * D));  // [N, D] the block's residual stream
  linear_forward(m.cat.data(), N, mw.eh_proj, u.data());
  layer_train_forward(c, mw.block, m.rope, N, &u, &m.block);
  m.out = std::move(u);
  m.normed.resize(m.out.size());
  rms_norm_forward(m.out.data(), mw.shared_head_norm.data(), N, D, eps, m.normed.data());
  m.logits.resize(static_cast<size_t>(N * V));
  linear_forward(m.normed.data(), N, mtp_head(w, mw), m.logits.data());
  return m;
}

double mtp_loss(const MtpActivations& m, int64_t vocab) {
  if (m.N == 0) return 0.0;
  return cross_entropy_forward(m.logits.data(), m.targets.data(), m.N, vocab);
}

void mtp_backward(const model::Weights& w, const Activations& act, const MtpActivations& m, float weight,
                  Gradients* grads, std::vector<float>* d_hidden, const MtpOptions& options) {
  const model::ModelConfig& c = w.config();
  const model::MtpWeights& mw = mtp_module(w);
  const int64_t T = act.T(), N = m.N, D = c.hidden_size, V = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Gradients& g = *grads;
  DSEEK_CHECK(static_cast<int64_t>(d_hidden->size()) == T * D, "d_hidden has {} values, expected [{}, {}]",
              d_hidden->size(), T, D);
  if (N == 0) return;
  const std::string p = model::layer_prefix(c.num_hidden_layers);
  DSEEK_CHECK(g.find(p + "eh_proj.weight") != nullptr, "MTP backward into Gradients without the MTP rows "
              "(construct them with include_mtp)");
  const std::string main_head = c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  float* g_head = g.at(mw.shared_head_head.empty() ? main_head : p + "shared_head.head.weight");
  float* g_embed = g.at(mw.embed_tokens.empty() ? std::string("model.embed_tokens.weight") : p + "embed_tokens.weight");

  // Head: logits = Head(shared_head.norm(v)).
  std::vector<float> dlogits(static_cast<size_t>(N * V), 0.0f);  // [N, V]
  cross_entropy_backward(m.logits.data(), m.targets.data(), N, V, weight, dlogits.data());
  std::vector<float> d_normed(static_cast<size_t>(N * D), 0.0f), dv(static_cast<size_t>(N * D), 0.0f);  // [N, D]
  linear_backward(m.normed.data(), dlogits.data(), N, mtp_head(w, mw), d_normed.data(), g_head);
  rms_norm_backward(m.out.data(), mw.shared_head_norm.data(), d_normed.data(), N, D, eps, dv.data(),
                    g.at(p + "shared_head.norm.weight"));

  // The block turns d v into d u in place, then eh_proj splits it over the two halves.
  layer_backward(c, mw.block, m.rope, m.block, N, p, &g, &dv);
  std::vector<float> dcat(static_cast<size_t>(N * 2 * D), 0.0f);  // [N, 2D]
  linear_backward(m.cat.data(), dv.data(), N, mw.eh_proj, dcat.data(), g.at(p + "eh_proj.weight"));
  std::vector<float> de(static_cast<size_t>(N * D)), dg(static_cast<size_t>(N * D));  // [N, D]
  for (int64_t i = 0; i < N; ++i) {
    std::copy_n(dcat.data() + i * 2 * D, D, de.data() + i * D);
    std::copy_n(dcat.data() + i * 2 * D + D, D, dg.data() + i * D);
  }

  std::vector<float> demb(static_cast<size_t>(N * D), 0.0f);  // [N, D]
  rms_norm_backward(m.emb.data(), mw.enorm.data(), de.data(), N, D, eps, demb.data(), g.at(p + "enorm.weight"));
  embedding_backward(m.inputs.data(), demb.data(), N, D, g_embed);

  // Rows [0, N) of the main states; rows N, N+1 feed no prediction.
  if (options.hidden == MtpHidden::kBeforeFinalNorm) {
    rms_norm_backward(m.h.data(), mw.hnorm.data(), dg.data(), N, D, eps, d_hidden->data(), g.at(p + "hnorm.weight"));
    return;
  }
  std::vector<float> dnormed(static_cast<size_t>(N * D), 0.0f);  // [N, D] d loss / d act.normed rows
  rms_norm_backward(m.h.data(), mw.hnorm.data(), dg.data(), N, D, eps, dnormed.data(), g.at(p + "hnorm.weight"));
  rms_norm_backward(act.hidden.data(), w.norm.data(), dnormed.data(), N, D, eps, d_hidden->data(),
                    g.at("model.norm.weight"));
}

double mtp_loss_and_backward(const model::Weights& w, const Activations& act, float weight, Gradients* grads,
                             std::vector<float>* d_hidden, const MtpOptions& options) {
  const MtpActivations m = mtp_forward(w, act, options);
  mtp_backward(w, act, m, weight, grads, d_hidden, options);
  return mtp_loss(m, w.config().vocab_size);
}

double mtp_loss_and_backward(const model::Weights& w, const Activations& act, float weight, Gradients* grads,
                             std::vector<float>* d_hidden) {
  return mtp_loss_and_backward(w, act, weight, grads, d_hidden, MtpOptions{});
}

}  // namespace dseek::train
