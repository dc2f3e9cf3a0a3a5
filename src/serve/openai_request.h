// OpenAI request bodies (POST /v1/chat/completions, /v1/completions) -> validated internal
// requests. Validation happens here, before anything reaches the engine, so that every bad
// request gets OpenAI's 400 error object with `param` naming the field ("messages[1].content",
// "temperature"). Fields this server does not use (user, store, metadata, ...) are ignored,
// as the OpenAI SDKs send some of them by default.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sample/sampler.h"
#include "tokenizer/chat_types.h"

namespace dseek::serve {

// OpenAI's error object: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" -> null
  std::string code;   // "" -> null
};

// A 400 invalid_request_error for `param`; the message starts with the field's name.
ApiError invalid_param(const std::string& param, const std::string& what);

// Sampling fields a request may set; unset ones keep the server's defaults
// (generation_config.json).
struct SamplingOverrides {
  std::optional<float> temperature, top_p, min_p, repetition_penalty, frequency_penalty, presence_penalty;
  std::optional<int32_t> top_k;
  std::optional<uint64_t> seed;

  // The parameters of choice `choice` (0..n-1): seed + choice when a seed was given, else
  // fallback_seed + choice. top_p 0 (allowed by OpenAI) means greedy.
  sample::SamplingParams apply(const sample::SamplingParams& defaults, int choice, uint64_t fallback_seed) const;
};

enum class ToolChoice { kNone, kAuto, kRequired, kFunction };
enum class ResponseFormat { kText, kJsonObject, kJsonSchema };

struct ChatCompletionRequest {
  std::string model;             // "" when absent
  tokenizer::ChatRequest chat;   // messages and tools (chat.thinking is left false here)
  std::optional<bool> thinking;  // chat_template_kwargs.thinking / enable_thinking, when given
  ToolChoice tool_choice = ToolChoice::kAuto;  // kNone when the request has no tools
  std::string tool_name;                       // kFunction: the function forced
  ResponseFormat response_format = ResponseFormat::kText;
  tokenizer::OrderedJson json_schema;          // kJsonSchema: response_format.json_schema.schema
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int n = 1;
  int64_t max_tokens = -1;     // -1: the rest of the context
  std::vector<std::string> stop;
  bool logprobs = false;
  int top_logprobs = 0;
  SamplingOverrides sampling;
};

// One prompt of a completion request: text, or token ids.
struct CompletionPrompt {
  bool is_ids = false;
  std::string text;
  std::vector<int32_t> ids;
};

struct CompletionRequest {
  std::string model;
  std::vector<CompletionPrompt> prompts;  // at least one
  bool echo = false;
  int logprobs = -1;  // -1: none; 0..5: the chosen token's + that many alternatives
  bool stream = false;
  bool include_usage = false;
  int n = 1;
  int64_t max_tokens = 16;  // OpenAI's default for this endpoint; -1: the rest of the context
  std::vector<std::string> stop;
  SamplingOverrides sampling;
};

inline constexpr int kMaxChoices = 8;
inline constexpr int kMaxStopStrings = 4;
inline constexpr int kMaxTopLogprobs = 20;
inline constexpr int kMaxLegacyLogprobs = 5;

// Parse and validate a body. Return the error, or nullopt with *out filled.
std::optional<ApiError> parse_chat_completion_request(std::string_view body, ChatCompletionRequest* out);
std::optional<ApiError> parse_completion_request(std::string_view body, CompletionRequest* out);

}  // namespace dseek::serve
