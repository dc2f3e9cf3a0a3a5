// Guided decoding: a random-weight model decoded through the constraints (greedy and sampled)
// always finishes, and what it writes is checked by validators written here: the tool-call
// text parses (tokenizer::parse_chat_output) into exactly one call of an allowed function whose
// arguments satisfy its schema; JSON output parses and satisfies its schema. The mask walk is
// compared with a token-by-token check, cached masks included (also where clamped cache keys
// meet the caps); caps bound the length; bad requests name the field.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/checkpoint_writer.h"
#include "model/deepseek.h"
#include "sample/sampler.h"
#include "serve/guided.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/chat_parser.h"
#include "tokenizer/tokenizer.h"

namespace dseek::serve {
namespace {

using nlohmann::json;
using tokenizer::ChatFormat;
using tokenizer::OrderedJson;

const tokenizer::Tokenizer& tok() {
  static const tokenizer::Tokenizer t = [] {
    auto r = tokenizer::Tokenizer::load(DSEEK_TOKENIZER_DIR);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().message().c_str());
      std::abort();
    }
    return std::move(r).value();
  }();
  return t;
}

// tests/data/configs/tiny-chat.json with random weights (the model e2e tests chat with).
const model::Model& tiny_model() {
  static const std::unique_ptr<model::Model> m = [] {
    namespace fs = std::filesystem;
    std::ifstream f(std::string(DSEEK_TEST_DATA) + "/configs/tiny-chat.json");
    std::stringstream ss;
    ss << f.rdbuf();
    const fs::path dir = fs::temp_directory_path() / ("dseek-guided-" + std::to_string(::getpid()));
    model::RandomCheckpointOptions o;
    o.seed = 3;
    Status st = model::write_random_checkpoint(ss.str(), dir.string(), o);
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.message().c_str());
      std::abort();
    }
    auto r = model::Model::load(dir.string());
    fs::remove_all(dir);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().message().c_str());
      std::abort();
    }
    return std::move(r).value();
  }();
  return *m;
}

// ---- an independent JSON schema check (the subset the tests' schemas use) ----

size_t utf8_chars(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool has_type(const json& v, const std::string& t) {
  if (t == "object") return v.is_object();
  if (t == "array") return v.is_array();
  if (t == "string") return v.is_string();
  if (t == "integer") return v.is_number_integer();
  if (t == "number") return v.is_number();
  if (t == "boolean") return v.is_boolean();
  if (t == "null") return v.is_null();
  return false;
}

// "" when v satisfies schema s, else why not.
std::string check(const json& v, const json& s, const std::string& at = "$") {
  if (!s.is_object()) return "";
  if (s.contains("const") && v != s["const"]) return at + ": not the const";
  if (s.contains("enum")) {
    bool found = false;
    for (const json& e : s["enum"]) found |= (v == e);
    if (!found) return at + ": not in enum";
  }
  if (s.contains("anyOf")) {
    bool any = false;
    for (const json& alt : s["anyOf"]) any |= check(v, alt, at).empty();
    if (!any) return at + ": matches no anyOf alternative";
  }
  if (s.contains("type")) {
    bool ok = false;
    if (s["type"].is_string()) ok = has_type(v, s["type"]);
    else
      for (const json& t : s["type"]) ok |= has_type(v, t);
    if (!ok) return at + ": wrong type for " + s["type"].dump();
  }
  if (v.is_object()) {
    if (s.contains("required"))
      for (const json& k : s["required"])
        if (!v.contains(k.get<std::string>())) return at + ": missing " + k.get<std::string>();
    const bool closed = s.contains("additionalProperties") && s["additionalProperties"] == false;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (s.contains("properties") && s["properties"].contains(it.key())) {
        std::string e = check(it.value(), s["properties"][it.key()], at + "." + it.key());
        if (!e.empty()) return e;
      } else if (closed) {
        return at + ": unexpected key " + it.key();
      }
    }
  }
  if (v.is_array()) {
    if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>()) return at + ": too few items";
    if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>()) return at + ": too many items";
    if (s.contains("items"))
      for (size_t i = 0; i < v.size(); ++i) {
        std::string e = check(v[i], s["items"], at + "[" + std::to_string(i) + "]");
        if (!e.empty()) return e;
      }
  }
  if (v.is_string()) {
    const size_t n = utf8_chars(v.get<std::string>());
    if (s.contains("maxLength") && n > s["maxLength"].get<size_t>()) return at + ": too long";
    if (s.contains("minLength") && n < s["minLength"].get<size_t>()) return at + ": too short";
  }
  if (v.is_number() && s.contains("minimum") && v.get<double>() < s["minimum"].get<double>())
    return at + ": below minimum";
  return "";
}

const char* kTools = R"([
  {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {
      "city": {"type": "string"},
      "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
      "days": {"type": "integer", "minimum": 0},
      "detailed": {"type": "boolean"}},
     "required": ["city", "days"]}}},
  {"type": "function", "function": {"name": "get_weather_alerts",
    "parameters": {"type": "object", "properties": {
      "region": {"type": "object", "properties": {
          "lat": {"type": "number"}, "lon": {"type": "number"},
          "name": {"type": "string", "maxLength": 10}},
        "required": ["lat", "lon"], "additionalProperties": false},
      "levels": {"type": "array", "items": {"type": "string", "enum": ["minor", "severe"]},
                 "minItems": 1, "maxItems": 3},
      "tags": {"type": "array", "items": {"type": "integer"}},
      "note": {"type": ["string", "null"]},
      "extra": {}},
     "required": ["region", "levels"]}}},
  {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
])";

GuidedLimits small_limits() {
  GuidedLimits l;
  l.max_string_chars = 24;
  l.max_array_items = 4;
  l.max_object_keys = 4;
  l.max_depth = 3;
  l.max_total_bytes = 240;
  return l;
}

struct Decoded {
  std::vector<int32_t> ids;
  bool complete = false;
};

// Decodes from `prompt` through `c`: mask, then argmax (temperature 0) or a seeded sample.
Decoded decode(TokenConstraint& c, const std::vector<int32_t>& prompt, float temperature, uint64_t seed,
               int max_steps) {
  const model::Model& m = tiny_model();
  auto session = m.new_session(static_cast<int64_t>(prompt.size()) + max_steps + 4);
  std::vector<float> logits;
  Status st = m.forward(*session, prompt, {}, &logits);
  EXPECT_TRUE(st.ok()) << st.message();
  sample::SamplingParams p;
  p.temperature = temperature;
  p.seed = seed;
  sample::Sampler sampler(p);
  std::vector<int32_t> history = prompt;
  Decoded d;
  for (int step = 0; step < max_steps && st.ok(); ++step) {
    c.mask(logits);
    size_t finite = 0;
    for (float x : logits) finite += std::isfinite(x);
    EXPECT_GT(finite, 0u) << "empty mask at step " << step;
    EXPECT_FALSE(std::isfinite(logits[tok().eos_id()])) << "EOS allowed inside the block";
    EXPECT_FALSE(std::isfinite(logits[tok().bos_id()]));
    const int32_t id = sampler.sample(logits, history);
    c.accept(id);
    d.ids.push_back(id);
    history.push_back(id);
    if (c.complete()) {
      d.complete = true;
      break;
    }
    const int32_t one[1] = {id};
    st = m.forward(*session, one, {}, &logits);
    EXPECT_TRUE(st.ok()) << st.message();
  }
  return d;
}

std::vector<int32_t> chat_prompt(ChatFormat f, const OrderedJson& tools) {
  tokenizer::ChatRequest req;
  req.messages.push_back(tokenizer::text_message("user", "What is the weather in Paris for the next 3 days?"));
  req.tools = tools;
  auto text = tokenizer::render_chat(f, req);
  EXPECT_TRUE(text.ok()) << text.status().message();
  auto ids = tok().encode(text.value());
  EXPECT_TRUE(ids.ok());
  return ids.value();
}

void report_mask_time(const TokenConstraint& c, const std::string& what) {
  const auto* g = dynamic_cast<const GuidedConstraint*>(&c);
  ASSERT_NE(g, nullptr);
  std::printf("[ guided  ] %s: %lld masks, %.2f ms per mask: %s\n", what.c_str(),
              static_cast<long long>(g->mask_calls()),
              g->mask_calls() ? 1e3 * g->mask_seconds() / static_cast<double>(g->mask_calls()) : 0.0,
              json(g->text().substr(0, 400)).dump(-1, ' ', false, json::error_handler_t::replace).c_str());
}

// The call in `text` (exactly one), checked against the tools it may name.
void expect_one_valid_call(ChatFormat f, const std::string& text, const json& tools,
                           const std::vector<std::string>& allowed) {
  SCOPED_TRACE(text);
  auto parsed = tokenizer::parse_chat_output(f, text, /*in_reasoning=*/f == ChatFormat::kR1);
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  ASSERT_EQ(parsed->tool_calls.size(), 1u);
  const tokenizer::ToolCall& call = parsed->tool_calls[0];
  EXPECT_NE(std::find(allowed.begin(), allowed.end(), call.name), allowed.end()) << call.name;
  const json args = json::parse(call.arguments, nullptr, false);
  ASSERT_FALSE(args.is_discarded()) << call.arguments;
  ASSERT_TRUE(args.is_object());
  for (const json& t : tools)
    if (t["function"]["name"] == call.name) {
      EXPECT_EQ(check(args, t["function"]["parameters"]), "") << call.arguments;
    }
}

class ToolCallFormats : public ::testing::TestWithParam<ChatFormat> {};

TEST_P(ToolCallFormats, RandomModelWritesOneValidCall) {
  const ChatFormat f = GetParam();
  const OrderedJson tools = OrderedJson::parse(kTools);
  const json plain_tools = json::parse(kTools);
  const auto prompt = chat_prompt(f, tools);
  const std::vector<std::pair<float, uint64_t>> runs = {{0.0f, 0}, {1.0f, 1}, {1.0f, 2}, {1.0f, 3}};
  for (auto [temp, seed] : runs) {
    SCOPED_TRACE(::testing::Message() << "temperature " << temp << " seed " << seed);
    auto c = make_tool_call_constraint(f, tok(), tools, "", small_limits());
    ASSERT_TRUE(c.ok()) << c.status().message();
    Decoded d = decode(**c, prompt, temp, seed, 600);
    ASSERT_TRUE(d.complete) << "not complete after " << d.ids.size() << " tokens";
    const std::string text = tok().decode(d.ids).value();
    expect_one_valid_call(f, text, plain_tools, {"get_weather", "get_weather_alerts", "ping"});
    // The markers come as their single added tokens.
    if (f != ChatFormat::kV32) {
      const int32_t begin = tok().token_to_id(tokenizer::kToolCallsBegin);
      if (f != ChatFormat::kR1) {
        EXPECT_EQ(d.ids[0], begin);
      }
      EXPECT_NE(std::find(d.ids.begin(), d.ids.end(), begin), d.ids.end());
      EXPECT_NE(std::find(d.ids.begin(), d.ids.end(), tok().token_to_id(tokenizer::kToolSep)), d.ids.end());
    }
    report_mask_time(**c, std::string(tokenizer::chat_format_name(f)) + " tool call");
  }
}

TEST_P(ToolCallFormats, NamedFunctionIsTheOneCalled) {
  const ChatFormat f = GetParam();
  const OrderedJson tools = OrderedJson::parse(kTools);
  for (const char* name : {"get_weather", "get_weather_alerts"}) {
    auto c = make_tool_call_constraint(f, tok(), tools, name, small_limits());
    ASSERT_TRUE(c.ok()) << c.status().message();
    Decoded d = decode(**c, chat_prompt(f, tools), 1.0f, 7, 600);
    ASSERT_TRUE(d.complete);
    expect_one_valid_call(f, tok().decode(d.ids).value(), json::parse(kTools), {name});
    report_mask_time(**c, std::string(tokenizer::chat_format_name(f)) + " call of " + name);
  }
}

INSTANTIATE_TEST_SUITE_P(Guided, ToolCallFormats,
                         ::testing::Values(ChatFormat::kV3, ChatFormat::kR1, ChatFormat::kV31, ChatFormat::kV32),
                         [](const auto& param_info) {
                           std::string n = tokenizer::chat_format_name(param_info.param);
                           n.erase(std::remove(n.begin(), n.end(), '.'), n.end());
                           return n;
                         });

TEST(GuidedToolCall, FirstTokenIsTheBlockMarker) {
  const OrderedJson tools = OrderedJson::parse(kTools);
  auto c = make_tool_call_constraint(ChatFormat::kV3, tok(), tools, "", {});
  ASSERT_TRUE(c.ok());
  std::vector<float> logits(tok().vocab_size(), 0.0f);
  (*c)->mask(logits);
  std::vector<int32_t> allowed;
  for (size_t i = 0; i < logits.size(); ++i)
    if (std::isfinite(logits[i])) allowed.push_back(static_cast<int32_t>(i));
  EXPECT_EQ(allowed, std::vector<int32_t>{tok().token_to_id(tokenizer::kToolCallsBegin)});
}

// ---- JSON output ----

std::vector<int32_t> json_prompt() {
  return tok().encode("<｜begin▁of▁sentence｜><｜User｜>Reply in JSON.<｜Assistant｜>").value();
}

void expect_valid_json(const std::string& text, const json* schema) {
  SCOPED_TRACE(text);
  const json v = json::parse(text, nullptr, false);
  ASSERT_FALSE(v.is_discarded());
  if (schema == nullptr) {
    EXPECT_TRUE(v.is_object());
  } else {
    EXPECT_EQ(check(v, *schema), "");
  }
}

TEST(GuidedJson, AnyObject) {
  for (uint64_t seed : {0, 11, 12, 13}) {
    auto c = make_json_constraint(tok(), nullptr, small_limits());
    ASSERT_TRUE(c.ok());
    Decoded d = decode(**c, json_prompt(), seed == 0 ? 0.0f : 1.0f, seed, 600);
    ASSERT_TRUE(d.complete);
    expect_valid_json(tok().decode(d.ids).value(), nullptr);
    report_mask_time(**c, "json_object");
  }
}

TEST(GuidedJson, SchemaWithNestedObjectsArraysEnumsIntegersBooleans) {
  const char* schema_text = R"({"type": "object", "properties": {
      "name": {"type": "string", "minLength": 2, "maxLength": 12},
      "age": {"type": "integer", "minimum": 0},
      "score": {"type": "number"},
      "member": {"type": "boolean"},
      "role": {"enum": ["admin", "user", 3, null]},
      "address": {"type": "object", "properties": {
          "street": {"type": "string"}, "zip": {"type": "integer"},
          "geo": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}},
        "required": ["zip", "geo"], "additionalProperties": false},
      "pets": {"type": "array", "items": {"type": "object", "properties": {
          "kind": {"const": "cat"}, "lives": {"type": "integer"}}, "required": ["kind"]}},
      "misc": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "array"}]}},
    "required": ["name", "age", "member", "address"], "additionalProperties": false})";
  const OrderedJson schema = OrderedJson::parse(schema_text);
  const json plain = json::parse(schema_text);
  for (uint64_t seed : {0, 21, 22, 23, 24}) {
    auto c = make_json_constraint(tok(), &schema, small_limits());
    ASSERT_TRUE(c.ok()) << c.status().message();
    Decoded d = decode(**c, json_prompt(), seed == 0 ? 0.0f : 1.0f, seed, 800);
    ASSERT_TRUE(d.complete);
    expect_valid_json(tok().decode(d.ids).value(), &plain);
  }
}

TEST(GuidedJson, TopLevelScalarsEndWithNewline) {
  for (const char* s : {R"({"type": "integer"})", R"({"type": "number"})", R"({"enum": [1, 12, 123]})",
                        R"({"type": "boolean"})", R"({"type": "string", "maxLength": 5})"}) {
    const OrderedJson schema = OrderedJson::parse(s);
    const json plain = json::parse(s);
    for (uint64_t seed : {0, 31, 32}) {
      auto c = make_json_constraint(tok(), &schema, small_limits());
      ASSERT_TRUE(c.ok());
      Decoded d = decode(**c, json_prompt(), seed == 0 ? 0.0f : 1.0f, seed, 200);
      ASSERT_TRUE(d.complete) << s;
      expect_valid_json(tok().decode(d.ids).value(), &plain);
    }
  }
}

// ---- the mask walk against the token-by-token check ----

// mask() applied to logits of distinct finite values: the allowed ids, and whether the kept
// logits are untouched (a cached mask is applied by lists, not a walk).
std::vector<int32_t> masked_allowed(GuidedConstraint& c) {
  std::vector<float> logits(tok().vocab_size());
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(i % 1000) * 0.5f;
  c.mask(logits);
  std::vector<int32_t> allowed;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!std::isfinite(logits[i])) continue;
    EXPECT_EQ(logits[i], static_cast<float>(i % 1000) * 0.5f) << "logit of allowed token " << i << " changed";
    allowed.push_back(static_cast<int32_t>(i));
  }
  return allowed;
}

// Tokens where mask() and the token-by-token would_accept() disagree (0 expected).
size_t mask_mismatches(GuidedConstraint& c, const std::vector<int32_t>& allowed) {
  std::vector<uint8_t> in_mask(tok().vocab_size(), 0);
  for (int32_t id : allowed) in_mask[id] = 1;
  size_t mismatches = 0;
  for (size_t i = 0; i < in_mask.size(); ++i) mismatches += c.would_accept(static_cast<int32_t>(i)) != in_mask[i];
  return mismatches;
}

// Uniformly random among the allowed tokens: the most adversarial "model" (long odd tokens).
// Checks mask() == would_accept() on every token at the first `brute_steps` states.
size_t random_walk(GuidedConstraint& c, uint64_t seed, size_t max_steps, size_t brute_steps) {
  std::mt19937_64 rng(seed);
  size_t steps = 0;
  while (!c.complete() && steps < max_steps) {
    const std::vector<int32_t> allowed = masked_allowed(c);
    EXPECT_FALSE(allowed.empty()) << "empty mask after: " << c.text();
    if (allowed.empty()) return steps;
    if (steps < brute_steps) {
      EXPECT_EQ(mask_mismatches(c, allowed), 0u) << "after: " << c.text();
    }
    c.accept(allowed[rng() % allowed.size()]);
    ++steps;
  }
  return steps;
}

// Accepts `prefix`, then the tokens of `filler` over and over while would_accept() takes the
// next one; where check(n) (n fillers in), mask() is asked and compared token by token with
// would_accept(). Returns how many fillers went in.
size_t fill_until_refused(GuidedConstraint& c, const std::string& prefix, const std::string& filler, size_t max,
                          const std::function<bool(size_t)>& check) {
  const std::vector<int32_t> start = tok().encode(prefix).value();
  for (int32_t id : start) c.accept(id);
  const std::vector<int32_t> ids = tok().encode(filler).value();
  for (size_t n = 0; n < max; ++n)
    for (int32_t id : ids) {
      if (check(n)) {
        const std::vector<int32_t> allowed = masked_allowed(c);
        EXPECT_EQ(mask_mismatches(c, allowed), 0u) << "after " << n << " fillers: " << c.text().substr(0, 80) << "...";
      }
      if (!c.would_accept(id)) return n;
      c.accept(id);
    }
  return max;
}

TEST(GuidedMask, WalkEqualsTokenByTokenCheck) {
  const OrderedJson tools = OrderedJson::parse(kTools);
  for (ChatFormat f : {ChatFormat::kV3, ChatFormat::kV31, ChatFormat::kV32}) {
    auto c = make_tool_call_constraint(f, tok(), tools, "get_weather_alerts", small_limits());
    ASSERT_TRUE(c.ok());
    auto* g = dynamic_cast<GuidedConstraint*>(c->get());
    ASSERT_NE(g, nullptr);
    random_walk(*g, 5, 400, 30);
    EXPECT_TRUE(g->complete());
  }
  auto obj = make_json_constraint(tok(), nullptr, small_limits());
  ASSERT_TRUE(obj.ok());
  auto* g = dynamic_cast<GuidedConstraint*>(obj->get());
  random_walk(*g, 6, 400, 30);
  EXPECT_TRUE(g->complete());
}

// Walks that come back to equal states answer from the mask cache; those masks must still be
// exactly the token-by-token ones (every step is checked, not just the first few).
TEST(GuidedMask, CachedMasksEqualTokenByTokenCheckOnRevisitingWalks) {
  const OrderedJson tools = OrderedJson::parse(kTools);
  int64_t hits = 0, calls = 0;
  for (uint64_t seed : {41, 42}) {
    auto obj = make_json_constraint(tok(), nullptr, small_limits());
    ASSERT_TRUE(obj.ok());
    auto* g = dynamic_cast<GuidedConstraint*>(obj->get());
    random_walk(*g, seed, 200, 200);
    hits += g->mask_cache_hits();
    calls += g->mask_calls();
    auto call = make_tool_call_constraint(ChatFormat::kV32, tok(), tools, "", small_limits());
    ASSERT_TRUE(call.ok());
    auto* h = dynamic_cast<GuidedConstraint*>(call->get());
    random_walk(*h, seed, 200, 200);
    hits += h->mask_cache_hits();
    calls += h->mask_calls();
  }
  std::printf("[ guided  ] revisiting walks: %lld of %lld masks from the cache\n", static_cast<long long>(hits),
              static_cast<long long>(calls));
  EXPECT_GT(hits, 0);
}

// Cache keys clamp counters at the longest token's reach (128 bytes for this vocabulary, e.g.
// 128 spaces): walking a string, an array or the byte budget up to its cap shows that states
// which differ within that reach are never merged. Masks are checked where keys are clamped
// (cache hits), across the clamping boundary, and at the cap; a clamp even one short lets the
// 128-space token through one character too late.
TEST(GuidedMask, CacheKeysKeepStatesApartNearEveryCap) {
  const size_t reach = [] {
    auto c = make_json_constraint(tok(), nullptr, {});
    return dynamic_cast<GuidedConstraint*>(c->get())->max_token_bytes();
  }();
  ASSERT_EQ(reach, 128u);
  const size_t over = reach + 12;  // caps past the reach: clamping merges the first fillers
  // Filler n leaves `left(n)` before the cap.
  auto near = [&](std::function<size_t(size_t)> left, size_t below, size_t above) {
    return [=](size_t n) {
      const size_t l = left(n);
      return n < 3 || l < 3 || (l + below >= reach && l <= reach + above);
    };
  };
  const OrderedJson string_schema = OrderedJson::parse(R"({"type": "string"})");
  {
    GuidedLimits l;
    l.max_string_chars = static_cast<int32_t>(over);
    auto c = make_json_constraint(tok(), &string_schema, l);
    ASSERT_TRUE(c.ok());
    auto* g = dynamic_cast<GuidedConstraint*>(c->get());
    EXPECT_EQ(fill_until_refused(*g, "\"", "a", 1000, near([&](size_t n) { return over - n; }, 3, 3)), over);
    EXPECT_GT(g->mask_cache_hits(), 0);
  }
  {
    GuidedLimits l;
    l.max_total_bytes = static_cast<int32_t>(over);
    auto c = make_json_constraint(tok(), &string_schema, l);
    ASSERT_TRUE(c.ok());
    auto* g = dynamic_cast<GuidedConstraint*>(c->get());
    // The opening '"' is one of the budget's units.
    EXPECT_EQ(fill_until_refused(*g, "\"", "a", 1000, near([&](size_t n) { return over - 1 - n; }, 3, 3)), over - 1);
    EXPECT_GT(g->mask_cache_hits(), 0);
  }
  {
    GuidedLimits l;
    l.max_array_items = static_cast<int32_t>(over);
    const OrderedJson schema = OrderedJson::parse(R"({"type": "array", "items": {"type": "integer"}})");
    auto c = make_json_constraint(tok(), &schema, l);
    ASSERT_TRUE(c.ok());
    auto* g = dynamic_cast<GuidedConstraint*>(c->get());
    EXPECT_EQ(fill_until_refused(*g, "[1", ", 1", 1000, near([&](size_t n) { return over - 1 - n; }, 3, 3)), over - 1);
    EXPECT_GT(g->mask_cache_hits(), 0);
  }
  {
    // V3.2 raw string parameters: a held "</" (maybe the closing tag) counts as content once
    // the tag breaks off, so the reach there is longer by the tag's length.
    const size_t raw_over = 2 * reach;
    GuidedLimits l;
    l.max_string_chars = static_cast<int32_t>(raw_over);
    const OrderedJson tools = OrderedJson::parse(R"([{"type": "function", "function": {"name": "f",
        "parameters": {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}}}])");
    auto c = make_tool_call_constraint(ChatFormat::kV32, tok(), tools, "", l);
    ASSERT_TRUE(c.ok());
    auto* g = dynamic_cast<GuidedConstraint*>(c->get());
    const std::string dsml = tokenizer::kDsml;
    const std::string prefix = "\n\n<" + dsml + "function_calls>\n<" + dsml + "invoke name=\"f\">\n<" + dsml +
                               "parameter name=\"s\" string=\"true\">";
    // Filler n + 1 counts the "</" held after filler n, so the last one ends at the cap + 2.
    EXPECT_EQ(fill_until_refused(*g, prefix, "a</", 1000, near([&](size_t n) { return raw_over - 3 * n; }, 4, 40)),
              (raw_over + 2) / 3);
    EXPECT_GT(g->mask_cache_hits(), 0);
  }
}

// Inside a long free string the state's key stops changing: all but the first masks hit, and
// a second request with the same schema and limits starts warm (the cache is process-wide),
// while one with other limits (another grammar) does not share its masks.
TEST(GuidedMask, CacheHitsInsideALongString) {
  const OrderedJson schema = OrderedJson::parse(R"({"type": "object", "properties": {"text": {"type": "string"}}})");
  GuidedLimits l;
  l.max_string_chars = 777;  // a grammar no other test builds
  const std::string text = "the quick brown fox jumps over the lazy dog and keeps on running far away ";
  auto walk = [&](const GuidedLimits& limits) {
    auto c = make_json_constraint(tok(), &schema, limits);
    EXPECT_TRUE(c.ok());
    auto* g = dynamic_cast<GuidedConstraint*>(c->get());
    const std::vector<int32_t> start = tok().encode("{\"text\": \"").value();
    for (int32_t id : start) g->accept(id);
    const int64_t before = g->mask_cache_hits();
    std::vector<int32_t> ids = tok().encode(text + text + text).value();
    for (int32_t id : ids) {
      const std::vector<int32_t> allowed = masked_allowed(*g);
      EXPECT_TRUE(std::binary_search(allowed.begin(), allowed.end(), id));
      g->accept(id);
    }
    return std::make_pair(g->mask_cache_hits() - before, static_cast<int64_t>(ids.size()));
  };
  auto [hits, steps] = walk(l);
  EXPECT_GE(steps, 40);
  EXPECT_GE(hits, steps - 1);  // the first step inside the string walks the vocabulary
  auto [warm_hits, warm_steps] = walk(l);
  EXPECT_EQ(warm_hits, warm_steps);
  GuidedLimits other = l;
  other.max_string_chars = 778;
  auto [other_hits, other_steps] = walk(other);
  EXPECT_EQ(other_hits, other_steps - 1);
}

TEST(GuidedMask, InsideAStringQuotesEndItAndMarkersAreRefused) {
  const OrderedJson schema = OrderedJson::parse(R"({"type": "string"})");
  auto c = make_json_constraint(tok(), &schema, {});
  ASSERT_TRUE(c.ok());
  auto* g = dynamic_cast<GuidedConstraint*>(c->get());
  g->accept(tok().encode("\"").value().at(0));
  auto id_of = [](const char* text) {
    auto ids = tok().encode(text).value();
    EXPECT_EQ(ids.size(), 1u) << text;
    return ids.at(0);
  };
  EXPECT_TRUE(g->would_accept(id_of("hello")));
  EXPECT_TRUE(g->would_accept(id_of("\"")));
  EXPECT_FALSE(g->would_accept(id_of("\n")));  // raw control characters are not JSON
  EXPECT_FALSE(g->would_accept(tok().token_to_id(tokenizer::kToolCallEnd)));
  EXPECT_FALSE(g->would_accept(tok().eos_id()));
  const std::vector<int32_t> lt = tok().encode("<").value();
  for (int32_t t : lt) g->accept(t);
  // "<｜" would start a marker inside the arguments: no token spelling "｜" may follow "<".
  const int32_t bar = tok().encode("｜").value().at(0);
  EXPECT_FALSE(g->would_accept(bar));
  EXPECT_TRUE(g->would_accept(id_of("a")));
}

// ---- caps: any allowed token sequence ends within a bound ----

TEST(GuidedCaps, RandomTokensCompleteWithinBudget) {
  GuidedLimits l;
  l.max_total_bytes = 150;
  // Each token adds at least one byte, and past the budget only closing text is allowed: the
  // schemas here close within ~100 more tokens whatever came before.
  const size_t bound = 150 + 100;
  const OrderedJson tools = OrderedJson::parse(kTools);
  for (uint64_t seed : {1, 2, 3}) {
    auto obj = make_json_constraint(tok(), nullptr, l);
    ASSERT_TRUE(obj.ok());
    auto* g = dynamic_cast<GuidedConstraint*>(obj->get());
    EXPECT_LE(random_walk(*g, seed, bound, 0), bound);
    EXPECT_TRUE(g->complete()) << g->text();
    expect_valid_json(g->text(), nullptr);

    auto call = make_tool_call_constraint(ChatFormat::kV32, tok(), tools, "", l);
    ASSERT_TRUE(call.ok());
    auto* h = dynamic_cast<GuidedConstraint*>(call->get());
    EXPECT_LE(random_walk(*h, seed, bound, 0), bound);
    ASSERT_TRUE(h->complete()) << h->text();
    expect_one_valid_call(ChatFormat::kV32, h->text(), json::parse(kTools),
                          {"get_weather", "get_weather_alerts", "ping"});
  }
}

TEST(GuidedCaps, StringAndArrayCapsForceTheClose) {
  GuidedLimits l;
  l.max_string_chars = 8;
  l.max_array_items = 3;
  const OrderedJson schema = OrderedJson::parse(R"({"type": "array", "items": {"type": "string"}})");
  auto c = make_json_constraint(tok(), &schema, l);
  ASSERT_TRUE(c.ok());
  auto* g = dynamic_cast<GuidedConstraint*>(c->get());
  random_walk(*g, 9, 1000, 0);
  ASSERT_TRUE(g->complete());
  const json v = json::parse(g->text());
  ASSERT_TRUE(v.is_array());
  EXPECT_LE(v.size(), 3u);
  for (const json& s : v) EXPECT_LE(utf8_chars(s.get<std::string>()), 8u) << s;
}

// ---- bad requests ----

TEST(GuidedErrors, NameTheField) {
  auto err = [](const Expected<std::shared_ptr<TokenConstraint>>& r) {
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.status().message();
  };
  const OrderedJson tools = OrderedJson::parse(kTools);
  EXPECT_NE(err(make_tool_call_constraint(ChatFormat::kV3, tok(), OrderedJson::parse(R"({"a": 1})"), ""))
                .find("tools: expected an array"),
            std::string::npos);
  const std::string unknown = err(make_tool_call_constraint(ChatFormat::kV3, tok(), tools, "nope"));
  EXPECT_NE(unknown.find("tool_choice"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("nope"), std::string::npos) << unknown;
  EXPECT_NE(err(make_tool_call_constraint(ChatFormat::kV3, tok(), OrderedJson::parse(R"([{"type": "function"}])"), ""))
                .find("tools[0].function"),
            std::string::npos);
  EXPECT_NE(err(make_tool_call_constraint(
                    ChatFormat::kV31, tok(),
                    OrderedJson::parse(R"([{"function": {"name": "f", "parameters": {"properties": {"x": {"type": "wat"}}}}}])"),
                    ""))
                .find("tools[0].function.parameters.properties.x.type"),
            std::string::npos);
  EXPECT_NE(err(make_tool_call_constraint(ChatFormat::kV3, tok(),
                                          OrderedJson::parse(R"([{"function": {"name": "bad name"}}])"), ""))
                .find("tools[0].function.name"),
            std::string::npos);
  const OrderedJson not_object = OrderedJson::parse("[1, 2]");
  EXPECT_NE(err(make_json_constraint(tok(), &not_object)).find("json_schema.schema"), std::string::npos);
  const OrderedJson bad_enum = OrderedJson::parse(R"({"properties": {"k": {"enum": []}}})");
  EXPECT_NE(err(make_json_constraint(tok(), &bad_enum)).find("json_schema.schema.properties.k.enum"),
            std::string::npos);
}

}  // namespace
}  // namespace dseek::serve
