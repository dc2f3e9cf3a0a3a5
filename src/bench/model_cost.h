// What a model costs per token, computed from its config, the tensor table and the
// checkpoint's dtypes: the weight bytes one decoded token must read, and the floating-point
// operations a prefill performs. These are the numerators of `dseek bench`'s efficiencies.
#pragma once

#include <cstdint>

#include "io/checkpoint.h"
#include "model/config.h"

namespace dseek::bench {

// Weight bytes read to decode one token, as stored in the checkpoint (BF16 2 bytes, FP8 1
// byte + its F32 `weight_scale_inv` blocks, q8 1 byte and q4 half a byte + their F16
// `weight_scale` groups, ...). Main model only (MTP layers are not run).
//   non_expert:    every tensor of the table that every token uses, in full: attention (and
//                  the V3.2 indexer), dense FFNs, routers, shared experts, norms, lm_head;
//   routed:        num_experts_per_tok / n_routed_experts of all routed-expert tensors (a
//                  token reads top-k experts per MoE layer, of equal size);
//   embedding_row: one row of the embedding table (the looked-up token), plus the whole
//                  table again when it is tied to the output head;
//   scales:        the FP8 / q8 / q4 scale bytes, included in non_expert and routed (for information).
struct ActiveBytes {
  uint64_t non_expert = 0;
  uint64_t routed = 0;
  uint64_t embedding_row = 0;
  uint64_t scales = 0;
  uint64_t total() const { return non_expert + routed + embedding_row; }
};

ActiveBytes active_weight_bytes_per_token(const model::ModelConfig& c, const io::Checkpoint& ckpt);

// Prefill FLOPs of feeding `prompt` tokens after `context` tokens already in the cache, with
// logits for the last token only (as `dseek bench` runs it). A multiply-add counts 2 FLOPs.
//
//   matmul    = prompt x 2 x M, where M = the linear-layer parameters one token multiplies by:
//               every non-expert linear of the table except lm_head (attention projections
//               incl. kv_b_proj, the V3.2 indexer's wq_b/wk/weights_proj, dense FFNs, routers,
//               shared experts) + num_experts_per_tok/n_routed_experts of the routed experts.
//               Norms, the embedding lookup, softmax, RoPE and activations are not counted.
//   lm_head   = 2 x vocab_size x hidden_size, once (logits of the last token only).
//   attention = sum over the prompt's tokens i = 0..prompt-1, which see k_i = context + i + 1
//               keys (causal), over the layers, of
//                 2 x H x (qk_head_dim + v_head_dim) x a_i   scores q.k and the weighted sum of v
//               with a_i = k_i, or for V3.2 a_i = min(k_i, index_topk) (only the selected keys)
//               plus, for V3.2, the indexer's scores over all k_i keys:
//                 2 x index_n_heads x index_head_dim x k_i + 2 x index_n_heads x k_i
//               This counts MLA in its naive form (per-head keys and values expanded by
//               kv_b_proj, already in M), the least work it can be done in; the absorbed form
//               (attention over the 576-wide latent) does more FLOPs per key.
//   Closed form without the indexer: sum_i k_i = prompt x context + prompt (prompt + 1) / 2.
struct PrefillFlops {
  double matmul_params_per_token = 0;  // M
  double matmul = 0;
  double lm_head = 0;
  double attention = 0;
  double total() const { return matmul + lm_head + attention; }
};

PrefillFlops prefill_flops(const model::ModelConfig& c, int64_t prompt, int64_t context);

}  // namespace dseek::bench
