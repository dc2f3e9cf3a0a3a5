// The server's continuous-batching engine. One engine thread owns the model's compute: it keeps
// a running batch of at most `parallel` sequences, and each step feeds every running sequence
// through Model::forward_batch together: one token for each decoding sequence, and a chunk of
// prompt (at most prefill_chunk tokens, within the step's token budget) for each sequence still
// prefilling, so a long prompt never stalls the running decodes. Requests join the batch
// between steps (FIFO from a bounded queue) and leave it when they finish or are cancelled,
// freeing their pages at once.
//
// All sequences' latent caches are pages of one shared PagePool; a request whose prompt starts
// with tokens already cached (same system prompt, earlier turns) adopts those pages and skips
// computing them. When the pool runs short during decode, the most recently admitted sequence is
// preempted: its pages are released and it is re-queued at the front with its generated tokens
// appended to its prompt (recomputed later, so its output is unchanged).
//
// Every sequence's logits are exactly those it would get alone (forward_batch's guarantee) and
// each request samples with its own Sampler and seed, so with greedy sampling a request's output
// does not depend on what else runs.
//
// Threads: submit(), RequestStream and stats() may be called from any thread; callbacks never
// run on the caller's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "base/status.h"
#include "kv/page_pool.h"
#include "model/deepseek.h"
#include "runtime/generator.h"
#include "sample/sampler.h"
#include "serve/metrics.h"
#include "tokenizer/tokenizer.h"

namespace dseek::serve {

struct EngineOptions {
  int64_t parallel = 8;         // sequences in the running batch at most
  int64_t max_queue = 64;       // waiting requests at most (beyond free batch slots); then kQueueFull
  int64_t kv_tokens = 8192;     // capacity of the shared page pool, in tokens
  int64_t max_context = 8192;   // prompt + generated tokens of one sequence at most
  int64_t prefill_chunk = 256;  // prompt tokens of one sequence per step at most
  int64_t step_tokens = 512;    // tokens of one step at most (decode tokens first, then prefill)
  int64_t page_tokens = kv::PagePool::kDefaultPageTokens;
};

// Restricts which tokens may come next: guided decoding, e.g. a forced tool call (tool_choice
// "required" or a named function) whose text must be the model's native tool-call format with
// JSON arguments. Used on the engine thread only, one instance per request.
class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Sets the logits of tokens that may not come next to -inf. logits: [V].
  virtual void mask(std::span<float> logits) = 0;
  // The token chosen (always one mask() allowed).
  virtual void accept(int32_t id) = 0;
  // The constrained text is complete: the engine ends the request (finish "stop") without
  // sampling further.
  virtual bool complete() const = 0;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;        // token ids, BOS included if wanted
  sample::SamplingParams sampling;    // must pass sample::validate
  int64_t max_tokens = 256;           // generated tokens at most; < 0: until EOS or context full
  std::vector<std::string> stop;      // stop strings (text before one is returned, not it)
  std::vector<int32_t> eos_ids;       // tokens that end generation (not emitted)
  int32_t top_logprobs = -1;          // -1: no logprobs; 0..20: the chosen token's + n best
  std::shared_ptr<TokenConstraint> constraint;  // optional guided decoding
};

// One generated token, in order. `text` is the newly complete text (complete UTF-8, never part
// of a stop string; may be empty while bytes or a possible stop string are held back).
struct TokenEvent {
  int32_t id = 0;
  std::string text;
  float logprob = 0;                       // raw log-softmax of the chosen token (if requested)
  std::vector<sample::TokenProb> top;      // the top_logprobs best (if requested)
};

struct FinishEvent {
  runtime::FinishReason finish = runtime::FinishReason::kStop;
  std::string tail_text;        // held-back text released at the end (emit after the tokens)
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;    // prompt tokens reused from the prefix cache
  int64_t completion_tokens = 0;
  double time_to_first_token_s = 0;
  Status error;                 // an internal error ended the request (then finish is kStop)
};

using EngineEvent = std::variant<TokenEvent, FinishEvent>;

// What the engine and one request's HTTP handler share. The engine pushes events; the handler
// takes them and may cancel (client gone), which frees the sequence at the next step.
class RequestStream {
 public:
  // Waits up to `timeout` for events; appends all pending ones to *out. Returns false once the
  // FinishEvent has been taken (nothing more will come): the call that appends it already
  // returns false, so handle *out before looking at the result.
  bool take(std::vector<EngineEvent>* out, std::chrono::milliseconds timeout);
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

  // Engine side.
  void push(EngineEvent e);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<EngineEvent> events_;
  bool finished_pushed_ = false;
  bool finished_taken_ = false;
  std::atomic<bool> cancelled_{false};
};

enum class SubmitError { kNone, kQueueFull, kPromptTooLong, kInvalid, kShuttingDown };

struct SubmitResult {
  std::shared_ptr<RequestStream> stream;  // set when error == kNone
  SubmitError error = SubmitError::kNone;
  std::string message;  // one line, for the API error object
};

class Engine {
 public:
  // `tokenizer` may be null (token ids only, no text, stop strings unused). `metrics` outlives
  // the engine. Starts the engine thread.
  Engine(const model::Model& model, const tokenizer::Tokenizer* tokenizer, EngineOptions options, Metrics* metrics);
  ~Engine();  // shutdown()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  SubmitResult submit(GenerationRequest request);

  // Stops admitting; running and queued requests end with FinishReason::kCancelled; joins the
  // engine thread. Idempotent.
  void shutdown();

  const EngineOptions& options() const { return options_; }

  struct Stats {
    int64_t queued = 0;       // waiting to join the batch
    int64_t running = 0;      // in the batch
    int64_t kv_pages_used = 0, kv_pages_cached = 0, kv_pages_total = 0;
    int64_t steps = 0;        // decode/prefill steps run
    int64_t max_batch = 0;    // most sequences seen in one step
  };
  Stats stats() const;

 private:
  struct Sequence;
  void loop();
  // Gives a newly admitted sequence its cache and says where its prompt starts (the one place
  // that will adopt cached prefix pages).
  // Creates the session, adopting cached prefix pages; false (nothing kept) when the pool
  // lacks pages for it while others run.
  bool start_sequence(Sequence& s);
  void preempt(Sequence& s);
  // One forward_batch over every running sequence, then a token for each that is ready.
  void step();
  // forward_batch; if it fails, each sequence alone, so that only the ones at fault fail.
  // Returns one status per sequence; (*logits)[i] is [1, V] where it is ok.
  std::vector<Status> forward(std::span<model::Session* const> sessions,
                              std::span<const std::span<const int32_t>> tokens,
                              std::vector<std::vector<float>>* logits) const;
  // Samples and emits the next token from `logits` ([V], after the sequence's last token).
  // Returns true when the sequence finished (its FinishEvent pushed).
  bool next_token(Sequence& s, std::span<const float> logits);
  void finish(Sequence& s, runtime::FinishReason reason, Status error = {});
  // Copies queue/batch/cache figures to stats_ and the metrics' gauges.
  void publish_stats();

  const model::Model& model_;
  const tokenizer::Tokenizer* tokenizer_;
  EngineOptions options_;
  Metrics* metrics_;
  std::shared_ptr<kv::PagePool> pool_;
  std::vector<int32_t> no_text_ids_;  // vocabulary ids the tokenizer cannot decode

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Sequence>> queue_;  // guarded by mu_
  bool stopping_ = false;                         // guarded by mu_
  std::vector<std::unique_ptr<Sequence>> running_;  // engine thread only
  Stats stats_;                                     // guarded by mu_ (copied out by stats())
  std::thread thread_;
  std::once_flag joined_;  // shutdown() may be called from several threads
};

}  // namespace dseek::serve
