// Perplexity of a model over a token sequence (llama.cpp's llama-perplexity idea): the tokens are
// cut into windows of at most `ctx` tokens starting every `stride` tokens; each window is one
// fresh prefill with logits at every position, and each token is scored once, by the first
// window that holds it with at least one token before it. With stride == ctx the windows do not
// overlap and the first token of each window is not scored (it has no context); with a smaller
// stride every token after the first is scored, with at least ctx - stride tokens of context
// (except near the start), which is closer to how a model is used and more costly.
//
// The result is the mean next-token cross-entropy in nats (natural log, as `dseek train`
// reports its losses) and its exponential, the perplexity.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "model/deepseek.h"

namespace dseek::runtime {

struct PerplexityOptions {
  int64_t ctx = 256;     // tokens per window (model context of each prefill)
  int64_t stride = 0;    // window start step; 0: ctx (non-overlapping)
  // Called after each window with (tokens scored so far, tokens to score in all).
  std::function<void(int64_t, int64_t)> progress;
};

struct PerplexityResult {
  int64_t tokens = 0;    // tokens in the input
  int64_t scored = 0;    // tokens whose probability was scored
  int64_t windows = 0;
  double nll = 0;        // mean negative log-likelihood per scored token, nats
  double perplexity = 0; // exp(nll)
  double seconds = 0;    // forward passes and scoring
};

// Errors (one line): ctx < 2 or beyond the model's context, stride outside [1, ctx], fewer than
// two tokens, a token id outside the vocabulary.
Expected<PerplexityResult> perplexity(const model::Model& m, std::span<const int32_t> tokens,
                                      const PerplexityOptions& options);

// The token sequence `dseek train` makes of a .txt file, so that perplexities are comparable
// with its held-out loss: documents are the runs of non-blank lines (split on blank lines,
// inner newlines kept), each encoded without BOS and followed by `eos_id`.
Expected<std::vector<int32_t>> tokenize_documents(std::string_view text, int32_t eos_id,
                                                  const std::function<Expected<std::vector<int32_t>>(std::string_view)>& encode);

}  // namespace dseek::runtime
