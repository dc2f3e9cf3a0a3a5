// The DeepSeek forward pass (V2, V3, V3.2), prefill and incremental decode over a latent KV
// cache. Reads like the papers: embedding -> N x [RMSNorm -> MLA (+ DSA) -> residual ->
// RMSNorm -> dense SwiGLU or MoE -> residual] -> RMSNorm -> lm_head. Float32 throughout
// (reference precision): weights are decoded from their stored dtype as they are used.
//
// Batched: forward_batch feeds several independent sequences at once. Their tokens form one
// [T_total, D] matrix through the embedding, the norms, every linear, the router and the
// experts (a decode step of 16 sequences is matrix-matrix products, and the MoE groups all 16
// sequences' tokens by expert); only the attention core (and the V3.2 indexer's scoring) runs
// per sequence, against that sequence's own cache. Every row is computed exactly as it would
// be alone, so batching never changes a sequence's logits.
//
// Legend: T = tokens fed in this call (T_total over all sequences, T_i of sequence i),
// D = hidden_size, V = vocab_size, B = sequences in a batch.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "kv/latent_cache.h"
#include "model/config.h"
#include "model/mla.h"
#include "model/rope.h"
#include "model/weights.h"

namespace dseek::model {

// One sequence's state: its latent cache and the tokens it holds, so that a new prompt
// sharing a prefix with them (the next turn of a chat) only computes what is new.
//
// On a shared page pool (the server), every page the session fills is published under its
// prefix chain key, and reuse_prefix adopts pages other sessions published for the same
// leading tokens. A private pool has nobody to share with: nothing is published there.
class Session {
 public:
  // A private pool for at most max_tokens positions, rows stored as `type`.
  Session(const ModelConfig& c, int64_t max_tokens, kv::CacheType type = kv::CacheType::kF32)
      : cache_(c, max_tokens, type) {}
  // Pages from a shared pool (kept alive by the session); at most max_tokens positions.
  Session(std::shared_ptr<kv::PagePool> pool, int64_t max_tokens) : cache_(std::move(pool), max_tokens), shared_(true) {}
  int64_t length() const { return cache_.length(); }
  int64_t max_tokens() const { return cache_.max_tokens(); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  // Forgets every position >= n.
  void truncate(int64_t n);
  // Keeps the longest common prefix of the session's tokens and `prompt`, then adopts the
  // pool's published pages that hold the prompt's next tokens, one full page at a time.
  // Returns the new length: how many leading prompt tokens are now cached.
  int64_t reuse_prefix(std::span<const int32_t> prompt);
  kv::LatentCache& cache() { return cache_; }
  const kv::LatentCache& cache() const { return cache_; }
  // For long-context benchmarks: appends `tokens` with cache rows drawn at random (seeded)
  // instead of computed: latent rows ~N(0, 1) as after kv_a_layernorm, and for V3.2 indexer
  // keys ~N(0, 1) quantized to FP8 as after its LayerNorm and Hadamard rotation. What a later
  // decode step reads and costs is the same as after a real prefill; what it computes is not
  // meaningful. Errors as LatentCache::reserve_next (context or pool full).
  Status append_random_rows(std::span<const int32_t> tokens, uint64_t seed);

 private:
  friend class Model;
  // After tokens were committed: records the chain key of every page that became full and, on
  // a shared pool, publishes it.
  void publish_full_pages();

  kv::LatentCache cache_;
  bool shared_ = false;
  std::vector<int32_t> tokens_;
  std::vector<kv::PagePool::PrefixKey> keys_;  // [length / P]: chain key of tokens [0, (i + 1) P)
};

struct ForwardOptions {
  AttentionForm attention = AttentionForm::kAuto;
  bool all_logits = false;  // logits for every fed token, else only the last
};

class Model {
 public:
  static Expected<std::unique_ptr<Model>> load(const std::string& model_dir);
  explicit Model(std::unique_ptr<Weights> weights);

  const ModelConfig& config() const { return weights_->config(); }
  const Weights& weights() const { return *weights_; }
  // After a load that checked every weight element finite (runtime::load_model): Weights::mark_finite.
  void mark_weights_finite() { weights_->mark_finite(); }
  // Element type of the latent KV cache of the sessions and pools made from now on
  // (--cache-type-k; default f32, reference precision).
  void set_cache_type(kv::CacheType type) { cache_type_ = type; }
  kv::CacheType cache_type() const { return cache_type_; }

  // A session whose context holds at most max_tokens (0: max_position_embeddings), with a
  // private page pool.
  std::unique_ptr<Session> new_session(int64_t max_tokens = 0) const;
  // A session on a shared pool, which must have been made for this model's shapes (checked).
  std::unique_ptr<Session> new_session(std::shared_ptr<kv::PagePool> pool, int64_t max_tokens = 0) const;
  // A pool for this model with room for max_tokens positions (0: max_position_embeddings) in
  // pages of page_tokens; its memory grows with use.
  std::shared_ptr<kv::PagePool> new_page_pool(int64_t max_tokens,
                                              int64_t page_tokens = kv::PagePool::kDefaultPageTokens) const;

  // Feeds `tokens` at positions [session.length(), + T) and appends them to the cache.
  // logits: [T, V] with all_logits, else [1, V] for the last token. Errors (bad token id, full
  // context) leave the session unchanged. forward_batch with one sequence.
  Status forward(Session& session, std::span<const int32_t> tokens, const ForwardOptions& options,
                 std::vector<float>* logits) const;

  // Feeds B independent sequences in one pass: sequence i feeds tokens[i] (any length >= 1: a
  // prefill chunk for one, a single decode token for another) at its own positions
  // [sessions[i]->length(), + T_i) and appends them to its own cache. sessions.size() ==
  // tokens.size() >= 1; the sessions must be distinct and made by this model (new_session), or
  // at least for its config (checked: layers, latent and indexer widths). options apply to all.
  // (*logits)[i]: [T_i, V] with all_logits, else [1, V] for sequence i's last token. The result
  // for each sequence is the same as forward() on it alone. Errors (bad token id, full context,
  // mismatched session in any sequence, too few free pages in a pool for all the sequences
  // on it together: "KV cache full") are found before any work and leave ALL sessions
  // unchanged. Pages that became full are published to a shared pool.
  Status forward_batch(std::span<Session* const> sessions, std::span<const std::span<const int32_t>> tokens,
                       const ForwardOptions& options, std::vector<std::vector<float>>* logits) const;

 private:
  std::unique_ptr<Weights> weights_;
  RopeTable rope_;
  kv::CacheType cache_type_ = kv::CacheType::kF32;
};

}  // namespace dseek::model
