#include "serve/engine.h"

#include <algorithm>
#include <optional>

#include <fmt/format.h>

#include "base/check.h"
#include "tokenizer/stream_decoder.h"

namespace dseek::serve {

using Clock = std::chrono::steady_clock;
using runtime::FinishReason;

namespace {

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RequestStream

bool RequestStream::take(std::vector<EngineEvent>* out, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  if (finished_taken_) return false;
  cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
  for (auto& e : events_) {
    if (std::holds_alternative<FinishEvent>(e)) finished_taken_ = true;
    out->push_back(std::move(e));
  }
  events_.clear();
  return !finished_taken_;
}

void RequestStream::push(EngineEvent e) {
  {
    std::lock_guard lock(mu_);
    if (finished_pushed_) return;  // nothing follows the FinishEvent
    if (std::holds_alternative<FinishEvent>(e)) finished_pushed_ = true;
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

// ---------------------------------------------------------------------------------------------
// Engine

// One request from submit() to its FinishEvent: queued, then in the running batch.
struct Engine::Sequence {
  Sequence(GenerationRequest r, const tokenizer::Tokenizer* tok)
      : req(std::move(r)),
        stream(std::make_shared<RequestStream>()),
        history(req.prompt),
        sampler(req.sampling),
        filter(tok ? req.stop : std::vector<std::string>{}) {
    if (tok) decoder.emplace(*tok, /*skip_special=*/false);
  }

  int64_t prompt_size() const { return static_cast<int64_t>(req.prompt.size()); }
  // What must be in the cache before the next token is sampled: the prompt, or after a
  // preemption the prompt and every token generated so far.
  const std::vector<int32_t>& to_prefill() const { return preempted ? history : req.prompt; }
  int64_t prefill_size() const { return static_cast<int64_t>(to_prefill().size()); }

  GenerationRequest req;
  std::shared_ptr<RequestStream> stream;
  Clock::time_point submitted, last_token;
  std::unique_ptr<model::Session> session;  // null until admitted, and again once finished
  int64_t fed = 0;                           // to_prefill() tokens in the cache (computed or reused)
  int64_t cached = 0;                        // prompt tokens reused from the prefix cache (first admission)
  bool admitted_before = false;
  bool preempted = false;                    // re-queued for lack of pages: prefill the history
  bool decoding = false;                     // the prompt is done: `pending` is fed next step
  int32_t pending = 0;
  std::vector<int32_t> history;  // prompt + generated, for the sampler's penalties
  int64_t generated = 0;
  double ttft_s = 0;
  bool stopped_by_string = false;
  bool done = false;  // FinishEvent pushed
  sample::Sampler sampler;
  std::optional<tokenizer::StreamDecoder> decoder;
  runtime::StopStringFilter filter;
  std::vector<float> masked;  // [V] the constraint's copy of the logits
};

Engine::Engine(const model::Model& model, const tokenizer::Tokenizer* tokenizer, EngineOptions options,
               Metrics* metrics)
    : model_(model), tokenizer_(tokenizer), options_(options), metrics_(metrics) {
  DSEEK_CHECK(metrics_ != nullptr);
  DSEEK_CHECK(options_.parallel >= 1 && options_.max_queue >= 0 && options_.max_context >= 1 &&
                  options_.prefill_chunk >= 1 && options_.step_tokens >= 1 && options_.page_tokens >= 1,
              "bad EngineOptions");
  // One sequence may use the whole cache but no more.
  options_.max_context = std::min(options_.max_context, options_.kv_tokens);
  pool_ = model_.new_page_pool(options_.kv_tokens, options_.page_tokens);
  if (tokenizer_) no_text_ids_ = runtime::ids_without_text(*tokenizer_, model_.config().vocab_size);
  publish_stats();
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() { shutdown(); }

void Engine::shutdown() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  std::call_once(joined_, [this] { thread_.join(); });
}

Engine::Stats Engine::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

SubmitResult Engine::submit(GenerationRequest request) {
  SubmitResult r;
  const auto refuse = [&r](SubmitError e, std::string message) {
    r.error = e;
    r.message = std::move(message);
    return r;
  };
  const int64_t n = static_cast<int64_t>(request.prompt.size());
  const int64_t V = model_.config().vocab_size;
  if (n == 0) return refuse(SubmitError::kInvalid, "the prompt is empty");
  for (int64_t i = 0; i < n; ++i)
    if (request.prompt[i] < 0 || request.prompt[i] >= V)
      return refuse(SubmitError::kInvalid, fmt::format("prompt token id {} at index {} is outside the vocabulary [0, {})",
                                                       request.prompt[i], i, V));
  if (Status st = sample::validate(request.sampling); !st.ok()) return refuse(SubmitError::kInvalid, st.message());
  if (request.top_logprobs < -1 || request.top_logprobs > 20)
    return refuse(SubmitError::kInvalid,
                  fmt::format("top_logprobs is {} but must be between 0 and 20", request.top_logprobs));
  if (n > options_.max_context)
    return refuse(SubmitError::kPromptTooLong,
                  fmt::format("the prompt has {} tokens but the context holds {}", n, options_.max_context));

  auto seq = std::make_unique<Sequence>(std::move(request), tokenizer_);
  seq->submitted = Clock::now();
  {
    std::lock_guard lock(mu_);
    if (stopping_) return refuse(SubmitError::kShuttingDown, "the server is shutting down");
    // Requests that free batch slots will take at once do not count as waiting.
    const int64_t free_slots = std::max<int64_t>(0, options_.parallel - stats_.running);
    if (static_cast<int64_t>(queue_.size()) >= options_.max_queue + free_slots)
      return refuse(SubmitError::kQueueFull,
                    fmt::format("the request queue is full ({} waiting); retry later", queue_.size()));
    r.stream = seq->stream;
    queue_.push_back(std::move(seq));
    stats_.queued = static_cast<int64_t>(queue_.size());
  }
  wake_.notify_one();
  return r;
}

void Engine::loop() {
  for (;;) {
    std::vector<std::unique_ptr<Sequence>> admitted, dropped;
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !running_.empty(); });
      if (stopping_) break;
      for (auto it = queue_.begin(); it != queue_.end();) {
        if ((*it)->stream->cancelled()) {
          dropped.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      while (!queue_.empty() && static_cast<int64_t>(running_.size() + admitted.size()) < options_.parallel) {
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      stats_.queued = static_cast<int64_t>(queue_.size());
      stats_.running = static_cast<int64_t>(running_.size() + admitted.size());
    }
    for (auto& s : dropped) finish(*s, FinishReason::kCancelled);
    std::erase_if(running_, [&](const std::unique_ptr<Sequence>& s) {
      if (s->stream->cancelled()) finish(*s, FinishReason::kCancelled);
      return s->done;
    });
    // Admit in FIFO order while the pool has pages for the prompt's uncached part plus one page
    // of headroom per running sequence; the rest go back to the front of the queue.
    for (size_t i = 0; i < admitted.size(); ++i) {
      if (!start_sequence(*admitted[i])) {
        std::lock_guard lock(mu_);
        for (size_t j = admitted.size(); j-- > i;) queue_.push_front(std::move(admitted[j]));
        break;
      }
      running_.push_back(std::move(admitted[i]));
    }
    if (!running_.empty()) step();
    std::erase_if(running_, [](const std::unique_ptr<Sequence>& s) { return s->done; });
    publish_stats();
  }

  std::deque<std::unique_ptr<Sequence>> queued;
  {
    std::lock_guard lock(mu_);
    queued.swap(queue_);
  }
  for (auto& s : queued) finish(*s, FinishReason::kCancelled);
  for (auto& s : running_) finish(*s, FinishReason::kCancelled);
  running_.clear();
  publish_stats();
}

bool Engine::start_sequence(Sequence& s) {
  s.session = model_.new_session(pool_, options_.max_context);
  const std::vector<int32_t>& feed = s.to_prefill();
  // Pages other sequences published for the same leading tokens are adopted, not recomputed;
  // the last token is always fed, for its logits.
  const int64_t reused = std::min(s.session->reuse_prefix(feed), s.prefill_size() - 1);
  s.session->truncate(reused);
  const int64_t headroom = static_cast<int64_t>(running_.size());
  if (!running_.empty() && s.session->cache().pages_needed(s.prefill_size() - reused) + headroom > pool_->available()) {
    s.session.reset();  // wait for pages; with nothing running the sequence always fits
    return false;
  }
  s.fed = reused;
  s.decoding = false;
  if (!s.admitted_before) {
    s.admitted_before = true;
    s.cached = reused;
    metrics_->add_prompt_tokens(s.prompt_size(), s.cached);
  }
  return true;
}

void Engine::preempt(Sequence& s) {
  // Its pages go back to the pool (full ones stay cached, so readmission may reuse them); it
  // restarts from the front of the queue by prefilling its prompt and what it generated so far,
  // keeping its sampler, decoder and stop-string state, so its output continues unchanged.
  s.session.reset();
  s.preempted = true;
  s.decoding = false;
  s.fed = 0;
  metrics_->count_preemption();
}

void Engine::step() {
  struct Fed {
    Sequence* seq;
    int64_t n;
    bool prompt;
  };
  std::vector<Fed> fed;
  std::vector<model::Session*> sessions;
  std::vector<std::span<const int32_t>> tokens;
  const auto add = [&](Sequence& s, std::span<const int32_t> t, bool prompt) {
    fed.push_back({&s, static_cast<int64_t>(t.size()), prompt});
    sessions.push_back(s.session.get());
    tokens.push_back(t);
  };

  // Decodes first: one token each keeps every running generation moving. Then prompt chunks in
  // admission order within what is left of the step's budget; the first prefill always gets
  // at least one token, so prompts progress even when decodes fill the budget.
  int64_t budget = options_.step_tokens;
  for (auto& s : running_)
    if (s->decoding) {
      add(*s, std::span<const int32_t>(&s->pending, 1), false);
      --budget;
    }
  bool any_prefill = false;
  for (auto& s : running_) {
    if (s->decoding) continue;
    const int64_t left = s->prefill_size() - s->fed;
    DSEEK_CHECK(left >= 1);
    const int64_t n = std::min({options_.prefill_chunk, left, any_prefill ? budget : std::max<int64_t>(budget, 1)});
    if (n <= 0) break;
    add(*s, std::span<const int32_t>(s->to_prefill()).subspan(static_cast<size_t>(s->fed), static_cast<size_t>(n)),
        true);
    budget -= n;
    any_prefill = true;
  }
  if (fed.empty()) return;

  // The pool must hold every fed token: while it cannot, preempt the most recently admitted
  // sequence (it loses the least work) and plan again without it.
  int64_t need = 0;
  for (const Fed& f : fed) need += f.seq->session->cache().pages_needed(f.n);
  if (need > pool_->available() && running_.size() > 1) {
    Sequence& victim = *running_.back();
    preempt(victim);
    std::unique_ptr<Sequence> moved = std::move(running_.back());
    running_.pop_back();
    {
      std::lock_guard lock(mu_);
      queue_.push_front(std::move(moved));
    }
    step();
    return;
  }

  std::vector<std::vector<float>> logits;
  const std::vector<Status> status = forward(sessions, tokens, &logits);
  metrics_->observe_step(static_cast<int64_t>(fed.size()));
  {
    std::lock_guard lock(mu_);
    ++stats_.steps;
    stats_.max_batch = std::max(stats_.max_batch, static_cast<int64_t>(fed.size()));
  }

  for (size_t i = 0; i < fed.size(); ++i) {
    Sequence& s = *fed[i].seq;
    if (!status[i].ok()) {
      finish(s, FinishReason::kStop, status[i]);
      continue;
    }
    if (fed[i].prompt) {
      s.fed += fed[i].n;
      if (s.fed < s.prefill_size()) continue;
      // Caught up after a preemption: these logits follow the last generated token, exactly
      // what its next decode step would have given.
      s.preempted = false;
    }
    runtime::forbid_ids(logits[i], no_text_ids_);  // never sampled, never in top_logprobs
    next_token(s, logits[i]);
  }
}

std::vector<Status> Engine::forward(std::span<model::Session* const> sessions,
                                    std::span<const std::span<const int32_t>> tokens,
                                    std::vector<std::vector<float>>* logits) const {
  std::vector<Status> status(sessions.size());
  const Status all = model_.forward_batch(sessions, tokens, {}, logits);
  if (all.ok() || sessions.size() == 1) {
    status.assign(sessions.size(), all);
    return status;
  }
  // forward_batch checks everything before any work, so no session moved: find the culprits.
  logits->assign(sessions.size(), {});
  for (size_t i = 0; i < sessions.size(); ++i) {
    std::vector<std::vector<float>> one;
    status[i] = model_.forward_batch(sessions.subspan(i, 1), tokens.subspan(i, 1), {}, &one);
    if (status[i].ok()) (*logits)[i] = std::move(one[0]);
  }
  return status;
}

bool Engine::next_token(Sequence& s, std::span<const float> logits) {
  const GenerationRequest& req = s.req;
  if (req.max_tokens >= 0 && s.generated >= req.max_tokens) {
    finish(s, FinishReason::kLength);
    return true;
  }
  if (req.constraint && req.constraint->complete()) {
    finish(s, FinishReason::kStop);
    return true;
  }
  std::span<const float> row = logits;
  if (req.constraint) {
    s.masked.assign(logits.begin(), logits.end());
    req.constraint->mask(s.masked);
    row = s.masked;
  }
  const int32_t id = s.sampler.sample(row, s.history);
  if (req.constraint) req.constraint->accept(id);
  if (std::find(req.eos_ids.begin(), req.eos_ids.end(), id) != req.eos_ids.end()) {
    finish(s, FinishReason::kStop);
    return true;
  }

  TokenEvent ev;
  ev.id = id;
  if (req.top_logprobs >= 0) {  // of the model's distribution, not the constrained or sampled one
    ev.logprob = sample::Sampler::logprob_of(logits, id);
    ev.top = sample::Sampler::top_logprobs(logits, req.top_logprobs);
  }
  s.history.push_back(id);
  ++s.generated;
  const Clock::time_point now = Clock::now();
  if (s.generated == 1) {
    s.ttft_s = seconds_between(s.submitted, now);
    metrics_->observe_ttft(s.ttft_s);
  } else {
    metrics_->observe_token_latency(seconds_between(s.last_token, now));
  }
  s.last_token = now;
  metrics_->add_generated_tokens(1);

  bool stopped = false;
  if (s.decoder) {
    Expected<std::string> piece = s.decoder->push(id);
    if (!piece.ok()) {
      finish(s, FinishReason::kStop, piece.status());
      return true;
    }
    ev.text = s.filter.push(piece.value(), &stopped);
  }
  s.stream->push(std::move(ev));

  if (stopped) {
    s.stopped_by_string = true;
    finish(s, FinishReason::kStop);
  } else if (req.constraint && req.constraint->complete()) {
    finish(s, FinishReason::kStop);
  } else if (req.max_tokens >= 0 && s.generated >= req.max_tokens) {
    finish(s, FinishReason::kLength);  // the last token need not be fed
  } else if (s.session->length() >= s.session->max_tokens()) {
    finish(s, FinishReason::kContextFull);
  } else {
    s.pending = id;
    s.decoding = true;
  }
  return s.done;
}

void Engine::finish(Sequence& s, FinishReason reason, Status error) {
  if (s.done) return;
  FinishEvent f;
  f.finish = reason;
  // Text held back for a possible stop string (or an unfinished character) is released at a
  // natural end; nothing is released after a stop string or for a cancelled request.
  if (error.ok() && reason != FinishReason::kCancelled && !s.stopped_by_string && s.decoder) {
    bool stopped = false;
    f.tail_text = s.filter.push(s.decoder->finish(), &stopped);
    if (!stopped) f.tail_text += s.filter.finish();
  }
  f.prompt_tokens = s.prompt_size();
  f.cached_tokens = s.cached;
  f.completion_tokens = s.generated;
  f.time_to_first_token_s = s.ttft_s;
  metrics_->count_finish(!error.ok()                         ? "error"
                         : reason == FinishReason::kCancelled ? "cancelled"
                                                              : runtime::finish_reason_name(reason));
  f.error = std::move(error);
  s.stream->push(std::move(f));
  s.done = true;
  s.session.reset();  // its cache is freed now, not when the batch is next compacted
}

void Engine::publish_stats() {
  const kv::PagePool::Usage usage = pool_->usage();
  const int64_t used = usage.in_use, cached = usage.cached, total = usage.max_pages;
  int64_t queued = 0, running = 0;
  {
    std::lock_guard lock(mu_);
    stats_.queued = queued = static_cast<int64_t>(queue_.size());
    stats_.running = running = static_cast<int64_t>(std::count_if(
        running_.begin(), running_.end(), [](const std::unique_ptr<Sequence>& s) { return !s->done; }));
    stats_.kv_pages_used = used;
    stats_.kv_pages_cached = cached;
    stats_.kv_pages_total = total;
  }
  metrics_->set_gauges(queued, running, used, cached, total);
}

}  // namespace dseek::serve
