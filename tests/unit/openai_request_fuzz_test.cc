// Randomized tests of the OpenAI request parsers (bounded count, fixed seeds): mutated bodies never
// crash or throw, and every refusal is a 400 whose message names a field. Structured mutations
// replace one field's value with values of every other JSON type and check that the error, if
// any, names exactly that field.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "serve/openai_request.h"

namespace dseek::serve {
namespace {

using Json = nlohmann::ordered_json;

const char* kChatBody = R"({
  "model": "m", "stream": true, "stream_options": {"include_usage": true},
  "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
      "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
  ],
  "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
  "tool_choice": "auto", "temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "seed": 7,
  "stop": ["\n\n", "END"], "logprobs": true, "top_logprobs": 3, "n": 2,
  "frequency_penalty": 0.1, "presence_penalty": 0.2
})";

const char* kCompletionBody = R"({
  "model": "m", "prompt": ["Once upon", [1, 2, 3]], "echo": true, "logprobs": 2, "max_tokens": 8,
  "temperature": 1.0, "stop": "END", "stream": false, "n": 1, "seed": 3
})";

// Both parsers on one body: must return (not crash or throw); an error must be a 4xx with a message.
void parse_both(const std::string& body) {
  ChatCompletionRequest chat;
  CompletionRequest completion;
  std::optional<ApiError> e1, e2;
  EXPECT_NO_THROW(e1 = parse_chat_completion_request(body, &chat));
  EXPECT_NO_THROW(e2 = parse_completion_request(body, &completion));
  for (const auto& e : {e1, e2})
    if (e) {
      EXPECT_GE(e->http_status, 400);
      EXPECT_LT(e->http_status, 500);
      EXPECT_FALSE(e->message.empty());
    }
}

TEST(OpenAiRequestFuzz, ValidBodiesParse) {
  ChatCompletionRequest chat;
  const auto e = parse_chat_completion_request(kChatBody, &chat);
  EXPECT_FALSE(e) << e->message;
  CompletionRequest completion;
  const auto e2 = parse_completion_request(kCompletionBody, &completion);
  EXPECT_FALSE(e2) << e2->message;
}

TEST(OpenAiRequestFuzz, ByteMutationsNeverCrash) {
  std::mt19937_64 rng(20261122);
  const std::vector<std::string> seeds = {kChatBody, kCompletionBody};
  const std::string alphabet = "{}[]\":,0123456789.-+eEtrufalsn \\u\x01\xff";
  for (int iter = 0; iter < 4000; ++iter) {
    std::string body = seeds[iter % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < edits && !body.empty(); ++k) {
      const size_t at = rng() % body.size();
      switch (rng() % 4) {
        case 0: body[at] = alphabet[rng() % alphabet.size()]; break;                  // replace
        case 1: body.insert(at, 1, alphabet[rng() % alphabet.size()]); break;       // insert
        case 2: body.erase(at, 1 + rng() % 6); break;                               // delete
        case 3: body.resize(at); break;                                             // truncate
      }
    }
    parse_both(body);
  }
}

// Every value of every field (recursively), replaced by values of other types: either accepted or
// refused with `param` equal to the field's path, never something else.
void collect_paths(const Json& j, const std::string& path, std::vector<std::pair<std::string, Json::json_pointer>>* out,
                   const Json::json_pointer& ptr) {
  if (!path.empty()) out->push_back({path, ptr});
  if (j.is_object())
    for (auto it = j.begin(); it != j.end(); ++it)
      collect_paths(it.value(), path.empty() ? it.key() : path + "." + it.key(), out, ptr / it.key());
  else if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i) collect_paths(j[i], path + "[" + std::to_string(i) + "]", out, ptr / i);
}

TEST(OpenAiRequestFuzz, WrongTypedFieldsAreNamed) {
  const std::vector<Json> replacements = {nullptr, true, -1, 3.5, 1e300, "x", Json::array(), Json::object(),
                                          Json::array({1, "a"}), std::string(100000, 'z')};
  int refused = 0;
  for (const char* text : {kChatBody, kCompletionBody}) {
    const Json base = Json::parse(text);
    std::vector<std::pair<std::string, Json::json_pointer>> paths;
    collect_paths(base, "", &paths, Json::json_pointer());
    for (const auto& [path, ptr] : paths)
      for (const Json& value : replacements) {
        Json body = base;
        body[ptr] = value;
        const std::string s = body.dump();
        std::optional<ApiError> e;
        if (text == kChatBody) {
          ChatCompletionRequest r;
          ASSERT_NO_THROW(e = parse_chat_completion_request(s, &r)) << path;
        } else {
          CompletionRequest r;
          ASSERT_NO_THROW(e = parse_completion_request(s, &r)) << path;
        }
        if (!e) continue;
        ++refused;
        EXPECT_EQ(e->http_status, 400) << path;
        // The refusal names this field or the enclosing one that became invalid (e.g. a tool
        // call whose arguments are no longer a JSON string makes that message invalid).
        EXPECT_FALSE(e->param.empty()) << path << " -> " << e->message;
        // logprobs turned off makes top_logprobs the invalid field: the only cross-field rule.
        const std::string top = path == "logprobs" ? "top_logprobs" : path.substr(0, path.find_first_of(".["));
        if (!(path == "logprobs" && e->param == "logprobs")) {
          EXPECT_EQ(e->param.substr(0, top.size()), top) << path << " -> param " << e->param << ": " << e->message;
        }
        EXPECT_NE(e->message.find(e->param.substr(0, e->param.find_first_of(".["))), std::string::npos)
            << path << ": message does not name the field " << e->param << ": " << e->message;
      }
  }
  EXPECT_GT(refused, 100);  // the mutations really do produce bad requests
}

TEST(OpenAiRequestFuzz, DeepNestingAndHugeNumbersAreRefusedCleanly) {
  std::string deep(20000, '[');
  parse_both(R"({"model":"m","messages":)" + deep);
  parse_both(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1e400})");
  parse_both(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":99999999999999999999999})");
  parse_both(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"seed":-1})");
  parse_both(R"({"model":"m","prompt":[[-5, 1e10]]})");
  parse_both(std::string("{\"model\":\"m\",\"prompt\":\"\xff\xfe\"}"));
}

}  // namespace
}  // namespace dseek::serve
