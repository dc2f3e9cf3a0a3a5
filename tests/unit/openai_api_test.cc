// The OpenAI API layer without sockets: request validation (every error names its field),
// message and tool conversion, and the exact JSON shapes of responses, stream chunks, errors
// and both logprobs formats.
#include <gtest/gtest.h>

#include <limits>

#include "serve/openai_request.h"
#include "serve/openai_response.h"

namespace dseek::serve {
namespace {

using tokenizer::ChatFormat;

ChatCompletionRequest chat_ok(const std::string& body) {
  ChatCompletionRequest r;
  auto e = parse_chat_completion_request(body, &r);
  EXPECT_FALSE(e.has_value()) << body << " -> " << (e ? e->message : "");
  return r;
}

// The error for `body`; checks it is a 400 whose message starts with its param.
ApiError chat_error(const std::string& body) {
  ChatCompletionRequest r;
  auto e = parse_chat_completion_request(body, &r);
  EXPECT_TRUE(e.has_value()) << body;
  if (!e) return {};
  EXPECT_EQ(e->http_status, 400);
  EXPECT_EQ(e->type, "invalid_request_error");
  if (!e->param.empty()) {
    EXPECT_EQ(e->message.rfind(e->param, 0), 0u) << e->message;
  }
  return *e;
}

ApiError completion_error(const std::string& body) {
  CompletionRequest r;
  auto e = parse_completion_request(body, &r);
  EXPECT_TRUE(e.has_value()) << body;
  return e ? *e : ApiError{};
}

const std::string kHi = R"("messages": [{"role": "user", "content": "Hi"}])";

TEST(OpenAiRequest, ChatDefaultsAndFields) {
  ChatCompletionRequest r = chat_ok("{" + kHi + "}");
  EXPECT_EQ(r.model, "");
  EXPECT_EQ(r.n, 1);
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.tool_choice, ToolChoice::kNone);
  EXPECT_FALSE(r.sampling.temperature.has_value());
  ASSERT_EQ(r.chat.messages.size(), 1u);
  EXPECT_EQ(r.chat.messages[0].content.value(), "Hi");

  r = chat_ok(R"({"model": "m", )" + kHi +
              R"(, "temperature": 0.5, "top_p": 0.9, "seed": -3, "stop": "END", "n": 3,
                 "max_completion_tokens": 7, "frequency_penalty": 1, "presence_penalty": -1, "top_k": 40,
                 "min_p": 0.1, "repetition_penalty": 1.1, "logprobs": true, "top_logprobs": 5,
                 "stream": true, "stream_options": {"include_usage": true},
                 "chat_template_kwargs": {"thinking": true}, "user": "ignored"})");
  EXPECT_EQ(r.model, "m");
  EXPECT_FLOAT_EQ(*r.sampling.temperature, 0.5f);
  EXPECT_EQ(*r.sampling.seed, static_cast<uint64_t>(-3));
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(r.n, 3);
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(*r.sampling.top_k, 40);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 5);
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_TRUE(r.thinking.value());

  sample::SamplingParams defaults;
  defaults.temperature = 0.6f;
  const sample::SamplingParams p = r.sampling.apply(defaults, 2, 99);
  EXPECT_FLOAT_EQ(p.temperature, 0.5f);
  EXPECT_FLOAT_EQ(p.top_p, 0.9f);
  EXPECT_EQ(p.seed, static_cast<uint64_t>(-3) + 2);  // choice i samples with seed + i
  EXPECT_TRUE(sample::validate(p).ok());
  EXPECT_EQ(chat_ok("{" + kHi + "}").sampling.apply(defaults, 1, 99).seed, 100u);
  EXPECT_FLOAT_EQ(chat_ok("{" + kHi + "}").sampling.apply(defaults, 0, 1).temperature, 0.6f);
  // top_p 0 keeps only the best token: greedy.
  EXPECT_TRUE(chat_ok("{" + kHi + R"(, "top_p": 0})").sampling.apply(defaults, 0, 1).greedy());
}

TEST(OpenAiRequest, ChatErrorsNameTheField) {
  EXPECT_EQ(chat_error("{nope").param, "");
  EXPECT_NE(chat_error("{nope").message.find("not valid JSON"), std::string::npos);
  EXPECT_EQ(chat_error("[1, 2]").param, "");
  EXPECT_EQ(chat_error("{}").param, "messages");
  EXPECT_EQ(chat_error(R"({"messages": "hi"})").param, "messages");
  EXPECT_EQ(chat_error(R"({"messages": []})").param, "messages");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 5}]})").param,
            "messages[1].content");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user"}]})").param, "messages[0].content");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "wizard", "content": "x"}]})").param, "messages[0].role");
  EXPECT_EQ(chat_error(R"({"messages": [{"content": "x"}]})").param, "messages[0].role");
  EXPECT_EQ(chat_error(R"({"messages": [3]})").param, "messages[0]");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"function": {}}]}]})")
                .param,
            "messages[0].tool_calls[0].function.name");
  EXPECT_EQ(chat_error(R"({"model": 3, )" + kHi + "}").param, "model");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "temperature": "hot"})").param, "temperature");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "temperature": 2.5})").param, "temperature");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "top_p": 1.5})").param, "top_p");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "n": 9})").param, "n");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "n": 1.5})").param, "n");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "max_tokens": 0})").param, "max_tokens");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "max_completion_tokens": "x"})").param, "max_completion_tokens");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "stream": "yes"})").param, "stream");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "stream_options": {"include_usage": 1}})").param,
            "stream_options.include_usage");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "stop": ["a", "b", "c", "d", "e"]})").param, "stop");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "stop": ["a", 1]})").param, "stop[1]");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "frequency_penalty": 3})").param, "frequency_penalty");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "repetition_penalty": 0})").param, "repetition_penalty");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "seed": "x"})").param, "seed");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "top_logprobs": 3})").param, "top_logprobs");  // needs logprobs
  EXPECT_EQ(chat_error("{" + kHi + R"(, "logprobs": true, "top_logprobs": 21})").param, "top_logprobs");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "response_format": {"type": "xml"}})").param, "response_format.type");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "response_format": {"type": "json_schema"}})").param,
            "response_format.json_schema");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "chat_template_kwargs": {"thinking": "on"}})").param,
            "chat_template_kwargs.thinking");
}

const std::string kTools = R"("tools": [{"type": "function", "function": {"name": "get_weather",
    "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])";

TEST(OpenAiRequest, ToolsAndToolChoice) {
  ChatCompletionRequest r = chat_ok("{" + kHi + ", " + kTools + "}");
  EXPECT_EQ(r.tool_choice, ToolChoice::kAuto);
  ASSERT_TRUE(r.chat.tools.is_array());
  EXPECT_EQ(r.chat.tools[0]["function"]["name"], "get_weather");
  EXPECT_EQ(chat_ok("{" + kHi + ", " + kTools + R"(, "tool_choice": "none"})").tool_choice, ToolChoice::kNone);
  EXPECT_EQ(chat_ok("{" + kHi + ", " + kTools + R"(, "tool_choice": "required"})").tool_choice, ToolChoice::kRequired);
  r = chat_ok("{" + kHi + ", " + kTools +
              R"(, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})");
  EXPECT_EQ(r.tool_choice, ToolChoice::kFunction);
  EXPECT_EQ(r.tool_name, "get_weather");

  EXPECT_EQ(chat_error("{" + kHi + ", " + kTools + R"(, "tool_choice": "always"})").param, "tool_choice");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "tool_choice": "required"})").param, "tool_choice");
  EXPECT_EQ(chat_error("{" + kHi + ", " + kTools + R"(, "tool_choice": {"type": "function", "function": {"name": "x"}}})")
                .param,
            "tool_choice.function.name");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "tools": {}})").param, "tools");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "tools": [{"type": "function"}]})").param, "tools[0].function");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "tools": [{"type": "function", "function": {"name": ""}}]})").param,
            "tools[0].function.name");
  EXPECT_EQ(chat_error("{" + kHi + R"(, "tools": [{"type": "function", "function": {"name": "f", "parameters": 1}}]})")
                .param,
            "tools[0].function.parameters");
}

TEST(OpenAiRequest, MessageConversion) {
  // An assistant turn with tool calls and reasoning, then the tool's answer.
  ChatCompletionRequest r = chat_ok(R"({"messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Paris?"}]},
      {"role": "assistant", "content": null, "reasoning_content": "look it up",
       "tool_calls": [{"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]})");
  const auto& m = r.chat.messages;
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[0].role, "developer");
  EXPECT_EQ(m[1].content.value(), "Weather in Paris?");
  EXPECT_FALSE(m[2].content.has_value());
  EXPECT_EQ(m[2].reasoning_content.value(), "look it up");
  ASSERT_TRUE(m[2].tool_calls.has_value());
  EXPECT_EQ((*m[2].tool_calls)[0].name, "get_weather");
  EXPECT_EQ((*m[2].tool_calls)[0].arguments, "{\"city\": \"Paris\"}");
  EXPECT_EQ(m[3].tool_call_id, "call_1");
  // It renders in every format.
  for (ChatFormat f : {ChatFormat::kV3, ChatFormat::kR1, ChatFormat::kV31, ChatFormat::kV32})
    EXPECT_TRUE(tokenizer::render_chat(f, r.chat).ok()) << tokenizer::chat_format_name(f);
}

TEST(OpenAiRequest, CompletionPrompts) {
  CompletionRequest r;
  ASSERT_FALSE(parse_completion_request(R"({"prompt": "Hello"})", &r));
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].text, "Hello");
  EXPECT_EQ(r.max_tokens, 16);  // OpenAI's default for completions
  EXPECT_EQ(r.logprobs, -1);
  ASSERT_FALSE(parse_completion_request(R"({"prompt": ["a", "b"], "n": 2, "echo": true, "logprobs": 3})", &r));
  EXPECT_EQ(r.prompts.size(), 2u);
  EXPECT_TRUE(r.echo);
  EXPECT_EQ(r.logprobs, 3);
  ASSERT_FALSE(parse_completion_request(R"({"prompt": [1, 2, 3]})", &r));
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_TRUE(r.prompts[0].is_ids);
  EXPECT_EQ(r.prompts[0].ids, (std::vector<int32_t>{1, 2, 3}));
  ASSERT_FALSE(parse_completion_request(R"({"prompt": [[1], [2, 3]], "max_tokens": 0})", &r));
  EXPECT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.max_tokens, 0);

  EXPECT_EQ(completion_error("{}").param, "prompt");
  EXPECT_EQ(completion_error(R"({"prompt": 5})").param, "prompt");
  EXPECT_EQ(completion_error(R"({"prompt": []})").param, "prompt");
  EXPECT_EQ(completion_error(R"({"prompt": [1, -2]})").param, "prompt[1]");
  EXPECT_EQ(completion_error(R"({"prompt": ["a", 3]})").param, "prompt[1]");
  EXPECT_EQ(completion_error(R"({"prompt": [[1], []]})").param, "prompt[1]");
  EXPECT_EQ(completion_error(R"({"prompt": "a", "logprobs": 6})").param, "logprobs");
  EXPECT_EQ(completion_error(R"({"prompt": "a", "echo": 1})").param, "echo");
  EXPECT_EQ(completion_error(R"({"prompt": "a", "best_of": 3})").param, "best_of");
  EXPECT_EQ(completion_error(R"({"prompt": "a", "suffix": "z"})").param, "suffix");
}

TEST(OpenAiResponse, ErrorAndModelShapes) {
  ApiError e = invalid_param("temperature", "must be in [0, 2]");
  const OrderedJson j = OrderedJson::parse(error_json(e));
  EXPECT_EQ(j, OrderedJson::parse(R"({"error": {"message": "temperature: must be in [0, 2]",
      "type": "invalid_request_error", "param": "temperature", "code": null}})"));
  ApiError auth;
  auth.message = "no key";
  auth.code = "invalid_api_key";
  EXPECT_TRUE(OrderedJson::parse(error_json(auth))["error"]["param"].is_null());
  EXPECT_EQ(OrderedJson::parse(error_json(auth))["error"]["code"], "invalid_api_key");

  EXPECT_EQ(model_list_json("tiny", 5), OrderedJson::parse(R"({"object": "list", "data": [
      {"id": "tiny", "object": "model", "created": 5, "owned_by": "dseek"}]})"));
  EXPECT_EQ(random_id("chatcmpl-").size(), 9u + 24u);
  EXPECT_NE(random_id("x"), random_id("x"));
  // Invalid UTF-8 (part of a character) never throws.
  EXPECT_EQ(dump_json(OrderedJson("a\xe4\xbd")), "\"a\xEF\xBF\xBD\"");
  EXPECT_EQ(sse_event(OrderedJson{{"a", 1}}), "data: {\"a\":1}\n\n");
}

TokenEvent token(const std::string& text, int32_t id = 100) {
  TokenEvent e;
  e.id = id;
  e.text = text;
  return e;
}

FinishEvent finish(runtime::FinishReason r, int64_t prompt, int64_t completion, int64_t cached = 0) {
  FinishEvent f;
  f.finish = r;
  f.prompt_tokens = prompt;
  f.completion_tokens = completion;
  f.cached_tokens = cached;
  return f;
}

TEST(OpenAiResponse, ChatChoiceWholeAndStreamed) {
  const ResponseHeader h{"chatcmpl-x", 7, "tiny"};
  // The text between </think> and the answer stays in content, as the chat parser keeps it.
  const std::vector<std::string> pieces = {"<think>\nHmm", "</think>", "Hello", " world"};
  ChatChoiceBuilder whole(&h, 0, ChatFormat::kR1, /*in_reasoning=*/false, nullptr);
  for (const auto& p : pieces) whole.add_token(token(p));
  whole.finish(finish(runtime::FinishReason::kStop, 5, 4));
  EXPECT_EQ(whole.choice_json(), OrderedJson::parse(R"({"index": 0, "message": {"role": "assistant",
      "content": "Hello world", "reasoning_content": "\nHmm"}, "logprobs": null, "finish_reason": "stop"})"));

  ChatChoiceBuilder s(&h, 1, ChatFormat::kR1, false, nullptr);
  EXPECT_EQ(s.role_chunk(), OrderedJson::parse(R"({"id": "chatcmpl-x", "object": "chat.completion.chunk",
      "created": 7, "model": "tiny", "choices": [{"index": 1, "delta": {"role": "assistant", "content": ""},
      "logprobs": null, "finish_reason": null}]})"));
  std::string reasoning, content;
  for (const auto& p : pieces) {
    OrderedJson c = s.token_chunk(token(p));
    if (c.is_null()) continue;
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
    const OrderedJson& d = c["choices"][0]["delta"];
    EXPECT_FALSE(d.contains("role"));
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
    if (d.contains("content")) content += d["content"].get<std::string>();
  }
  auto last = s.finish_chunks(finish(runtime::FinishReason::kLength, 5, 4));
  ASSERT_FALSE(last.empty());
  for (size_t i = 0; i + 1 < last.size(); ++i)
    content += last[i]["choices"][0]["delta"].value("content", std::string());
  EXPECT_EQ(reasoning, "\nHmm");
  EXPECT_EQ(content, "Hello world");
  EXPECT_EQ(last.back()["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last.back()["choices"][0]["delta"], OrderedJson::object());
}

TEST(OpenAiResponse, ToolCallsFromNativeFormat) {
  const ResponseHeader h{"chatcmpl-x", 7, "tiny"};
  const std::string text =
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": "
      "\"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  ChatChoiceBuilder whole(&h, 0, ChatFormat::kV3, false, nullptr);
  whole.add_token(token(text));
  whole.finish(finish(runtime::FinishReason::kStop, 5, 30));
  const OrderedJson c = whole.choice_json();
  EXPECT_EQ(c["finish_reason"], "tool_calls");
  EXPECT_TRUE(c["message"]["content"].is_null());
  ASSERT_EQ(c["message"]["tool_calls"].size(), 1u);
  const OrderedJson& call = c["message"]["tool_calls"][0];
  EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u);
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(OrderedJson::parse(call["function"]["arguments"].get<std::string>()),
            OrderedJson::parse(R"({"city": "Paris"})"));
  EXPECT_FALSE(call.contains("index"));

  // Streamed: the call arrives whole in one delta with its index.
  ChatChoiceBuilder s(&h, 0, ChatFormat::kV3, false, nullptr);
  std::vector<OrderedJson> chunks;
  for (size_t i = 0; i < text.size(); i += 7)
    if (OrderedJson ch = s.token_chunk(token(text.substr(i, 7))); !ch.is_null()) chunks.push_back(ch);
  for (auto& ch : s.finish_chunks(finish(runtime::FinishReason::kStop, 5, 30))) chunks.push_back(ch);
  int calls = 0;
  for (const auto& ch : chunks) {
    const OrderedJson& d = ch["choices"][0]["delta"];
    if (!d.contains("tool_calls")) continue;
    ++calls;
    EXPECT_EQ(d["tool_calls"][0]["index"], 0);
    EXPECT_EQ(d["tool_calls"][0]["function"]["name"], "get_weather");
  }
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(chunks.back()["choices"][0]["finish_reason"], "tool_calls");
  // Cut by the length limit, the reason stays "length".
  EXPECT_EQ(finish_reason_of(runtime::FinishReason::kContextFull, true), "length");
}

TEST(OpenAiResponse, UsageShapes) {
  Usage u;
  u.add(finish(runtime::FinishReason::kStop, 10, 3, 4), true);
  u.add(finish(runtime::FinishReason::kStop, 10, 5, 4), false);  // choice 2 of the same prompt
  EXPECT_EQ(usage_json(u), OrderedJson::parse(R"({"prompt_tokens": 10, "completion_tokens": 8,
      "total_tokens": 18, "prompt_tokens_details": {"cached_tokens": 4}})"));
  const OrderedJson c = usage_chunk_json({"chatcmpl-x", 1, "m"}, "chat.completion.chunk", u);
  EXPECT_TRUE(c["choices"].is_array() && c["choices"].empty());
  EXPECT_EQ(c["usage"]["total_tokens"], 18);
}

class OpenAiLogprobs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto t = tokenizer::Tokenizer::load(DSEEK_TOKENIZER_DIR);
    ASSERT_TRUE(t.ok()) << t.status().message();
    tok_ = new tokenizer::Tokenizer(std::move(t).value());
  }
  static void TearDownTestSuite() { delete tok_; }
  static TokenEvent tok_event(const std::string& piece, float lp, std::vector<std::pair<std::string, float>> top) {
    TokenEvent e;
    e.id = tok_->token_to_id(piece);
    EXPECT_GE(e.id, 0) << piece;
    e.text = *tok_->token_bytes(e.id);
    e.logprob = lp;
    for (auto& [t, l] : top) e.top.push_back({tok_->token_to_id(t), l});
    return e;
  }
  static tokenizer::Tokenizer* tok_;
};
tokenizer::Tokenizer* OpenAiLogprobs::tok_ = nullptr;

TEST_F(OpenAiLogprobs, ChatFormat) {
  const ResponseHeader h{"chatcmpl-x", 7, "tiny"};
  ChatChoiceBuilder b(&h, 0, ChatFormat::kV3, false, tok_);
  const TokenEvent e = tok_event("Hello", -0.5f, {{"Hello", -0.5f}, {"Hi", -1.25f}});
  const OrderedJson chunk = b.token_chunk(e);
  EXPECT_EQ(chunk["choices"][0]["logprobs"], OrderedJson::parse(R"({"content": [{"token": "Hello", "logprob": -0.5,
      "bytes": [72, 101, 108, 108, 111], "top_logprobs": [{"token": "Hello", "logprob": -0.5,
      "bytes": [72, 101, 108, 108, 111]}, {"token": "Hi", "logprob": -1.25, "bytes": [72, 105]}]}]})"));
  b.finish(finish(runtime::FinishReason::kStop, 1, 1));
  EXPECT_EQ(b.choice_json()["logprobs"]["content"].size(), 1u);
  // A token excluded by a constraint has logprob -inf: reported as -9999, still valid JSON.
  TokenEvent inf = e;
  inf.logprob = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(chat_logprob_entry(*tok_, inf)["logprob"], -9999.0);
}

TEST_F(OpenAiLogprobs, LegacyFormatWithEcho) {
  const ResponseHeader h{"cmpl-x", 7, "tiny"};
  const std::vector<int32_t> prompt = {tok_->token_to_id("Hello")};
  CompletionChoiceBuilder b(&h, 2, tok_, 1, /*echo=*/true, "Hello", prompt);
  const TokenEvent e1 = tok_event("Ġworld", -0.25f, {{"Ġthere", -0.5f}});
  const TokenEvent e2 = tok_event("!", -1.0f, {{"!", -1.0f}});
  const OrderedJson c1 = b.token_chunk(e1);
  EXPECT_EQ(c1["object"], "text_completion");
  EXPECT_EQ(c1["choices"][0]["text"], "Hello world");  // the echo comes with the first piece
  EXPECT_EQ(c1["choices"][0]["logprobs"]["tokens"], OrderedJson::parse(R"(["Hello", " world"])"));
  b.token_chunk(e2);
  b.finish(finish(runtime::FinishReason::kLength, 1, 2));
  const OrderedJson c = b.choice_json();
  EXPECT_EQ(c, OrderedJson::parse(R"({"text": "Hello world!", "index": 2, "logprobs": {
      "tokens": ["Hello", " world", "!"], "token_logprobs": [null, -0.25, -1.0],
      "top_logprobs": [null, {" there": -0.5}, {"!": -1.0}], "text_offset": [0, 5, 11]},
      "finish_reason": "length"})"));

  // Without echo the offsets still count the prompt, as OpenAI's do.
  CompletionChoiceBuilder n(&h, 0, tok_, 0, false, "Hello", prompt);
  n.add_token(e1);
  n.finish(finish(runtime::FinishReason::kStop, 1, 1));
  EXPECT_EQ(n.choice_json()["text"], " world");
  EXPECT_EQ(n.choice_json()["logprobs"]["text_offset"], OrderedJson::parse("[5]"));
  EXPECT_EQ(n.choice_json()["finish_reason"], "stop");
  // Offsets count characters, not UTF-8 bytes.
  CompletionChoiceBuilder u(&h, 0, tok_, 0, false, "été", prompt);
  u.add_token(tok_event("Hello", -0.5f, {}));
  u.add_token(e1);
  EXPECT_EQ(u.choice_json()["logprobs"]["text_offset"], OrderedJson::parse("[3, 8]"));
}

TEST(OpenAiResponse, CompletionWithoutLogprobs) {
  const ResponseHeader h{"cmpl-x", 7, "tiny"};
  CompletionChoiceBuilder b(&h, 0, nullptr, -1, false, "Hi", {1});
  EXPECT_TRUE(b.token_chunk(token("")).is_null());  // held-back text: nothing to send yet
  const OrderedJson c = b.token_chunk(token(" there"));
  EXPECT_EQ(c["choices"][0]["text"], " there");
  EXPECT_TRUE(c["choices"][0]["logprobs"].is_null());
  const OrderedJson f = b.finish_chunk(finish(runtime::FinishReason::kStop, 1, 2));
  EXPECT_EQ(f["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(b.choice_json()["text"], " there");
}

}  // namespace
}  // namespace dseek::serve
