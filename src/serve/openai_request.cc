// Request validation (see openai_request.h). Inside this file a bad field throws BadField,
// caught once in each parse_* function: validation is a long chain of independent checks, and
// an early exit per check reads more plainly than a return-code ladder.
#include "serve/openai_request.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace dseek::serve {

using tokenizer::OrderedJson;

ApiError invalid_param(const std::string& param, const std::string& what) {
  ApiError e;
  e.message = param.empty() ? what : param + ": " + what;
  e.param = param;
  return e;
}

sample::SamplingParams SamplingOverrides::apply(const sample::SamplingParams& defaults, int choice,
                                                uint64_t fallback_seed) const {
  sample::SamplingParams p = defaults;
  if (temperature) p.temperature = *temperature;
  if (top_p) p.top_p = *top_p;
  if (top_p && *top_p <= 0.0f) {  // nothing but the most likely token survives: greedy
    p.temperature = 0.0f;
    p.top_p = 1.0f;
  }
  if (min_p) p.min_p = *min_p;
  if (repetition_penalty) p.repetition_penalty = *repetition_penalty;
  if (frequency_penalty) p.frequency_penalty = *frequency_penalty;
  if (presence_penalty) p.presence_penalty = *presence_penalty;
  if (top_k) p.top_k = *top_k;
  p.seed = (seed ? *seed : fallback_seed) + static_cast<uint64_t>(choice);
  return p;
}

namespace {

struct BadField {
  ApiError error;
};

[[noreturn]] void bad(const std::string& param, const std::string& what) { throw BadField{invalid_param(param, what)}; }

// The value of `key` when present and not null.
const OrderedJson* field(const OrderedJson& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<bool> get_bool(const OrderedJson& obj, const char* key, const std::string& param) {
  const OrderedJson* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad(param, "must be a boolean");
  return v->get<bool>();
}

std::optional<std::string> get_string(const OrderedJson& obj, const char* key, const std::string& param) {
  const OrderedJson* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) bad(param, "must be a string");
  return v->get<std::string>();
}

// A number in [lo, hi] (open at lo when lo_open).
std::optional<float> get_number(const OrderedJson& obj, const char* key, double lo, double hi, bool lo_open = false) {
  const OrderedJson* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad(key, "must be a number");
  const double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi || (lo_open && d == lo))
    bad(key, fmt::format("must be in {}{}, {}], got {}", lo_open ? "(" : "[", lo, hi, d));
  return static_cast<float>(d);
}

// An integer in [lo, hi]; a float with an integral value (1.0) is accepted.
std::optional<int64_t> get_int(const OrderedJson& obj, const char* key, int64_t lo, int64_t hi) {
  const OrderedJson* v = field(obj, key);
  if (!v) return std::nullopt;
  int64_t x = 0;
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    x = u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                                       : static_cast<int64_t>(u);
  } else if (v->is_number_integer()) {
    x = v->get<int64_t>();
  } else if (v->is_number_float() && std::isfinite(v->get<double>()) && std::trunc(v->get<double>()) == v->get<double>() &&
             std::abs(v->get<double>()) < 9.2e18) {
    x = static_cast<int64_t>(v->get<double>());
  } else {
    bad(key, "must be an integer");
  }
  if (x < lo || x > hi) bad(key, fmt::format("must be in [{}, {}], got {}", lo, hi, x));
  return x;
}

// `stop`: a string or an array of at most 4 strings; empty strings are dropped.
std::vector<std::string> get_stop(const OrderedJson& body) {
  std::vector<std::string> out;
  const OrderedJson* v = field(body, "stop");
  if (!v) return out;
  if (v->is_string()) {
    if (!v->get_ref<const std::string&>().empty()) out.push_back(v->get<std::string>());
    return out;
  }
  if (!v->is_array()) bad("stop", "must be a string or an array of strings");
  if (v->size() > static_cast<size_t>(kMaxStopStrings)) bad("stop", fmt::format("at most {} strings", kMaxStopStrings));
  for (size_t i = 0; i < v->size(); ++i) {
    if (!(*v)[i].is_string()) bad(fmt::format("stop[{}]", i), "must be a string");
    if (!(*v)[i].get_ref<const std::string&>().empty()) out.push_back((*v)[i].get<std::string>());
  }
  return out;
}

SamplingOverrides get_sampling(const OrderedJson& body) {
  SamplingOverrides s;
  s.temperature = get_number(body, "temperature", 0, 2);
  s.top_p = get_number(body, "top_p", 0, 1);
  s.min_p = get_number(body, "min_p", 0, 1);
  s.repetition_penalty = get_number(body, "repetition_penalty", 0, 100, /*lo_open=*/true);
  s.frequency_penalty = get_number(body, "frequency_penalty", -2, 2);
  s.presence_penalty = get_number(body, "presence_penalty", -2, 2);
  if (auto k = get_int(body, "top_k", -1, std::numeric_limits<int32_t>::max()))
    s.top_k = static_cast<int32_t>(std::max<int64_t>(*k, 0));  // llama.cpp's -1 also means off
  if (auto seed = get_int(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()))
    s.seed = static_cast<uint64_t>(*seed);
  return s;
}

void get_stream(const OrderedJson& body, bool* stream, bool* include_usage) {
  *stream = get_bool(body, "stream", "stream").value_or(false);
  if (const OrderedJson* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "must be an object");
    *include_usage = get_bool(*so, "include_usage", "stream_options.include_usage").value_or(false);
  }
}

OrderedJson parse_body(std::string_view body) {
  OrderedJson j = OrderedJson::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) bad("", "the request body is not valid JSON");
  if (!j.is_object()) bad("", "the request body must be a JSON object");
  return j;
}

// chat_request_from_json's messages start with the field ("messages[2].content: ...").
std::string param_of(const std::string& message) {
  const size_t colon = message.find(": ");
  if (colon == std::string::npos || message.find(' ') < colon) return "messages";
  std::string p = message.substr(0, colon);
  if (p.size() > 2 && p.front() == '"' && p.back() == '"') p = p.substr(1, p.size() - 2);
  return p;
}

void check_tools(const OrderedJson& tools) {
  if (!tools.is_array()) bad("tools", "must be an array");
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string where = fmt::format("tools[{}]", i);
    const OrderedJson& t = tools[i];
    if (!t.is_object()) bad(where, "must be an object");
    if (auto type = get_string(t, "type", where + ".type"); type && *type != "function")
      bad(where + ".type", "must be \"function\"");
    const OrderedJson* f = field(t, "function");
    if (!f || !f->is_object()) bad(where + ".function", "must be an object");
    auto name = get_string(*f, "name", where + ".function.name");
    if (!name || name->empty()) bad(where + ".function.name", "must be a non-empty string");
    get_string(*f, "description", where + ".function.description");
    if (const OrderedJson* p = field(*f, "parameters"); p && !p->is_object())
      bad(where + ".function.parameters", "must be a JSON Schema object");
  }
}

bool has_tool(const OrderedJson& tools, const std::string& name) {
  for (const auto& t : tools)
    if (t["function"]["name"] == name) return true;
  return false;
}

void parse_tool_choice(const OrderedJson& body, ChatCompletionRequest* r) {
  const bool has_tools = r->chat.tools.is_array() && !r->chat.tools.empty();
  r->tool_choice = has_tools ? ToolChoice::kAuto : ToolChoice::kNone;
  const OrderedJson* v = field(body, "tool_choice");
  if (!v) return;
  if (v->is_string()) {
    const std::string s = v->get<std::string>();
    if (s == "none") r->tool_choice = ToolChoice::kNone;
    else if (s == "auto") r->tool_choice = has_tools ? ToolChoice::kAuto : ToolChoice::kNone;
    else if (s == "required") r->tool_choice = ToolChoice::kRequired;
    else bad("tool_choice", "must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", ...}");
  } else if (v->is_object()) {
    if (auto type = get_string(*v, "type", "tool_choice.type"); type && *type != "function")
      bad("tool_choice.type", "must be \"function\"");
    const OrderedJson* f = field(*v, "function");
    if (!f || !f->is_object()) bad("tool_choice.function", "must be an object with a \"name\"");
    auto name = get_string(*f, "name", "tool_choice.function.name");
    if (!name) bad("tool_choice.function.name", "must be a string");
    if (!has_tools || !has_tool(r->chat.tools, *name))
      bad("tool_choice.function.name", fmt::format("no tool named '{}' in \"tools\"", *name));
    r->tool_choice = ToolChoice::kFunction;
    r->tool_name = *name;
  } else {
    bad("tool_choice", "must be a string or an object");
  }
  if (r->tool_choice == ToolChoice::kRequired && !has_tools)
    bad("tool_choice", "\"required\" needs a non-empty \"tools\" array");
}

void parse_response_format(const OrderedJson& body, ChatCompletionRequest* r) {
  const OrderedJson* v = field(body, "response_format");
  if (!v) return;
  if (!v->is_object()) bad("response_format", "must be an object");
  auto type = get_string(*v, "type", "response_format.type");
  if (!type) bad("response_format.type", "must be a string");
  if (*type == "text") {
    r->response_format = ResponseFormat::kText;
  } else if (*type == "json_object") {
    r->response_format = ResponseFormat::kJsonObject;
  } else if (*type == "json_schema") {
    const OrderedJson* js = field(*v, "json_schema");
    if (!js || !js->is_object()) bad("response_format.json_schema", "must be an object");
    const OrderedJson* schema = field(*js, "schema");
    if (!schema || !schema->is_object()) bad("response_format.json_schema.schema", "must be a JSON Schema object");
    r->response_format = ResponseFormat::kJsonSchema;
    r->json_schema = *schema;
  } else {
    bad("response_format.type", "must be \"text\", \"json_object\" or \"json_schema\"");
  }
}

void parse_chat(const OrderedJson& body, ChatCompletionRequest* r) {
  r->model = get_string(body, "model", "model").value_or("");
  const OrderedJson* msgs = field(body, "messages");
  if (!msgs) bad("messages", "required");
  if (!msgs->is_array()) bad("messages", "must be an array");
  if (msgs->empty()) bad("messages", "must contain at least one message");
  if (const OrderedJson* tools = field(body, "tools")) check_tools(*tools);

  // Messages and tools: the tokenizer's converter (the same one `dseek chat-format` uses).
  OrderedJson conv = OrderedJson::object();
  conv["messages"] = *msgs;
  if (const OrderedJson* tools = field(body, "tools"); tools && !tools->empty()) conv["tools"] = *tools;
  auto chat = tokenizer::chat_request_from_json(conv);
  if (!chat.ok()) {  // its message already starts with the field
    ApiError e = invalid_param(param_of(chat.status().message()), "");
    e.message = chat.status().message();
    throw BadField{e};
  }
  r->chat = std::move(chat).value();
  for (size_t i = 0; i < r->chat.messages.size(); ++i) {
    const auto& m = r->chat.messages[i];
    const bool may_be_empty = m.role == "assistant" && m.tool_calls && !m.tool_calls->empty();
    if (!m.content && !may_be_empty && !(m.role == "assistant" && m.reasoning_content))
      bad(fmt::format("messages[{}].content", i), "required");
  }

  parse_tool_choice(body, r);
  parse_response_format(body, r);
  if (const OrderedJson* kw = field(body, "chat_template_kwargs")) {
    if (!kw->is_object()) bad("chat_template_kwargs", "must be an object");
    if (auto t = get_bool(*kw, "thinking", "chat_template_kwargs.thinking")) r->thinking = *t;
    if (auto t = get_bool(*kw, "enable_thinking", "chat_template_kwargs.enable_thinking")) r->thinking = *t;
  }
  get_stream(body, &r->stream, &r->include_usage);
  r->n = static_cast<int>(get_int(body, "n", 1, kMaxChoices).value_or(1));
  // max_completion_tokens is the newer name; either may be sent.
  if (auto m = get_int(body, "max_tokens", 1, std::numeric_limits<int64_t>::max())) r->max_tokens = *m;
  if (auto m = get_int(body, "max_completion_tokens", 1, std::numeric_limits<int64_t>::max())) r->max_tokens = *m;
  r->stop = get_stop(body);
  r->logprobs = get_bool(body, "logprobs", "logprobs").value_or(false);
  if (auto t = get_int(body, "top_logprobs", 0, kMaxTopLogprobs)) {
    if (!r->logprobs) bad("top_logprobs", "requires \"logprobs\": true");
    r->top_logprobs = static_cast<int>(*t);
  }
  r->sampling = get_sampling(body);
}

std::vector<int32_t> token_array(const OrderedJson& a, const std::string& where) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_number_integer() || a[i].get<int64_t>() < 0 || a[i].get<int64_t>() > std::numeric_limits<int32_t>::max())
      bad(fmt::format("{}[{}]", where, i), "must be a token id (a non-negative integer)");
    ids.push_back(static_cast<int32_t>(a[i].get<int64_t>()));
  }
  if (ids.empty()) bad(where, "must not be empty");
  return ids;
}

void parse_completion(const OrderedJson& body, CompletionRequest* r) {
  r->model = get_string(body, "model", "model").value_or("");
  const OrderedJson* p = field(body, "prompt");
  if (!p) bad("prompt", "required");
  if (p->is_string()) {
    r->prompts.push_back({.is_ids = false, .text = p->get<std::string>(), .ids = {}});
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    r->prompts.push_back({.is_ids = true, .text = {}, .ids = token_array(*p, "prompt")});
  } else if (p->is_array() && !p->empty()) {
    for (size_t i = 0; i < p->size(); ++i) {
      const OrderedJson& e = (*p)[i];
      const std::string where = fmt::format("prompt[{}]", i);
      if (e.is_string()) r->prompts.push_back({.is_ids = false, .text = e.get<std::string>(), .ids = {}});
      else if (e.is_array()) r->prompts.push_back({.is_ids = true, .text = {}, .ids = token_array(e, where)});
      else bad(where, "must be a string or an array of token ids");
    }
  } else {
    bad("prompt", "must be a string, an array of strings, an array of token ids or an array of those");
  }
  if (r->prompts.size() > 64) bad("prompt", "at most 64 prompts");
  if (const OrderedJson* s = field(body, "suffix"); s && !(s->is_string() && s->get_ref<const std::string&>().empty()))
    bad("suffix", "not supported");
  r->echo = get_bool(body, "echo", "echo").value_or(false);
  r->logprobs = static_cast<int>(get_int(body, "logprobs", 0, kMaxLegacyLogprobs).value_or(-1));
  get_stream(body, &r->stream, &r->include_usage);
  r->n = static_cast<int>(get_int(body, "n", 1, kMaxChoices).value_or(1));
  if (auto best = get_int(body, "best_of", 1, kMaxChoices); best && *best != r->n)
    bad("best_of", "only best_of == n is supported");
  r->max_tokens = get_int(body, "max_tokens", 0, std::numeric_limits<int64_t>::max()).value_or(16);
  r->stop = get_stop(body);
  r->sampling = get_sampling(body);
}

template <typename Request, typename Parse>
std::optional<ApiError> parse_guarded(std::string_view body, Request* out, Parse parse) {
  // A field of a JSON type the checks miss (nlohmann throws on a wrong get<>) still becomes
  // a 400, never an exception out of the server's handler.
  try {
    *out = Request{};
    parse(parse_body(body), out);
    return std::nullopt;
  } catch (const BadField& b) {
    return b.error;
  } catch (const nlohmann::json::exception& e) {
    return invalid_param("", fmt::format("unexpected JSON value: {}", e.what()));
  }
}

}  // namespace

std::optional<ApiError> parse_chat_completion_request(std::string_view body, ChatCompletionRequest* out) {
  return parse_guarded(body, out, parse_chat);
}

std::optional<ApiError> parse_completion_request(std::string_view body, CompletionRequest* out) {
  return parse_guarded(body, out, parse_completion);
}

}  // namespace dseek::serve
