#include "train/chat_data.h"

#include <fstream>

#include <fmt/format.h>

namespace dseek::train {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

Status append(const tokenizer::Tokenizer& tok, const std::string& text, uint8_t mask, ChatExample* ex) {
  if (text.empty()) return {};
  DSEEK_ASSIGN_OR_RETURN(const std::vector<int32_t> ids, tok.encode(text, /*add_bos=*/false));
  ex->tokens.insert(ex->tokens.end(), ids.begin(), ids.end());
  ex->loss_mask.insert(ex->loss_mask.end(), ids.size(), mask);
  return {};
}

}  // namespace

Expected<ChatExample> tokenize_chat(const tokenizer::Tokenizer& tok, tokenizer::ChatFormat format,
                                    const tokenizer::ChatRequest& req) {
  ChatExample ex;
  std::string done;  // the text tokenized so far
  bool any_assistant = false;
  for (size_t i = 0; i < req.messages.size(); ++i) {
    if (req.messages[i].role != "assistant") continue;
    any_assistant = true;
    tokenizer::ChatRequest part = req;
    part.messages.resize(i);
    part.add_generation_prompt = true;
    DSEEK_ASSIGN_OR_RETURN(const std::string prompt, tokenizer::render_chat(format, part));
    part.messages.push_back(req.messages[i]);
    part.add_generation_prompt = false;
    DSEEK_ASSIGN_OR_RETURN(const std::string turn, tokenizer::render_chat(format, part));
    if (!starts_with(prompt, done) || !starts_with(turn, prompt))
      return Status::errorf("messages[{}]: the {} chat format does not render this history as a prefix of the next "
                            "turn, so the assistant tokens cannot be masked",
                            i, tokenizer::chat_format_name(format));
    DSEEK_RETURN_IF_ERROR(append(tok, prompt.substr(done.size()), 0, &ex));
    DSEEK_RETURN_IF_ERROR(append(tok, turn.substr(prompt.size()), 1, &ex));
    done = turn;
  }
  if (!any_assistant) return Status::error("messages: no assistant message (nothing to train on)");
  tokenizer::ChatRequest all = req;
  all.add_generation_prompt = false;
  DSEEK_ASSIGN_OR_RETURN(const std::string full, tokenizer::render_chat(format, all));
  if (!starts_with(full, done))
    return Status::errorf("messages: the {} chat format renders the whole conversation differently from its turns",
                          tokenizer::chat_format_name(format));
  DSEEK_RETURN_IF_ERROR(append(tok, full.substr(done.size()), 0, &ex));
  return ex;
}

Expected<std::vector<ChatExample>> load_chat_jsonl(const std::string& path, const tokenizer::Tokenizer& tok,
                                                   tokenizer::ChatFormat format) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::errorf("{}: cannot open the chat data file", path);
  std::vector<ChatExample> out;
  std::string line;
  for (int64_t n = 1; std::getline(f, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const tokenizer::OrderedJson j = tokenizer::OrderedJson::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return Status::errorf("{}:{}: not a valid JSON value", path, n);
    if (!j.is_object() && !j.is_array())
      return Status::errorf("{}:{}: expected {{\"messages\": [...]}} or a message array", path, n);
    if (j.is_object() && !j.contains("messages")) return Status::errorf("{}:{}: messages: missing", path, n);
    Expected<tokenizer::ChatRequest> req = tokenizer::chat_request_from_json(j);
    if (!req.ok()) return Status::errorf("{}:{}: {}", path, n, req.status().message());
    Expected<ChatExample> ex = tokenize_chat(tok, format, req.value());
    if (!ex.ok()) return Status::errorf("{}:{}: {}", path, n, ex.status().message());
    ex.value().line = n;
    out.push_back(std::move(ex.value()));
  }
  if (out.empty()) return Status::errorf("{}: no conversations", path);
  return out;
}

}  // namespace dseek::train
