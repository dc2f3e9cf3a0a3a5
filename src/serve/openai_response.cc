// Response JSON (see openai_response.h).
#include "serve/openai_response.h"

#include <random>

namespace dseek::serve {

std::string dump_json(const OrderedJson& j) { return j.dump(-1, ' ', false, OrderedJson::error_handler_t::replace); }

std::string error_json(const ApiError& e) {
  OrderedJson err = OrderedJson::object();
  err["message"] = e.message;
  err["type"] = e.type;
  err["param"] = e.param.empty() ? OrderedJson() : OrderedJson(e.param);
  err["code"] = e.code.empty() ? OrderedJson() : OrderedJson(e.code);
  OrderedJson j = OrderedJson::object();
  j["error"] = std::move(err);
  return dump_json(j);
}

std::string sse_event(const OrderedJson& j) { return "data: " + dump_json(j) + "\n\n"; }

std::string random_id(const std::string& prefix) {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += kChars[rng() % (sizeof(kChars) - 1)];
  return id;
}

OrderedJson model_json(const std::string& id, int64_t created) {
  return OrderedJson{{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "dseek"}};
}

OrderedJson model_list_json(const std::string& id, int64_t created) {
  return OrderedJson{{"object", "list"}, {"data", OrderedJson::array({model_json(id, created)})}};
}

void Usage::add(const FinishEvent& f, bool count_prompt) {
  if (count_prompt) {
    prompt_tokens += f.prompt_tokens;
    cached_tokens += f.cached_tokens;
  }
  completion_tokens += f.completion_tokens;
}

OrderedJson usage_json(const Usage& u) {
  return OrderedJson{{"prompt_tokens", u.prompt_tokens},
                     {"completion_tokens", u.completion_tokens},
                     {"total_tokens", u.prompt_tokens + u.completion_tokens},
                     {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

OrderedJson usage_chunk_json(const ResponseHeader& h, const char* object, const Usage& u) {
  return OrderedJson{{"id", h.id},           {"object", object},   {"created", h.created},
                     {"model", h.model},     {"choices", OrderedJson::array()}, {"usage", usage_json(u)}};
}

std::string finish_reason_of(runtime::FinishReason f, bool has_tool_calls) {
  if (f == runtime::FinishReason::kLength || f == runtime::FinishReason::kContextFull) return "length";
  return has_tool_calls ? "tool_calls" : "stop";
}

namespace {

const std::string& token_text(const tokenizer::Tokenizer& tok, int32_t id) {
  static const std::string kEmpty;
  const std::string* b = tok.token_bytes(id);
  return b ? *b : kEmpty;
}

// Characters (code points) in UTF-8 text: OpenAI's text_offset counts characters, not bytes.
// A token that is part of a character counts its lead byte only.
int64_t utf8_chars(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

OrderedJson bytes_json(const std::string& s) {
  OrderedJson a = OrderedJson::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

OrderedJson logprob_value(float lp) {
  // -inf (a token a constraint excluded) is not JSON; OpenAI reports -9999 for such tokens.
  return std::isfinite(lp) ? OrderedJson(lp) : OrderedJson(-9999.0);
}

OrderedJson tool_call_json(const tokenizer::ToolCall& c, int index) {
  return OrderedJson{{"index", index},
                     {"id", c.id},
                     {"type", "function"},
                     {"function", {{"name", c.name}, {"arguments", c.arguments}}}};
}

}  // namespace

OrderedJson chat_logprob_entry(const tokenizer::Tokenizer& tok, const TokenEvent& e) {
  auto entry = [&](int32_t id, float lp) {
    const std::string& t = token_text(tok, id);
    return OrderedJson{{"token", t}, {"logprob", logprob_value(lp)}, {"bytes", bytes_json(t)}};
  };
  OrderedJson j = entry(e.id, e.logprob);
  OrderedJson top = OrderedJson::array();
  for (const auto& p : e.top) top.push_back(entry(p.id, p.logprob));
  j["top_logprobs"] = std::move(top);
  return j;
}

// --- chat ---

ChatChoiceBuilder::ChatChoiceBuilder(const ResponseHeader* header, int index, tokenizer::ChatFormat format,
                                     bool in_reasoning, const tokenizer::Tokenizer* logprob_tok)
    : header_(header), index_(index), parser_(format, in_reasoning), logprob_tok_(logprob_tok) {}

ChatChoiceBuilder::Delta ChatChoiceBuilder::wrap(tokenizer::ChatOutputParser::Delta d) {
  Delta out;
  out.first_tool_index = static_cast<int>(tool_calls_.size());
  for (auto& c : d.tool_calls) {
    if (c.id.empty()) c.id = random_id("call_");
    tool_calls_.push_back(c);
  }
  out.text = std::move(d);
  return out;
}

ChatChoiceBuilder::Delta ChatChoiceBuilder::take_delta(const TokenEvent& e) {
  Delta d = wrap(parser_.push(e.text));
  if (logprob_tok_) {
    OrderedJson entry = chat_logprob_entry(*logprob_tok_, e);
    logprob_entries_.push_back(entry);
    d.logprobs = OrderedJson{{"content", OrderedJson::array({std::move(entry)})}};
  }
  return d;
}

ChatChoiceBuilder::Delta ChatChoiceBuilder::finish_delta(const FinishEvent& f) {
  finish_ = f;
  finished_ = true;
  tokenizer::ChatOutputParser::Delta d = parser_.push(f.tail_text);
  // An unfinished tool call (cut by max_tokens) is dropped: the finish reason says "length".
  if (auto rest = parser_.finish(); rest.ok()) {
    d.reasoning += rest->reasoning;
    d.content += rest->content;
    for (auto& c : rest->tool_calls) d.tool_calls.push_back(std::move(c));
  }
  return wrap(std::move(d));
}

OrderedJson ChatChoiceBuilder::chunk(const Delta& d, const std::string* finish_reason) const {
  OrderedJson delta = OrderedJson::object();
  if (!d.text.reasoning.empty()) delta["reasoning_content"] = d.text.reasoning;
  if (!d.text.content.empty()) delta["content"] = d.text.content;
  if (!d.text.tool_calls.empty()) {
    OrderedJson calls = OrderedJson::array();
    for (size_t i = 0; i < d.text.tool_calls.size(); ++i)
      calls.push_back(tool_call_json(tool_calls_[d.first_tool_index + i], d.first_tool_index + static_cast<int>(i)));
    delta["tool_calls"] = std::move(calls);
  }
  OrderedJson choice = OrderedJson{{"index", index_}, {"delta", std::move(delta)}};
  choice["logprobs"] = d.logprobs;
  choice["finish_reason"] = finish_reason ? OrderedJson(*finish_reason) : OrderedJson();
  return OrderedJson{{"id", header_->id},
                     {"object", "chat.completion.chunk"},
                     {"created", header_->created},
                     {"model", header_->model},
                     {"choices", OrderedJson::array({std::move(choice)})}};
}

OrderedJson ChatChoiceBuilder::role_chunk() const {
  OrderedJson j = chunk(Delta{}, nullptr);
  j["choices"][0]["delta"] = OrderedJson{{"role", "assistant"}, {"content", ""}};
  return j;
}

OrderedJson ChatChoiceBuilder::token_chunk(const TokenEvent& e) {
  Delta d = take_delta(e);
  if (d.text.empty() && d.logprobs.is_null()) return OrderedJson();
  return chunk(d, nullptr);
}

std::vector<OrderedJson> ChatChoiceBuilder::finish_chunks(const FinishEvent& f) {
  std::vector<OrderedJson> out;
  Delta d = finish_delta(f);
  if (!d.text.empty()) out.push_back(chunk(d, nullptr));
  const std::string reason = finish_reason_of(f.finish, !tool_calls_.empty());
  out.push_back(chunk(Delta{}, &reason));
  return out;
}

OrderedJson ChatChoiceBuilder::choice_json() const {
  const tokenizer::ParsedMessage& m = parser_.message();
  OrderedJson msg = OrderedJson{{"role", "assistant"}};
  // OpenAI: content is null when the answer is only tool calls.
  msg["content"] = m.content.empty() && !tool_calls_.empty() ? OrderedJson() : OrderedJson(m.content);
  if (!m.reasoning_content.empty()) msg["reasoning_content"] = m.reasoning_content;
  if (!tool_calls_.empty()) {
    OrderedJson calls = OrderedJson::array();
    for (size_t i = 0; i < tool_calls_.size(); ++i) {
      OrderedJson c = tool_call_json(tool_calls_[i], static_cast<int>(i));
      c.erase("index");  // only stream deltas carry an index
      calls.push_back(std::move(c));
    }
    msg["tool_calls"] = std::move(calls);
  }
  OrderedJson choice = OrderedJson{{"index", index_}, {"message", std::move(msg)}};
  choice["logprobs"] = logprob_tok_ ? OrderedJson{{"content", logprob_entries_}} : OrderedJson();
  choice["finish_reason"] = finish_reason_of(finish_.finish, !tool_calls_.empty());
  return choice;
}

// --- legacy completions ---

void LegacyLogprobs::add_token_text(int32_t id) {
  const std::string& t = tok_ ? token_text(*tok_, id) : std::string();
  tokens_.push_back(t);
  offsets_.push_back(offset_);
  offset_ += utf8_chars(t);
}

void LegacyLogprobs::add_prompt_token(int32_t id) {
  add_token_text(id);
  logprobs_.push_back(nullptr);
  top_.push_back(nullptr);
}

void LegacyLogprobs::add(const TokenEvent& e) {
  add_token_text(e.id);
  logprobs_.push_back(logprob_value(e.logprob));
  OrderedJson top = OrderedJson::object();
  for (const auto& p : e.top) top[tok_ ? token_text(*tok_, p.id) : std::to_string(p.id)] = logprob_value(p.logprob);
  top_.push_back(std::move(top));
}

OrderedJson LegacyLogprobs::json() const {
  return OrderedJson{{"tokens", tokens_}, {"token_logprobs", logprobs_}, {"top_logprobs", top_}, {"text_offset", offsets_}};
}

void LegacyLogprobs::clear() {
  tokens_ = OrderedJson::array();
  logprobs_ = OrderedJson::array();
  top_ = OrderedJson::array();
  offsets_ = OrderedJson::array();
}

CompletionChoiceBuilder::CompletionChoiceBuilder(const ResponseHeader* header, int index,
                                                 const tokenizer::Tokenizer* tok, int logprobs, bool echo,
                                                 std::string prompt_text, std::vector<int32_t> prompt_ids)
    : header_(header), index_(index), logprobs_(logprobs), echo_pending_(echo) {
  if (echo) echo_text_ = prompt_text;
  if (logprobs >= 0) {
    all_lp_.emplace(tok, echo ? 0 : utf8_chars(prompt_text));
    if (echo)
      for (int32_t id : prompt_ids) all_lp_->add_prompt_token(id);
    chunk_lp_ = all_lp_;  // the first chunk carries the echoed prompt's entries too
  }
}

std::string CompletionChoiceBuilder::take_echo() {
  if (!echo_pending_) return "";
  echo_pending_ = false;
  text_ += echo_text_;
  return echo_text_;
}

std::string CompletionChoiceBuilder::take_text(const TokenEvent& e) {
  std::string piece = take_echo() + e.text;
  text_ += e.text;
  if (all_lp_) {
    all_lp_->add(e);
    chunk_lp_->add(e);
  }
  return piece;
}

OrderedJson CompletionChoiceBuilder::chunk(const std::string& text, const std::string* finish_reason) {
  OrderedJson choice = OrderedJson{{"text", text}, {"index", index_}};
  if (chunk_lp_) {
    choice["logprobs"] = chunk_lp_->json();
    chunk_lp_->clear();
  } else {
    choice["logprobs"] = nullptr;
  }
  choice["finish_reason"] = finish_reason ? OrderedJson(*finish_reason) : OrderedJson();
  return OrderedJson{{"id", header_->id},
                     {"object", "text_completion"},
                     {"created", header_->created},
                     {"model", header_->model},
                     {"choices", OrderedJson::array({std::move(choice)})}};
}

OrderedJson CompletionChoiceBuilder::token_chunk(const TokenEvent& e) {
  const std::string piece = take_text(e);
  if (piece.empty() && !all_lp_) return OrderedJson();
  return chunk(piece, nullptr);
}

void CompletionChoiceBuilder::finish(const FinishEvent& f) {
  finish_ = f;
  take_echo();
  text_ += f.tail_text;
}

OrderedJson CompletionChoiceBuilder::finish_chunk(const FinishEvent& f) {
  finish_ = f;
  const std::string piece = take_echo() + f.tail_text;
  text_ += f.tail_text;
  const std::string reason = finish_reason_of(f.finish, false);
  return chunk(piece, &reason);
}

OrderedJson CompletionChoiceBuilder::choice_json() const {
  OrderedJson choice = OrderedJson{{"text", text_}, {"index", index_}};
  choice["logprobs"] = all_lp_ ? all_lp_->json() : OrderedJson();
  choice["finish_reason"] = finish_reason_of(finish_.finish, false);
  return choice;
}

}  // namespace dseek::serve
