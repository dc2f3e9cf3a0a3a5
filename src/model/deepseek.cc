#include "model/deepseek.h"

#include <algorithm>
#include <string>
#include <utility>

#include "base/check.h"
#include "model/moe.h"
#include "ops/linear.h"
#include "ops/ops.h"

namespace dseek::model {

Expected<std::unique_ptr<Model>> Model::load(const std::string& model_dir) {
  DSEEK_ASSIGN_OR_RETURN(auto weights, load_weights(model_dir));
  return std::make_unique<Model>(std::move(weights));
}

Model::Model(std::unique_ptr<Weights> weights) : weights_(std::move(weights)), rope_(weights_->config()) {}

std::unique_ptr<Session> Model::new_session(int64_t max_tokens) const {
  return std::make_unique<Session>(config(), max_tokens > 0 ? max_tokens : config().max_position_embeddings,
                                   cache_type_);
}

std::unique_ptr<Session> Model::new_session(std::shared_ptr<kv::PagePool> pool, int64_t max_tokens) const {
  DSEEK_CHECK(pool != nullptr && pool->fits(config()), "new_session: a page pool made for another model shape");
  return std::make_unique<Session>(std::move(pool), max_tokens > 0 ? max_tokens : config().max_position_embeddings);
}

std::shared_ptr<kv::PagePool> Model::new_page_pool(int64_t max_tokens, int64_t page_tokens) const {
  DSEEK_CHECK(page_tokens >= 1, "new_page_pool: page_tokens {}", page_tokens);
  const int64_t tokens = max_tokens > 0 ? max_tokens : config().max_position_embeddings;
  return std::make_shared<kv::PagePool>(config(), (tokens + page_tokens - 1) / page_tokens, page_tokens, cache_type_);
}

namespace {

// One sequence of a batch: rows [offset, offset + length) of the residual stream, at
// positions [p0, p0 + length) of `cache`.
struct Sequence {
  int64_t offset, length, p0;
  kv::LatentCache* cache;
};

// h: [T_total, D] residual stream of every sequence's new tokens (T = T_total), in place.
void decoder_layer(const ModelConfig& c, const LayerWeights& w, const RopeTable& rope, int64_t layer, float* h,
                   int64_t T, std::span<const Sequence> seqs, AttentionForm form) {
  const int64_t D = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  std::vector<float> normed(static_cast<size_t>(T * D)), branch(static_cast<size_t>(T * D));  // [T_total, D]
  std::vector<MlaSegment> segments;  // each sequence's rows and this layer's cache
  segments.reserve(seqs.size());
  for (const Sequence& s : seqs) segments.push_back({s.offset, s.length, s.p0, kv::LayerView{s.cache, layer}});

  ops::rms_norm(h, w.input_layernorm.data(), T, D, eps, normed.data());
  mla_forward(c, w.attn, rope, normed.data(), T, segments, c.latent_cache_width(), form, branch.data());
  for (int64_t i = 0; i < T * D; ++i) h[i] += branch[i];  // residual

  ops::rms_norm(h, w.post_attention_layernorm.data(), T, D, eps, normed.data());
  if (w.is_moe) moe_forward(c, w.moe, normed.data(), T, branch.data());  // tokens grouped by expert
  else ffn_forward(w.mlp, normed.data(), T, branch.data());
  for (int64_t i = 0; i < T * D; ++i) h[i] += branch[i];  // residual
}

// "sequence i: " in a batch of several, nothing for a single sequence.
std::string where(size_t i, size_t B) { return B > 1 ? "sequence " + std::to_string(i) + ": " : std::string(); }

}  // namespace

Status Model::forward(Session& session, std::span<const int32_t> tokens, const ForwardOptions& options,
                      std::vector<float>* logits) const {
  Session* const sessions[] = {&session};
  const std::span<const int32_t> feeds[] = {tokens};
  std::vector<std::vector<float>> out(1);
  out[0].swap(*logits);  // the caller's buffer, reused: no 400 KB allocation and clearing a token
  const Status status = forward_batch(sessions, feeds, options, &out);
  logits->swap(out[0]);
  return status;
}

Status Model::forward_batch(std::span<Session* const> sessions, std::span<const std::span<const int32_t>> tokens,
                            const ForwardOptions& options, std::vector<std::vector<float>>* logits) const {
  const ModelConfig& c = config();
  const Weights& w = *weights_;
  const size_t B = sessions.size();
  const int64_t D = c.hidden_size, V = c.vocab_size;
  if (B == 0) return Status::error("forward: no sequences to feed");
  if (tokens.size() != B)
    return Status::errorf("forward: {} sessions but {} token lists", B, tokens.size());

  // Validate everything before touching any session, so an error leaves all of them unchanged.
  for (size_t i = 0; i < B; ++i) {
    Session* s = sessions[i];
    if (s == nullptr) return Status::errorf("forward: {}no session", where(i, B));
    if (!s->cache().fits(c))
      return Status::errorf("forward: {}the session was made for a model of another shape", where(i, B));
    for (size_t j = 0; j < i; ++j)
      if (sessions[j] == s) return Status::errorf("forward: sequences {} and {} are the same session", j, i);
    const int64_t T = static_cast<int64_t>(tokens[i].size());
    if (T == 0) return Status::errorf("forward: {}no tokens to feed", where(i, B));
    for (int64_t t = 0; t < T; ++t)
      if (tokens[i][t] < 0 || tokens[i][t] >= V)
        return Status::errorf("{}token id {} at index {} is outside the vocabulary [0, {})", where(i, B), tokens[i][t],
                              t, V);
    if (s->length() + T > s->max_tokens())
      return Status::errorf("{}context full: {} cached + {} new tokens exceed the context size of {} tokens",
                            where(i, B), s->length(), T, s->max_tokens());
  }
  // Pages for every sequence's new rows, counted per pool: sequences may share one.
  std::vector<std::pair<kv::PagePool*, int64_t>> pages_needed;  // pool -> pages all its sequences need
  for (size_t i = 0; i < B; ++i) {
    kv::LatentCache& cache = sessions[i]->cache();
    const int64_t n = cache.pages_needed(static_cast<int64_t>(tokens[i].size()));
    auto it = std::find_if(pages_needed.begin(), pages_needed.end(),
                           [&](const auto& p) { return p.first == &cache.pool(); });
    if (it == pages_needed.end()) pages_needed.emplace_back(&cache.pool(), n);
    else it->second += n;
  }
  for (const auto& [pool, n] : pages_needed)
    if (n > pool->available())
      return Status::errorf("KV cache full: {} pages needed, {} available", n, pool->available());
  // Room for every sequence's new rows (cannot fail now: checked above).
  std::vector<Sequence> seqs(B);
  int64_t T = 0;  // T_total
  for (size_t i = 0; i < B; ++i) {
    kv::LatentCache& cache = sessions[i]->cache();
    DSEEK_RETURN_IF_ERROR(cache.reserve_next(static_cast<int64_t>(tokens[i].size())));
    seqs[i] = {T, static_cast<int64_t>(tokens[i].size()), cache.length(), &cache};
    T += seqs[i].length;
  }

  std::vector<float> h(static_cast<size_t>(T * D));  // [T_total, D] residual stream, sequences stacked
  for (size_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < seqs[i].length; ++t)
      ops::decode_rows(w.embed_tokens, tokens[i][t], 1, h.data() + (seqs[i].offset + t) * D);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    decoder_layer(c, w.layers[l], rope_, l, h.data(), T, seqs, options.attention);
  for (size_t i = 0; i < B; ++i) {
    seqs[i].cache->commit(seqs[i].length);
    sessions[i]->tokens_.insert(sessions[i]->tokens_.end(), tokens[i].begin(), tokens[i].end());
    sessions[i]->publish_full_pages();
  }

  // Final norm and lm_head over the rows that need logits: [R, D] -> [R, V], R = sum of
  // T_i (all_logits) or B (each sequence's last token).
  std::vector<int64_t> rows_of(B);
  int64_t R = 0;
  for (size_t i = 0; i < B; ++i) R += rows_of[i] = options.all_logits ? seqs[i].length : 1;
  std::vector<float> last(static_cast<size_t>(R * D));  // [R, D]
  for (size_t i = 0, r = 0; i < B; r += static_cast<size_t>(rows_of[i]), ++i) {
    const float* src = h.data() + (seqs[i].offset + seqs[i].length - rows_of[i]) * D;
    std::copy_n(src, rows_of[i] * D, last.data() + r * D);
  }
  ops::rms_norm(last.data(), w.norm.data(), R, D, static_cast<float>(c.rms_norm_eps), last.data());
  logits->resize(B);
  if (B == 1) {  // straight into the caller's vector (kept between calls, so resize is free)
    (*logits)[0].resize(static_cast<size_t>(R * V));
    ops::linear(last.data(), R, w.lm_head, (*logits)[0].data());
    return {};
  }
  std::vector<float> all(static_cast<size_t>(R * V));  // [R, V]
  ops::linear(last.data(), R, w.lm_head, all.data());
  for (size_t i = 0, r = 0; i < B; r += static_cast<size_t>(rows_of[i]), ++i)
    (*logits)[i].assign(all.begin() + static_cast<ptrdiff_t>(r * V),
                        all.begin() + static_cast<ptrdiff_t>((r + static_cast<size_t>(rows_of[i])) * V));
  return {};
}

}  // namespace dseek::model
