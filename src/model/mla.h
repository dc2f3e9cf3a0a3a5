// Multi-head Latent Attention (DeepSeek-V2 paper §2.1, V3 paper §2.1.1), over the latent cache.
//   c_q  = RMSNorm(W_DQ x)          q = W_UQ c_q = [q_nope | q_rope] per head   (or q = W_Q x)
//   [c_kv' | k_rope'] = W_DKV x     c_kv = RMSNorm(c_kv')   k_rope = RoPE(k_rope')  -> cache
//   naive (MHA) form: k_nope, v = W_UK c_kv, W_UV c_kv for every cached token, then softmax
//                     attention per head with logits scale * (q_nope.k_nope + q_rope.k_rope)
//   absorbed (MQA) form: q_lat = W_UK^T q_nope; logits scale * (q_lat.c_kv + q_rope.k_rope);
//                     o = W_UV (sum_s p_s c_kv[s])
// Both forms are the same function; the absorbed one never expands the cache to per-head keys
// (decode), the naive one is cheaper when many queries share the expansion (long prefill).
// V3.2 restricts each query's keys to the lightning indexer's selection (indexer.h).
//
// Batched over independent sequences: every projection (q, kv_a, o, the indexer's linears)
// runs once over all the batch's rows; only the attention core (and the indexer's scoring)
// runs per sequence, against that sequence's own cache.
//
// Legend: T = new tokens of all sequences, T_i = those of sequence i, at its positions
// [p0_i, p0_i + T_i), S_i = p0_i + T_i keys, D = hidden_size, H = num_attention_heads,
// r = kv_lora_rank, d_n/d_r/d_v = qk_nope/qk_rope/v head dims.
#pragma once

#include <cstdint>
#include <span>

#include "kv/latent_cache.h"
#include "model/config.h"
#include "model/rope.h"
#include "model/weights.h"

namespace dseek::model {

enum class AttentionForm { kAuto, kNaive, kAbsorbed };

// One sequence's slice of a batch: rows [offset, offset + length) of x and out are its new
// tokens, at positions [p0, p0 + length) of `cache` (this layer's view of that sequence's cache).
struct MlaSegment {
  int64_t offset;
  int64_t length;
  int64_t p0;
  kv::LayerView cache;
};

// x: [T, D] (after input_layernorm), the rows of every segment (which tile [0, T) without
// overlap); out: [T, D]. Appends this layer's latent rows for each segment's tokens to its
// cache (whose room was reserved by the caller). kAuto picks the form per segment (by T_i), so
// each sequence gets exactly the result it would get alone.
// The naive form's attention core runs as packed matrix products, a block of queries at a time,
// for segments of at least this many new tokens (default 128), and key by key below (mla.cc
// says why). Tests lower it to check the blocked core on the golden fixtures' short prompts.
void set_blocked_attention_min_tokens(int64_t n);
int64_t blocked_attention_min_tokens();

void mla_forward(const ModelConfig& c, const AttentionWeights& w, const RopeTable& rope, const float* x, int64_t T,
                 std::span<const MlaSegment> segments, int64_t latent_width, AttentionForm form, float* out);

}  // namespace dseek::model
