// Guided decoding for the server: token constraints (serve::TokenConstraint, engine.h) that
// force a tool call in the model's native format (tool_choice "required" or a named function)
// or a JSON value (response_format json_object / json_schema), whatever the model's weights.
//
// A token is allowed iff every byte of it is accepted by a byte-level matcher of the target
// text (guided_grammar.h); added tokens such as <｜tool▁sep｜> are allowed only where the text
// has that marker, as their single token, and EOS/BOS never inside. Every unbounded part has a
// cap (GuidedLimits) after which only the shortest completion is allowed, so decoding always
// ends, and the mask is never empty.
//
// The vocabulary walk costs ~10-30 ms where most tokens are allowed (free strings), so masks
// are cached per matcher state: the key (MatchState::signature) clamps counters that no single
// token can take to their bound, so a long free string is one key and all but its first step
// hit. The cache is process-wide and keyed by the grammar's fingerprint too: a request whose
// schema or tools build the same grammar reuses earlier requests' masks.
//
// Text produced:
//   V3 / R1  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```
//            <｜tool▁call▁end｜><｜tool▁calls▁end｜>   (R1: after "</think>\n\n", closing the
//            reasoning its prompt opened; parse it with in_reasoning = true)
//   V3.1     <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜><｜tool▁calls▁end｜>
//   V3.2     \n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="NAME">\n<｜DSML｜parameter name="K"
//            string="true|false">V</｜DSML｜parameter>...\n</｜DSML｜invoke>\n</｜DSML｜function_calls>
// V3.1 and V3.2 in thinking mode: render the prompt without thinking for a forced call (the
// block starts the answer). ARGS is JSON in Python json.dumps layout (", " and ": ").
// Strings never contain "<｜" or "</｜" (every marker starts so), which keeps the block parseable;
// V3.2 raw string parameters are otherwise free text.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "serve/engine.h"
#include "serve/guided_grammar.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/chat_types.h"
#include "tokenizer/tokenizer.h"

namespace dseek::serve {

using GuidedLimits = guided::Limits;

namespace guided {
struct TokenIndex;  // token byte strings of one vocabulary, sorted (guided.cc)
struct CachedMask;  // one state's allowed tokens (guided.cc)
}

// The constraint the factories return; its extra methods are for tests and metrics.
class GuidedConstraint : public TokenConstraint {
 public:
  GuidedConstraint(const tokenizer::Tokenizer& tok, std::shared_ptr<const guided::TokenIndex> index,
                   std::shared_ptr<const guided::Grammar> grammar);

  void mask(std::span<float> logits) override;
  void accept(int32_t id) override;
  bool complete() const override { return state_.done(); }

  // Whether `id` may come next, checked on its own (the slow twin of mask()).
  bool would_accept(int32_t id) const;
  // The bytes accepted so far (added tokens as their text).
  const std::string& text() const { return text_; }
  int64_t mask_calls() const { return mask_calls_; }
  double mask_seconds() const { return mask_seconds_; }  // total time spent in mask()
  // mask() calls answered from the mask cache (the rest walked the vocabulary).
  int64_t mask_cache_hits() const { return mask_cache_hits_; }
  // The longest plain token in bytes: the reach of a mask-cache key (MatchState::signature).
  size_t max_token_bytes() const;

 private:
  bool feed_token(guided::MatchState* s, int32_t id) const;
  // The allowed tokens of state_, found by walking the vocabulary.
  std::shared_ptr<const guided::CachedMask> walk_mask();

  const tokenizer::Tokenizer& tok_;
  std::shared_ptr<const guided::TokenIndex> index_;
  std::shared_ptr<const guided::Grammar> grammar_;
  guided::MatchState state_;
  std::string text_;
  std::vector<guided::MatchState> scratch_;  // one state per byte depth of the mask walk
  std::vector<int32_t> allowed_ids_;  // scratch of walk_mask()
  std::vector<uint8_t> allowed_;
  uint64_t grammar_uid_ = 0;    // names grammar_ in the process-wide mask cache
  std::string key_;             // scratch for the mask-cache key
  std::vector<float> kept_;     // scratch for applying an allowed-list mask
  int64_t mask_calls_ = 0;
  int64_t mask_cache_hits_ = 0;
  double mask_seconds_ = 0;
};

// Forces the model's native tool-call block for one of `tools` (OpenAI tools array items
// {"type":"function","function":{"name","description","parameters"}}; when `only_name` is
// non-empty, that function) with arguments valid for its "parameters" JSON schema. complete()
// once the block is closed; the text parses with tokenizer::ChatOutputParser into one call.
Expected<std::shared_ptr<TokenConstraint>> make_tool_call_constraint(tokenizer::ChatFormat format,
                                                                     const tokenizer::Tokenizer& tok,
                                                                     const tokenizer::OrderedJson& tools,
                                                                     const std::string& only_name,
                                                                     const GuidedLimits& limits = {});

// Forces a JSON value: schema == nullptr -> any JSON object (response_format json_object); else
// a value valid for that schema (json_schema). complete() after the value (a bare number or
// literal at the top is followed by "\n", which ends it).
Expected<std::shared_ptr<TokenConstraint>> make_json_constraint(const tokenizer::Tokenizer& tok,
                                                                const tokenizer::OrderedJson* schema,
                                                                const GuidedLimits& limits = {});

}  // namespace dseek::serve
