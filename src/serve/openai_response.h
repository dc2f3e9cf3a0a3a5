// OpenAI response JSON: errors, model lists, chat completions and their stream chunks, legacy
// text completions, usage and both logprobs formats. The choice builders turn one engine
// request's events into a choice: chunk by chunk for a stream (SSE "data:" events), or whole.
// They hold no sockets, so the exact shapes are unit-tested.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "serve/engine.h"
#include "serve/openai_request.h"
#include "tokenizer/chat_parser.h"
#include "tokenizer/tokenizer.h"

namespace dseek::serve {

using tokenizer::OrderedJson;

// Compact JSON; invalid UTF-8 (a token that is part of a character) becomes U+FFFD instead of
// an exception.
std::string dump_json(const OrderedJson& j);

std::string error_json(const ApiError& e);
// "data: {json}\n\n" and the stream's end.
std::string sse_event(const OrderedJson& j);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

// prefix + 24 random letters and digits: "chatcmpl-", "cmpl-", "call_".
std::string random_id(const std::string& prefix);

OrderedJson model_json(const std::string& id, int64_t created);
OrderedJson model_list_json(const std::string& id, int64_t created);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  void add(const FinishEvent& f, bool count_prompt);
};
OrderedJson usage_json(const Usage& u);

// id, created and model: the same in every chunk of one response.
struct ResponseHeader {
  std::string id;
  int64_t created = 0;
  std::string model;
};

// OpenAI's finish_reason for an engine finish ("stop", "length"; "tool_calls" when the answer
// has tool calls and was not cut by the length limit).
std::string finish_reason_of(runtime::FinishReason f, bool has_tool_calls);

// {"token", "logprob", "bytes", "top_logprobs": [...]}: one entry of a chat choice's
// logprobs.content.
OrderedJson chat_logprob_entry(const tokenizer::Tokenizer& tok, const TokenEvent& e);

// The final usage chunk of a stream with include_usage: "choices": [] and "usage".
OrderedJson usage_chunk_json(const ResponseHeader& h, const char* object, const Usage& u);

// One choice of a chat completion.
class ChatChoiceBuilder {
 public:
  // `in_reasoning`: the prompt ends inside a thinking block. `logprob_tok`: non-null when the
  // request asked for logprobs.
  ChatChoiceBuilder(const ResponseHeader* header, int index, tokenizer::ChatFormat format, bool in_reasoning,
                    const tokenizer::Tokenizer* logprob_tok);

  // Streaming. The first chunk: {"role": "assistant", "content": ""}.
  OrderedJson role_chunk() const;
  // The chunk for one token, or null JSON when it changes nothing visible.
  OrderedJson token_chunk(const TokenEvent& e);
  // Chunks that end the choice: released text, then the one with finish_reason.
  std::vector<OrderedJson> finish_chunks(const FinishEvent& f);

  // Whole response: feed every event, then choice_json().
  void add_token(const TokenEvent& e) { (void)take_delta(e); }
  void finish(const FinishEvent& f) { (void)finish_delta(f); }
  OrderedJson choice_json() const;

  const FinishEvent& finish_event() const { return finish_; }
  const tokenizer::ParsedMessage& message() const { return parser_.message(); }

 private:
  struct Delta {
    tokenizer::ChatOutputParser::Delta text;
    int first_tool_index = 0;
    OrderedJson logprobs;  // {"content": [entry]} or null
  };
  Delta take_delta(const TokenEvent& e);
  Delta finish_delta(const FinishEvent& f);
  Delta wrap(tokenizer::ChatOutputParser::Delta d);
  OrderedJson chunk(const Delta& d, const std::string* finish_reason) const;

  const ResponseHeader* header_;
  int index_;
  tokenizer::ChatOutputParser parser_;
  const tokenizer::Tokenizer* logprob_tok_;
  std::vector<tokenizer::ToolCall> tool_calls_;  // with ids assigned
  OrderedJson logprob_entries_ = OrderedJson::array();
  FinishEvent finish_;
  bool finished_ = false;
};

// OpenAI's legacy completions logprobs: {"tokens", "token_logprobs", "top_logprobs",
// "text_offset"}; offsets count characters (code points) from the start of the prompt, as
// OpenAI's do (so the first generated token's offset is the prompt's length, echoed or not).
class LegacyLogprobs {
 public:
  LegacyLogprobs(const tokenizer::Tokenizer* tok, int64_t start_offset) : tok_(tok), offset_(start_offset) {}
  // An echoed prompt token: no logprob (the engine computes none for the prompt).
  void add_prompt_token(int32_t id);
  void add(const TokenEvent& e);
  OrderedJson json() const;
  bool empty() const { return tokens_.empty(); }
  void clear();  // after a stream chunk took the entries

 private:
  void add_token_text(int32_t id);
  const tokenizer::Tokenizer* tok_;
  int64_t offset_;
  OrderedJson tokens_ = OrderedJson::array(), logprobs_ = OrderedJson::array(), top_ = OrderedJson::array(),
              offsets_ = OrderedJson::array();
};

// One choice of a legacy text completion.
class CompletionChoiceBuilder {
 public:
  // `echo`: the prompt text and ids, put before the generated text; `logprobs` -1 for none.
  CompletionChoiceBuilder(const ResponseHeader* header, int index, const tokenizer::Tokenizer* tok,
                          int logprobs, bool echo, std::string prompt_text, std::vector<int32_t> prompt_ids);

  OrderedJson token_chunk(const TokenEvent& e);  // null JSON when nothing to send
  OrderedJson finish_chunk(const FinishEvent& f);

  void add_token(const TokenEvent& e) { (void)take_text(e); }
  void finish(const FinishEvent& f);
  OrderedJson choice_json() const;
  const FinishEvent& finish_event() const { return finish_; }

 private:
  std::string take_text(const TokenEvent& e);
  std::string take_echo();
  OrderedJson chunk(const std::string& text, const std::string* finish_reason);

  const ResponseHeader* header_;
  int index_;
  int logprobs_;
  std::string echo_text_;
  bool echo_pending_;
  std::string text_;
  std::optional<LegacyLogprobs> all_lp_, chunk_lp_;
  FinishEvent finish_;
};

}  // namespace dseek::serve
