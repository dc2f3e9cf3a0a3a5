// The generation loop shared by everything that generates (dseek run, dseek chat, the
// server): bring a session to hold the prompt, reusing the longest prefix it already has
// cached, then sample token after token until EOS, a stop string, the token limit or the
// context limit, streaming text pieces that are complete UTF-8 and never part of a stop string.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "model/deepseek.h"
#include "sample/sampler.h"
#include "tokenizer/tokenizer.h"

namespace dseek::runtime {

enum class FinishReason { kStop, kLength, kContextFull, kCancelled };
const char* finish_reason_name(FinishReason r);  // OpenAI's names: "stop", "length", ...

struct GenerateOptions {
  sample::SamplingParams sampling;
  int64_t max_tokens = 256;        // < 0: until EOS or the context is full
  std::vector<std::string> stop;   // stop strings; the text before one is returned, not it
  std::vector<int32_t> eos_ids;    // tokens that end generation (not emitted)
  int64_t prefill_chunk = 512;     // prompt tokens fed per forward call
};

struct GenerateStats {
  int64_t prompt_tokens = 0;   // tokens of the prompt
  int64_t cached_tokens = 0;   // of those, reused from the session's cache
  double prompt_seconds = 0;
  int64_t generated_tokens = 0;
  double generate_seconds = 0;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated (without the EOS that ended it)
  std::string text;             // their text, cut before a stop string
  FinishReason finish = FinishReason::kStop;
  GenerateStats stats;
};

// Receives each new piece of text; returning false cancels generation.
using PieceCallback = std::function<bool(std::string_view piece)>;

class Generator {
 public:
  // `tokenizer` may be null: then no text is produced (token ids only) and stop strings are unused.
  Generator(const model::Model& model, const tokenizer::Tokenizer* tokenizer);

  Expected<GenerateResult> generate(model::Session& session, const std::vector<int32_t>& prompt,
                                    const GenerateOptions& options, const PieceCallback& on_piece) const;

  // Brings the session to exactly `prompt` (longest cached prefix reused, its own or pages
  // published to its shared pool: Session::reuse_prefix) and returns the
  // logits after its last token. `cached` receives how many tokens were reused.
  Status prefill(model::Session& session, const std::vector<int32_t>& prompt, int64_t chunk,
                 std::vector<float>* last_logits, int64_t* cached) const;

 private:
  const model::Model& model_;
  const tokenizer::Tokenizer* tok_;
  std::vector<int32_t> no_text_ids_;  // ids_without_text, once per Generator, not per answer
};

// Ids in [0, vocab_size) that the tokenizer cannot decode: checkpoints pad the embedding past the
// tokenizer's last id (DeepSeek-V3: 129280 rows, 128815 tokens). A model never trained on them
// may still rate them, so generation rules them out rather than emit a token with no text.
std::vector<int32_t> ids_without_text(const tokenizer::Tokenizer& tok, int64_t vocab_size);
// Sets those ids' logits to -inf. logits: [vocab_size].
void forbid_ids(std::span<float> logits, std::span<const int32_t> ids);

// Text emission with stop strings: holds back any tail that could still become a stop string.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Adds text; returns what can be emitted now. Sets *stopped when a stop string appeared
  // (the returned text then ends just before it).
  std::string push(std::string_view text, bool* stopped);
  // End of generation: the held-back tail.
  std::string finish();

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

}  // namespace dseek::runtime
