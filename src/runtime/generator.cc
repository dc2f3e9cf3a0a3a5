#include "runtime/generator.h"

#include <algorithm>
#include <cmath>

#include "base/timer.h"
#include "tokenizer/stream_decoder.h"

namespace dseek::runtime {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kContextFull: return "length";  // OpenAI has no separate reason
    case FinishReason::kCancelled: return "cancelled";
  }
  return "?";
}

std::string StopStringFilter::push(std::string_view text, bool* stopped) {
  *stopped = false;
  held_.append(text);
  size_t cut = std::string::npos;
  for (const auto& s : stops_) {
    if (s.empty()) continue;
    const size_t at = held_.find(s);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    *stopped = true;
    std::string out = held_.substr(0, cut);
    held_.clear();
    return out;
  }
  // Keep the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_)
    for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringFilter::finish() {
  std::string out;
  out.swap(held_);
  return out;
}

std::vector<int32_t> ids_without_text(const tokenizer::Tokenizer& tok, int64_t vocab_size) {
  std::vector<int32_t> ids;
  for (int64_t id = 0; id < vocab_size; ++id)
    if (tok.token_bytes(static_cast<int32_t>(id)) == nullptr) ids.push_back(static_cast<int32_t>(id));
  return ids;
}

void forbid_ids(std::span<float> logits, std::span<const int32_t> ids) {
  for (int32_t id : ids)
    if (id >= 0 && static_cast<size_t>(id) < logits.size()) logits[static_cast<size_t>(id)] = -INFINITY;
}

Generator::Generator(const model::Model& model, const tokenizer::Tokenizer* tokenizer)
    : model_(model),
      tok_(tokenizer),
      no_text_ids_(tokenizer ? ids_without_text(*tokenizer, model.config().vocab_size) : std::vector<int32_t>{}) {}

Status Generator::prefill(model::Session& session, const std::vector<int32_t>& prompt, int64_t chunk,
                          std::vector<float>* last_logits, int64_t* cached) const {
  const int64_t n = static_cast<int64_t>(prompt.size());
  if (n == 0) return Status::error("the prompt is empty");
  if (n > session.max_tokens())
    return Status::errorf("the prompt has {} tokens but the context holds {} (raise -c/--ctx-size)", n,
                          session.max_tokens());
  // The session's own common prefix, then pages other sessions published for the same tokens.
  int64_t common = session.reuse_prefix(prompt);
  common = std::min(common, n - 1);  // the last prompt token is always fed: its logits are needed
  session.truncate(common);
  *cached = common;
  chunk = std::max<int64_t>(chunk, 1);
  for (int64_t pos = common; pos < n; pos += chunk) {
    const int64_t len = std::min(chunk, n - pos);
    DSEEK_RETURN_IF_ERROR(model_.forward(session, std::span(prompt.data() + pos, len), {}, last_logits));
  }
  return {};
}

Expected<GenerateResult> Generator::generate(model::Session& session, const std::vector<int32_t>& prompt,
                                             const GenerateOptions& options, const PieceCallback& on_piece) const {
  DSEEK_RETURN_IF_ERROR(sample::validate(options.sampling));  // the Sampler treats bad values as bugs
  GenerateResult result;
  std::vector<float> logits;
  Stopwatch clock;
  DSEEK_RETURN_IF_ERROR(prefill(session, prompt, options.prefill_chunk, &logits, &result.stats.cached_tokens));
  result.stats.prompt_tokens = static_cast<int64_t>(prompt.size());
  result.stats.prompt_seconds = clock.seconds();
  clock.reset();

  sample::Sampler sampler(options.sampling);
  std::optional<tokenizer::StreamDecoder> decoder;
  if (tok_) decoder.emplace(*tok_, /*skip_special=*/false);
  StopStringFilter filter(tok_ ? options.stop : std::vector<std::string>{});
  std::vector<int32_t> history = session.tokens();

  auto emit = [&](const std::string& piece) {
    if (piece.empty()) return true;
    result.text += piece;
    return on_piece ? on_piece(piece) : true;
  };

  result.finish = FinishReason::kLength;
  for (int64_t i = 0; options.max_tokens < 0 || i < options.max_tokens; ++i) {
    forbid_ids(logits, no_text_ids_);
    const int32_t id = sampler.sample(logits, history);
    if (std::find(options.eos_ids.begin(), options.eos_ids.end(), id) != options.eos_ids.end()) {
      result.finish = FinishReason::kStop;
      break;
    }
    result.tokens.push_back(id);
    history.push_back(id);
    bool stopped = false;
    if (decoder) {
      DSEEK_ASSIGN_OR_RETURN(std::string piece, decoder->push(id));
      if (!emit(filter.push(piece, &stopped))) {
        result.finish = FinishReason::kCancelled;
        break;
      }
    } else if (on_piece && !on_piece({})) {
      result.finish = FinishReason::kCancelled;
      break;
    }
    if (stopped) {
      result.finish = FinishReason::kStop;
      break;
    }
    if (options.max_tokens >= 0 && i + 1 >= options.max_tokens) break;  // no need to feed the last token
    if (session.length() >= session.max_tokens()) {
      result.finish = FinishReason::kContextFull;
      break;
    }
    DSEEK_RETURN_IF_ERROR(model_.forward(session, std::span(&id, 1), {}, &logits));
  }
  if (decoder && result.finish != FinishReason::kCancelled) {
    bool stopped = false;
    std::string tail = filter.push(decoder->finish(), &stopped);
    if (!stopped) tail += filter.finish();
    emit(tail);
  }
  result.stats.generated_tokens = static_cast<int64_t>(result.tokens.size());
  result.stats.generate_seconds = clock.seconds();
  return result;
}

}  // namespace dseek::runtime
