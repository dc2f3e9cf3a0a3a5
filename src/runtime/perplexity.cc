#include "runtime/perplexity.h"

#include <algorithm>
#include <cmath>

#include "base/timer.h"

namespace dseek::runtime {

namespace {

struct Window {
  int64_t begin, end;  // tokens [begin, end) are fed
  int64_t first;       // targets [first, end) are scored (first > begin)
};

// The window plan: every token index >= 1 is scored exactly once (stride < ctx) or every one
// but the first of each window (stride == ctx).
std::vector<Window> plan_windows(int64_t n, int64_t ctx, int64_t stride) {
  std::vector<Window> windows;
  int64_t scored_to = 0;
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + ctx, n);
    const int64_t first = std::max(begin + 1, scored_to);
    if (first < end) windows.push_back({begin, end, first});
    scored_to = end;
    if (end == n) break;
  }
  return windows;
}

bool blank(std::string_view line) { return line.find_first_not_of(" \t\r") == std::string_view::npos; }

}  // namespace

Expected<PerplexityResult> perplexity(const model::Model& m, std::span<const int32_t> tokens,
                                      const PerplexityOptions& options) {
  const model::ModelConfig& c = m.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t ctx = options.ctx;
  const int64_t stride = options.stride == 0 ? ctx : options.stride;
  if (ctx < 2 || ctx > c.max_position_embeddings)
    return Status::errorf("--ctx {}: expected a window of 2 to {} tokens (the model's max_position_embeddings)", ctx,
                          c.max_position_embeddings);
  if (stride < 1 || stride > ctx) return Status::errorf("--stride {}: expected 1 to --ctx ({})", stride, ctx);
  if (n < 2) return Status::errorf("the text has {} token(s); at least 2 are needed to score one", n);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      return Status::errorf("token {} at position {} is outside the model's vocabulary of {}", tokens[i], i,
                            c.vocab_size);

  const std::vector<Window> windows = plan_windows(n, ctx, stride);
  int64_t total = 0;
  for (const Window& w : windows) total += w.end - w.first;

  PerplexityResult r;
  r.tokens = n;
  r.windows = static_cast<int64_t>(windows.size());
  Stopwatch clock;
  const int64_t V = c.vocab_size;
  const model::ForwardOptions all{model::AttentionForm::kAuto, /*all_logits=*/true};
  std::vector<float> logits;
  double sum = 0;  // summed in double: up to millions of terms
  for (const Window& w : windows) {
    auto session = m.new_session(w.end - w.begin);
    DSEEK_RETURN_IF_ERROR(m.forward(*session, tokens.subspan(w.begin, w.end - w.begin), all, &logits));
    // Row p of the logits ([T, V]) predicts token begin + p + 1.
    for (int64_t target = w.first; target < w.end; ++target) {
      const float* row = logits.data() + (target - 1 - w.begin) * V;
      const float top = *std::max_element(row, row + V);
      double z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]) - top);
      sum += std::log(z) + top - static_cast<double>(row[tokens[target]]);
    }
    r.scored += w.end - w.first;
    if (options.progress) options.progress(r.scored, total);
  }
  r.seconds = clock.seconds();
  r.nll = sum / static_cast<double>(r.scored);
  r.perplexity = std::exp(r.nll);
  return r;
}

Expected<std::vector<int32_t>> tokenize_documents(
    std::string_view text, int32_t eos_id, const std::function<Expected<std::vector<int32_t>>(std::string_view)>& encode) {
  std::vector<int32_t> out;
  auto add = [&](std::string_view doc) -> Status {
    DSEEK_ASSIGN_OR_RETURN(std::vector<int32_t> ids, encode(doc));
    out.insert(out.end(), ids.begin(), ids.end());
    out.push_back(eos_id);
    return {};
  };
  size_t pos = 0, doc_begin = std::string_view::npos, doc_end = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    if (blank(text.substr(pos, eol - pos))) {
      if (doc_begin != std::string_view::npos) DSEEK_RETURN_IF_ERROR(add(text.substr(doc_begin, doc_end - doc_begin)));
      doc_begin = std::string_view::npos;
    } else {
      if (doc_begin == std::string_view::npos) doc_begin = pos;
      doc_end = eol;
    }
    pos = eol + 1;
  }
  if (doc_begin != std::string_view::npos) DSEEK_RETURN_IF_ERROR(add(text.substr(doc_begin, doc_end - doc_begin)));
  return out;
}

}  // namespace dseek::runtime
