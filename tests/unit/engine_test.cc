// The serving engine (serve::Engine): requests run together in a continuous batch give exactly
// what runtime::Generator gives each of them alone (greedy and seeded sampling, chunked prefill
// interleaved with decodes, a step budget smaller than the batch), logprobs are those of
// Model::forward's logits, stop strings / EOS / max_tokens / a full context end requests as
// the Generator ends them, a TokenConstraint is followed, and cancellation, a full queue, bad
// requests, shutdown and destruction with unread streams behave. On the tiny-v3 golden fixture
// (vocab 512), with the DeepSeek-V3 tokenizer for the text tests (ids < 512 are all known).
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../golden/test_util.h"
#include "base/check.h"
#include "model/deepseek.h"
#include "runtime/generator.h"
#include "sample/sampler.h"
#include "serve/engine.h"
#include "serve/metrics.h"
#include "tokenizer/tokenizer.h"

namespace dseek::serve {
namespace {

using namespace std::chrono_literals;
using runtime::FinishReason;
using Clock = std::chrono::steady_clock;

constexpr int64_t kContext = 256;  // tiny-v3's max_position_embeddings

const model::Model& tiny() {
  static const std::unique_ptr<model::Model> m = [] {
    auto r = model::Model::load(testing::golden_dir() + "/models/tiny-v3");
    if (!r.ok()) ADD_FAILURE() << r.status().message();
    return r.ok() ? std::move(r.value()) : nullptr;
  }();
  DSEEK_CHECK(m != nullptr);
  return *m;
}

const tokenizer::Tokenizer& v3_tokenizer() {
  static const std::unique_ptr<tokenizer::Tokenizer> t = [] {
    auto r = tokenizer::Tokenizer::load(DSEEK_TOKENIZER_DIR);
    if (!r.ok()) ADD_FAILURE() << r.status().message();
    return r.ok() ? std::make_unique<tokenizer::Tokenizer>(std::move(r.value())) : nullptr;
  }();
  DSEEK_CHECK(t != nullptr);
  return *t;
}

// Deterministic token ids in [3, V) (no BOS/EOS/pad specials).
std::vector<int32_t> prompt_for(int64_t seed, int64_t n) {
  const int64_t V = tiny().config().vocab_size;
  std::vector<int32_t> out(static_cast<size_t>(n));
  uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(seed + 1);
  for (auto& t : out) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t = static_cast<int32_t>(3 + (x >> 33) % static_cast<uint64_t>(V - 3));
  }
  return out;
}

sample::SamplingParams greedy() {
  sample::SamplingParams p;
  p.temperature = 0;
  return p;
}

struct Outcome {
  std::vector<TokenEvent> tokens;
  std::vector<int32_t> ids;
  std::string text;  // token texts + tail
  FinishEvent finish;
  bool finished = false;
};

// Reads a stream to its FinishEvent (or gives up after `limit`).
Outcome collect(RequestStream& stream, std::chrono::seconds limit = 30s) {
  Outcome o;
  const auto deadline = Clock::now() + limit;
  bool more = true;
  while (more && Clock::now() < deadline) {
    std::vector<EngineEvent> events;
    more = stream.take(&events, 50ms);
    for (auto& e : events) {
      if (auto* t = std::get_if<TokenEvent>(&e)) {
        EXPECT_FALSE(o.finished) << "a token after the FinishEvent";
        o.ids.push_back(t->id);
        o.text += t->text;
        o.tokens.push_back(std::move(*t));
      } else {
        EXPECT_FALSE(o.finished) << "two FinishEvents";
        o.finish = std::get<FinishEvent>(std::move(e));
        o.text += o.finish.tail_text;
        o.finished = true;
      }
    }
  }
  EXPECT_TRUE(o.finished) << "no FinishEvent within the time limit";
  return o;
}

// What the single-sequence Generator gives for the same request, on a fresh session.
runtime::GenerateResult alone(const GenerationRequest& r, const tokenizer::Tokenizer* tok, int64_t chunk,
                              int64_t context = kContext) {
  runtime::Generator gen(tiny(), tok);
  runtime::GenerateOptions o;
  o.sampling = r.sampling;
  o.max_tokens = r.max_tokens;
  o.stop = r.stop;
  o.eos_ids = r.eos_ids;
  o.prefill_chunk = chunk;
  auto session = tiny().new_session(context);
  auto res = gen.generate(*session, r.prompt, o, nullptr);
  EXPECT_TRUE(res.ok()) << res.status().message();
  return res.ok() ? res.value() : runtime::GenerateResult{};
}

std::shared_ptr<RequestStream> submit_ok(Engine& e, GenerationRequest r) {
  SubmitResult s = e.submit(std::move(r));
  EXPECT_EQ(s.error, SubmitError::kNone) << s.message;
  return s.stream;
}

// Waits until `pred(engine.stats())` holds (or 10 s pass).
template <typename Pred>
bool wait_for_stats(const Engine& e, Pred pred) {
  const auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    if (pred(e.stats())) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred(e.stats());
}

// Allows every token but takes 5 ms per step: keeps a request running for a while.
class SlowConstraint : public TokenConstraint {
 public:
  void mask(std::span<float>) override { std::this_thread::sleep_for(5ms); }
  void accept(int32_t) override {}
  bool complete() const override { return false; }
};

// Allows only the next token of a fixed sequence; complete after the last one.
class ForcedTokens : public TokenConstraint {
 public:
  explicit ForcedTokens(std::vector<int32_t> ids) : ids_(std::move(ids)) {}
  void mask(std::span<float> logits) override {
    ++masks;
    for (size_t i = 0; i < logits.size(); ++i)
      if (static_cast<int32_t>(i) != ids_[next_]) logits[i] = -std::numeric_limits<float>::infinity();
  }
  void accept(int32_t id) override {
    EXPECT_EQ(id, ids_[next_]);
    ++next_;
  }
  bool complete() const override { return next_ == ids_.size(); }
  int masks = 0;

 private:
  std::vector<int32_t> ids_;
  size_t next_ = 0;
};

GenerationRequest slow_request(int64_t seed) {
  GenerationRequest r;
  r.prompt = prompt_for(seed, 8);
  r.sampling = greedy();
  r.max_tokens = -1;
  r.constraint = std::make_shared<SlowConstraint>();
  return r;
}

// 16 greedy requests of 5..110 prompt tokens (most longer than prefill_chunk = 16, so their
// chunks share steps with other requests' decodes), 6 at a time: each gets the Generator's
// tokens, and steps really held several sequences.
TEST(Engine, ConcurrentGreedyRequestsGetTheTokensTheyGetAlone) {
  Metrics metrics;
  EngineOptions opt;
  opt.parallel = 6;
  opt.max_queue = 16;
  opt.max_context = kContext;
  opt.prefill_chunk = 16;  // below the naive form's threshold: chunking never changes the math
  opt.step_tokens = 512;
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 16; ++i) {
    GenerationRequest r;
    r.prompt = prompt_for(i, 5 + 7 * i);
    r.sampling = greedy();
    r.max_tokens = 6 + i % 5;
    reqs.push_back(r);
  }
  std::vector<std::shared_ptr<RequestStream>> streams;
  int64_t prompt_total = 0, generated_total = 0;
  {
    Engine engine(tiny(), nullptr, opt, &metrics);
    for (const auto& r : reqs) streams.push_back(submit_ok(engine, r));
    for (size_t i = 0; i < reqs.size(); ++i) {
      ASSERT_TRUE(streams[i]);
      const Outcome got = collect(*streams[i]);
      const runtime::GenerateResult want = alone(reqs[i], nullptr, opt.prefill_chunk);
      EXPECT_EQ(got.ids, want.tokens) << "request " << i;
      EXPECT_EQ(got.finish.finish, FinishReason::kLength);
      EXPECT_TRUE(got.finish.error.ok());
      EXPECT_EQ(got.finish.prompt_tokens, static_cast<int64_t>(reqs[i].prompt.size()));
      EXPECT_EQ(got.finish.completion_tokens, reqs[i].max_tokens);
      EXPECT_GT(got.finish.time_to_first_token_s, 0);
      for (const auto& t : got.tokens) EXPECT_TRUE(t.text.empty() && t.top.empty());
      prompt_total += static_cast<int64_t>(reqs[i].prompt.size());
      generated_total += reqs[i].max_tokens;
    }
    EXPECT_TRUE(wait_for_stats(engine, [](const Engine::Stats& s) { return s.running == 0 && s.queued == 0; }));
    const Engine::Stats s = engine.stats();
    EXPECT_GT(s.max_batch, 1);
    EXPECT_LE(s.max_batch, opt.parallel);
    EXPECT_EQ(s.steps, metrics.steps());
    EXPECT_EQ(s.kv_pages_used, 0);
    EXPECT_EQ(s.kv_pages_total, opt.kv_tokens / opt.page_tokens);
  }
  EXPECT_GT(metrics.max_batch_sequences(), 1);
  EXPECT_EQ(metrics.generated_tokens(), generated_total);
  const std::string text = metrics.prometheus_text();
  EXPECT_NE(text.find("dseek_prompt_tokens_total " + std::to_string(prompt_total) + "\n"), std::string::npos);
  EXPECT_NE(text.find("dseek_request_finish_total{reason=\"length\"} 16\n"), std::string::npos);
  EXPECT_NE(text.find("dseek_time_to_first_token_seconds_count 16\n"), std::string::npos);
  EXPECT_NE(text.find("dseek_time_per_output_token_seconds_count " + std::to_string(generated_total - 16) + "\n"),
            std::string::npos);
  EXPECT_NE(text.find("dseek_running_sequences 0\n"), std::string::npos);
}

// A step budget smaller than the batch: 4 sequences, 3 tokens a step. Decodes take the budget,
// yet the first prefilling sequence still advances a token a step; every request ends with
// the Generator's tokens.
TEST(Engine, ATightStepBudgetStillServesEveryone) {
  Metrics metrics;
  EngineOptions opt;
  opt.parallel = 4;
  opt.max_context = kContext;
  opt.prefill_chunk = 16;
  opt.step_tokens = 3;
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest r;
    r.prompt = prompt_for(100 + i, 10 + 9 * i);
    r.sampling = greedy();
    r.max_tokens = 12;
    reqs.push_back(r);
  }
  Engine engine(tiny(), nullptr, opt, &metrics);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& r : reqs) streams.push_back(submit_ok(engine, r));
  for (size_t i = 0; i < reqs.size(); ++i) {
    const Outcome got = collect(*streams[i]);
    EXPECT_EQ(got.ids, alone(reqs[i], nullptr, opt.prefill_chunk).tokens) << "request " << i;
  }
  EXPECT_GT(metrics.max_batch_sequences(), 1);
  EXPECT_LE(metrics.max_batch_sequences(), opt.parallel);
}

// Non-greedy sampling with penalties: each request's own seeded Sampler draws the same tokens
// in the batch as alone; different seeds draw different tokens.
TEST(Engine, SeededSamplingGivesTheSameTokensAloneAndConcurrently) {
  Metrics metrics;
  EngineOptions opt;
  opt.parallel = 8;
  opt.max_context = kContext;
  opt.prefill_chunk = 16;
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 8; ++i) {
    GenerationRequest r;
    r.prompt = prompt_for(i % 2, 12 + 5 * (i % 2));  // pairs share a prompt, differ in seed
    r.sampling.temperature = 1.3f;
    r.sampling.top_k = 100;
    r.sampling.top_p = 0.95f;
    r.sampling.repetition_penalty = 1.2f;
    r.sampling.seed = 1000 + static_cast<uint64_t>(i);
    r.max_tokens = 20;
    reqs.push_back(r);
  }
  Engine engine(tiny(), nullptr, opt, &metrics);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& r : reqs) streams.push_back(submit_ok(engine, r));
  std::vector<std::vector<int32_t>> got;
  for (size_t i = 0; i < reqs.size(); ++i) {
    got.push_back(collect(*streams[i]).ids);
    EXPECT_EQ(got.back(), alone(reqs[i], nullptr, opt.prefill_chunk).tokens) << "request " << i;
  }
  EXPECT_NE(got[0], got[2]);  // same prompt, other seed
}

// The engine runs the three requests as one batch, the check below one request at a time: the
// matrix kernels sum in an order that depends on the tokens per call, so the logprobs agree to
// float rounding (~1e-6), not bit for bit.
constexpr double kBatchLogprobTolerance = 2e-5;

// Logprobs: the raw log-softmax of the logits Model::forward gives, for the chosen token and
// the n best (checked against the Sampler's helpers and against a double-precision log-sum-exp).
TEST(Engine, LogprobsAreThoseOfTheModelsLogits) {
  Metrics metrics;
  EngineOptions opt;
  opt.max_context = kContext;
  opt.prefill_chunk = 16;
  Engine engine(tiny(), nullptr, opt, &metrics);
  GenerationRequest r;
  r.prompt = prompt_for(7, 11);
  r.sampling.temperature = 0.8f;
  r.sampling.seed = 5;
  r.max_tokens = 6;
  r.top_logprobs = 5;
  GenerationRequest r0 = r;
  r0.top_logprobs = 0;
  GenerationRequest none = r;
  none.top_logprobs = -1;
  auto s = submit_ok(engine, r), s0 = submit_ok(engine, r0), sn = submit_ok(engine, none);
  const Outcome got = collect(*s), got0 = collect(*s0), gotn = collect(*sn);
  ASSERT_EQ(got.tokens.size(), 6u);
  EXPECT_EQ(got.ids, got0.ids);
  EXPECT_EQ(got.ids, gotn.ids);

  auto session = tiny().new_session(kContext);
  std::vector<float> logits;
  ASSERT_TRUE(tiny().forward(*session, r.prompt, {}, &logits).ok());
  for (size_t k = 0; k < got.tokens.size(); ++k) {
    const TokenEvent& t = got.tokens[k];
    const auto want = sample::Sampler::top_logprobs(logits, 5);
    ASSERT_EQ(t.top.size(), want.size());
    for (size_t j = 0; j < want.size(); ++j) {
      EXPECT_EQ(t.top[j].id, want[j].id);
      EXPECT_NEAR(t.top[j].logprob, want[j].logprob, kBatchLogprobTolerance);
    }
    EXPECT_NEAR(t.logprob, sample::Sampler::logprob_of(logits, t.id), kBatchLogprobTolerance);
    double mx = -INFINITY, sum = 0;
    for (float l : logits) mx = std::max(mx, static_cast<double>(l));
    for (float l : logits) sum += std::exp(static_cast<double>(l) - mx);
    EXPECT_NEAR(t.logprob, static_cast<double>(logits[static_cast<size_t>(t.id)]) - mx - std::log(sum), 1e-4);
    EXPECT_TRUE(got0.tokens[k].top.empty());
    EXPECT_NEAR(got0.tokens[k].logprob, t.logprob, kBatchLogprobTolerance);
    EXPECT_TRUE(gotn.tokens[k].top.empty());
    EXPECT_EQ(gotn.tokens[k].logprob, 0.0f);
    const int32_t id = t.id;
    ASSERT_TRUE(tiny().forward(*session, std::span(&id, 1), {}, &logits).ok());
  }
}

// Text: pieces + tail equal the Generator's text; a stop string cuts the text just before it
// (finish stop), max_tokens ends with finish length, an EOS id ends before it.
TEST(Engine, StopStringsEosAndMaxTokensEndRequestsAsTheGeneratorDoes) {
  const tokenizer::Tokenizer& tok = v3_tokenizer();
  Metrics metrics;
  EngineOptions opt;
  opt.max_context = kContext;
  opt.prefill_chunk = 16;
  Engine engine(tiny(), &tok, opt, &metrics);

  GenerationRequest base;
  base.prompt = prompt_for(21, 9);
  base.sampling = greedy();
  base.max_tokens = 40;
  const runtime::GenerateResult full = alone(base, &tok, opt.prefill_chunk);
  ASSERT_EQ(full.tokens.size(), 40u);
  auto decoded = tok.decode(full.tokens);
  ASSERT_TRUE(decoded.ok());
  ASSERT_EQ(full.text, decoded.value());
  {
    const Outcome got = collect(*submit_ok(engine, base));
    EXPECT_EQ(got.ids, full.tokens);
    EXPECT_EQ(got.text, full.text);
    EXPECT_EQ(got.finish.finish, FinishReason::kLength);
  }

  // A stop string from the middle of that text (two printable ASCII characters).
  std::string stop;
  for (size_t i = full.text.size() / 3; i + 2 <= full.text.size() && stop.empty(); ++i)
    if (std::isgraph(static_cast<unsigned char>(full.text[i])) && std::isgraph(static_cast<unsigned char>(full.text[i + 1])))
      stop = full.text.substr(i, 2);
  ASSERT_FALSE(stop.empty()) << full.text;
  GenerationRequest with_stop = base;
  with_stop.stop = {"never appears \x01", stop};
  {
    const Outcome got = collect(*submit_ok(engine, with_stop));
    EXPECT_EQ(got.finish.finish, FinishReason::kStop);
    EXPECT_EQ(got.text, full.text.substr(0, full.text.find(stop)));
    EXPECT_LT(got.ids.size(), full.tokens.size());
    EXPECT_EQ(got.ids, std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + static_cast<long>(got.ids.size())));
    EXPECT_EQ(got.text, alone(with_stop, &tok, opt.prefill_chunk).text);
    EXPECT_EQ(got.finish.tail_text, "");
  }

  GenerationRequest short_one = base;
  short_one.max_tokens = 7;
  {
    const Outcome got = collect(*submit_ok(engine, short_one));
    EXPECT_EQ(got.finish.finish, FinishReason::kLength);
    EXPECT_EQ(got.ids, std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + 7));
    EXPECT_EQ(got.text, tok.decode(got.ids).value());
    EXPECT_EQ(got.finish.completion_tokens, 7);
  }

  GenerationRequest eos = base;
  eos.eos_ids = {full.tokens[2]};
  {
    const Outcome got = collect(*submit_ok(engine, eos));
    EXPECT_EQ(got.finish.finish, FinishReason::kStop);
    const auto first = std::find(full.tokens.begin(), full.tokens.end(), full.tokens[2]);
    EXPECT_EQ(got.ids, std::vector<int32_t>(full.tokens.begin(), first));
  }

  GenerationRequest zero = base;
  zero.max_tokens = 0;
  {
    const Outcome got = collect(*submit_ok(engine, zero));
    EXPECT_EQ(got.finish.finish, FinishReason::kLength);
    EXPECT_TRUE(got.ids.empty());
  }
}

// A prompt that fills the context exactly gets one token, then finish "context full", like the
// Generator; one token more is refused at submit.
TEST(Engine, PromptsAreBoundByTheContext) {
  Metrics metrics;
  EngineOptions opt;
  opt.max_context = 32;
  opt.prefill_chunk = 16;
  Engine engine(tiny(), nullptr, opt, &metrics);
  GenerationRequest r;
  r.sampling = greedy();
  r.prompt = prompt_for(3, 33);
  SubmitResult s = engine.submit(r);
  EXPECT_EQ(s.error, SubmitError::kPromptTooLong);
  EXPECT_FALSE(s.stream);
  EXPECT_NE(s.message.find("33 tokens"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("32"), std::string::npos) << s.message;

  r.prompt.resize(32);
  const Outcome got = collect(*submit_ok(engine, r));
  EXPECT_EQ(got.finish.finish, FinishReason::kContextFull);
  const runtime::GenerateResult want = alone(r, nullptr, opt.prefill_chunk, 32);
  EXPECT_EQ(want.finish, FinishReason::kContextFull);
  EXPECT_EQ(got.ids, want.tokens);
  EXPECT_EQ(got.ids.size(), 1u);

  r.prompt.resize(20);
  r.max_tokens = -1;
  const Outcome rest = collect(*submit_ok(engine, r));
  EXPECT_EQ(rest.finish.finish, FinishReason::kContextFull);
  EXPECT_EQ(rest.ids.size(), 13u);  // 20 + 12 fed = 32, and the 13th is sampled from the last logits
  EXPECT_EQ(rest.ids, alone(r, nullptr, opt.prefill_chunk, 32).tokens);
}

TEST(Engine, InvalidRequestsAreRefusedWithAMessage) {
  Metrics metrics;
  EngineOptions opt;
  opt.max_context = kContext;
  Engine engine(tiny(), nullptr, opt, &metrics);
  GenerationRequest r;
  r.sampling = greedy();
  SubmitResult s = engine.submit(r);
  EXPECT_EQ(s.error, SubmitError::kInvalid);
  EXPECT_NE(s.message.find("empty"), std::string::npos) << s.message;

  r.prompt = {5, 6, 512, 7};
  s = engine.submit(r);
  EXPECT_EQ(s.error, SubmitError::kInvalid);
  EXPECT_NE(s.message.find("512"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("index 2"), std::string::npos) << s.message;
  r.prompt = {-1};
  s = engine.submit(r);
  EXPECT_EQ(s.error, SubmitError::kInvalid);
  EXPECT_NE(s.message.find("index 0"), std::string::npos) << s.message;

  r.prompt = {5, 6};
  r.sampling.temperature = -1;
  s = engine.submit(r);
  EXPECT_EQ(s.error, SubmitError::kInvalid);
  EXPECT_NE(s.message.find("temp"), std::string::npos) << s.message;
  r.sampling = greedy();
  for (int32_t n : {-2, 21}) {
    r.top_logprobs = n;
    s = engine.submit(r);
    EXPECT_EQ(s.error, SubmitError::kInvalid);
    EXPECT_NE(s.message.find("top_logprobs"), std::string::npos) << s.message;
  }
  r.top_logprobs = 20;
  r.max_tokens = 2;
  EXPECT_EQ(collect(*submit_ok(engine, r)).ids.size(), 2u);

  engine.shutdown();
  s = engine.submit(r);
  EXPECT_EQ(s.error, SubmitError::kShuttingDown);
  EXPECT_FALSE(s.message.empty());
  engine.shutdown();  // idempotent
}

// A constraint that allows only a fixed token sequence: the request produces exactly it, then
// ends with finish stop without sampling more; logprobs stay those of the unmasked logits.
TEST(Engine, ATokenConstraintIsFollowedAndEndsTheRequest) {
  Metrics metrics;
  EngineOptions opt;
  opt.max_context = kContext;
  Engine engine(tiny(), nullptr, opt, &metrics);
  const std::vector<int32_t> forced = {5, 17, 300, 42, 42};
  auto constraint = std::make_shared<ForcedTokens>(forced);
  GenerationRequest r;
  r.prompt = prompt_for(9, 10);
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 77;
  r.max_tokens = 50;
  r.top_logprobs = 1;
  r.constraint = constraint;
  const Outcome got = collect(*submit_ok(engine, r));
  EXPECT_EQ(got.ids, forced);
  EXPECT_EQ(got.finish.finish, FinishReason::kStop);
  EXPECT_EQ(got.finish.completion_tokens, 5);
  EXPECT_EQ(constraint->masks, 5);
  ASSERT_EQ(got.tokens.size(), 5u);
  auto session = tiny().new_session(kContext);
  std::vector<float> logits;
  ASSERT_TRUE(tiny().forward(*session, r.prompt, {}, &logits).ok());
  EXPECT_FLOAT_EQ(got.tokens[0].logprob, sample::Sampler::logprob_of(logits, 5));
  EXPECT_LT(got.tokens[0].logprob, 0.0f);
}

TEST(Engine, CancellingARunningRequestEndsItSoon) {
  Metrics metrics;
  EngineOptions opt;
  opt.max_context = kContext;
  Engine engine(tiny(), nullptr, opt, &metrics);
  auto s = submit_ok(engine, slow_request(1));
  auto other = submit_ok(engine, slow_request(2));
  std::vector<EngineEvent> events;
  const auto deadline = Clock::now() + 10s;
  while (events.empty() && Clock::now() < deadline) s->take(&events, 20ms);
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(std::holds_alternative<TokenEvent>(events[0]));
  const auto t0 = Clock::now();
  s->cancel();
  const Outcome got = collect(*s, 5s);
  EXPECT_LT(Clock::now() - t0, 2s);
  EXPECT_EQ(got.finish.finish, FinishReason::kCancelled);
  EXPECT_TRUE(wait_for_stats(engine, [](const Engine::Stats& st) { return st.running == 1; }));
  other->cancel();
  EXPECT_EQ(collect(*other, 5s).finish.finish, FinishReason::kCancelled);
  EXPECT_TRUE(wait_for_stats(engine, [](const Engine::Stats& st) { return st.running == 0; }));
  EXPECT_NE(metrics.prometheus_text().find("dseek_request_finish_total{reason=\"cancelled\"} 2\n"), std::string::npos);
}

// parallel 1, max_queue 2: one running, two waiting, the next is refused; shutdown then ends
// all three promptly with finish cancelled.
TEST(Engine, AFullQueueRefusesAndShutdownCancelsEverything) {
  Metrics metrics;
  EngineOptions opt;
  opt.parallel = 1;
  opt.max_queue = 2;
  opt.max_context = kContext;
  Engine engine(tiny(), nullptr, opt, &metrics);
  auto running = submit_ok(engine, slow_request(1));
  ASSERT_TRUE(wait_for_stats(engine, [](const Engine::Stats& s) { return s.running == 1 && s.queued == 0; }));
  auto q1 = submit_ok(engine, slow_request(2));
  auto q2 = submit_ok(engine, slow_request(3));
  SubmitResult full = engine.submit(slow_request(4));
  EXPECT_EQ(full.error, SubmitError::kQueueFull);
  EXPECT_NE(full.message.find("queue"), std::string::npos) << full.message;
  EXPECT_EQ(engine.stats().queued, 2);

  const auto t0 = Clock::now();
  engine.shutdown();
  EXPECT_LT(Clock::now() - t0, 2s);
  for (auto* s : {&running, &q1, &q2}) {
    const Outcome o = collect(**s, 1s);
    EXPECT_EQ(o.finish.finish, FinishReason::kCancelled);
  }
  const Engine::Stats st = engine.stats();
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.queued, 0);
}

// Streams nobody reads do not hold the engine up: destroying it ends every request, and the
// streams (still owned here) then hold their events up to the FinishEvent.
TEST(Engine, DestroyingTheEngineWithUnreadStreamsDoesNotHang) {
  Metrics metrics;
  std::vector<std::shared_ptr<RequestStream>> streams;
  const auto t0 = Clock::now();
  {
    EngineOptions opt;
    opt.parallel = 2;
    opt.max_context = kContext;
    Engine engine(tiny(), nullptr, opt, &metrics);
    for (int i = 0; i < 4; ++i) streams.push_back(submit_ok(engine, slow_request(i)));
    GenerationRequest quick;
    quick.prompt = prompt_for(50, 6);
    quick.sampling = greedy();
    quick.max_tokens = 3;
    streams.push_back(submit_ok(engine, quick));
    std::this_thread::sleep_for(30ms);
  }
  EXPECT_LT(Clock::now() - t0, 3s);
  for (auto& s : streams) {
    const Outcome o = collect(*s, 1s);
    EXPECT_TRUE(o.finished);
  }
}

// An idle engine sleeps: no steps run while nothing is queued or running.
TEST(Engine, AnIdleEngineRunsNoSteps) {
  Metrics metrics;
  EngineOptions opt;
  opt.max_context = kContext;
  Engine engine(tiny(), nullptr, opt, &metrics);
  GenerationRequest r;
  r.prompt = prompt_for(1, 4);
  r.sampling = greedy();
  r.max_tokens = 3;
  EXPECT_EQ(collect(*submit_ok(engine, r)).ids.size(), 3u);
  ASSERT_TRUE(wait_for_stats(engine, [](const Engine::Stats& s) { return s.running == 0; }));
  const int64_t steps = engine.stats().steps;
  EXPECT_EQ(steps, 3);  // the prompt, then the first two tokens (the third is not fed)
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(engine.stats().steps, steps);
  EXPECT_EQ(metrics.steps(), steps);
}

// A request whose prompt starts like an earlier one's adopts the earlier request's full cache
// pages (16 tokens each) instead of computing them, and still gets the Generator's tokens.
TEST(Engine, ASharedPromptPrefixIsReusedNotRecomputed) {
  Metrics metrics;
  EngineOptions opt;
  opt.max_context = kContext;
  opt.prefill_chunk = 16;
  Engine engine(tiny(), nullptr, opt, &metrics);
  GenerationRequest first;
  first.prompt = prompt_for(7, 64);
  first.sampling = greedy();
  first.max_tokens = 5;
  const Outcome a = collect(*submit_ok(engine, first));
  EXPECT_EQ(a.finish.cached_tokens, 0);
  EXPECT_EQ(a.ids, alone(first, nullptr, opt.prefill_chunk).tokens);

  GenerationRequest second = first;  // the same 50 leading tokens, then another tail
  second.prompt.resize(50);
  const std::vector<int32_t> tail = prompt_for(8, 20);
  second.prompt.insert(second.prompt.end(), tail.begin(), tail.end());
  const Outcome b = collect(*submit_ok(engine, second));
  EXPECT_EQ(b.finish.cached_tokens, 48);  // three full pages of the shared 50 tokens
  EXPECT_EQ(b.ids, alone(second, nullptr, opt.prefill_chunk).tokens);

  const Outcome again = collect(*submit_ok(engine, first));  // the whole prompt but its last token
  EXPECT_EQ(again.finish.cached_tokens, 63);
  EXPECT_EQ(again.ids, a.ids);
  ASSERT_TRUE(wait_for_stats(engine, [](const Engine::Stats& s) { return s.running == 0; }));
  EXPECT_EQ(engine.stats().kv_pages_used, 0);
  EXPECT_GT(engine.stats().kv_pages_cached, 0);  // kept for later requests, evictable
}

// A cache too small for everyone: 6 pages of 16 tokens for 4 requests that each grow to 50
// tokens. The newest sequences are preempted and later recompute their prompt and what they
// had generated; every request still gets exactly the Generator's tokens.
TEST(Engine, PreemptedSequencesResumeWithUnchangedOutput) {
  Metrics metrics;
  EngineOptions opt;
  opt.parallel = 4;
  opt.kv_tokens = 96;
  opt.max_context = 96;
  opt.prefill_chunk = 16;
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 4; ++i) {
    GenerationRequest r;
    r.prompt = prompt_for(200 + i, 20);
    r.sampling = greedy();
    r.max_tokens = 30;
    reqs.push_back(r);
  }
  Engine engine(tiny(), nullptr, opt, &metrics);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& r : reqs) streams.push_back(submit_ok(engine, r));
  for (size_t i = 0; i < reqs.size(); ++i) {
    const Outcome got = collect(*streams[i]);
    EXPECT_TRUE(got.finish.error.ok()) << got.finish.error.message();
    EXPECT_EQ(got.ids, alone(reqs[i], nullptr, opt.prefill_chunk, 96).tokens) << "request " << i;
    EXPECT_EQ(got.finish.completion_tokens, 30);
  }
  const std::string text = metrics.prometheus_text();
  const std::string name = "\ndseek_preemptions_total ";
  const size_t at = text.find(name);
  ASSERT_NE(at, std::string::npos);
  EXPECT_GT(std::stoll(text.substr(at + name.size())), 0) << "the pool was never short: the test does not test";
  EXPECT_GT(metrics.max_batch_sequences(), 1);
}

// Checkpoints pad the vocabulary past the tokenizer (DeepSeek-V3: 129280 embedding rows, 128815
// tokens): ids without text are never generated.
TEST(Engine, IdsTheTokenizerCannotDecodeAreRuledOut) {
  const tokenizer::Tokenizer& tok = v3_tokenizer();
  const std::vector<int32_t> ids = runtime::ids_without_text(tok, 129280);
  ASSERT_EQ(ids.size(), 129280u - tok.vocab_size());
  for (int32_t id : ids) EXPECT_EQ(tok.token_bytes(id), nullptr);
  EXPECT_EQ(ids.front(), static_cast<int32_t>(tok.vocab_size()));
  std::vector<float> logits(129280, 1.0f);
  runtime::forbid_ids(logits, ids);
  EXPECT_EQ(std::count(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity()),
            static_cast<ptrdiff_t>(ids.size()));
  EXPECT_EQ(logits[tok.vocab_size() - 1], 1.0f);
}

TEST(RequestStream, TakeReturnsFalseWithTheFinishEventAndAfter) {
  RequestStream s;
  std::vector<EngineEvent> out;
  EXPECT_TRUE(s.take(&out, 1ms));  // nothing yet: times out
  EXPECT_TRUE(out.empty());
  s.push(TokenEvent{3, "a", 0, {}});
  EXPECT_TRUE(s.take(&out, 1ms));
  ASSERT_EQ(out.size(), 1u);
  s.push(TokenEvent{4, "b", 0, {}});
  s.push(FinishEvent{});
  s.push(TokenEvent{5, "late", 0, {}});  // ignored: nothing follows the FinishEvent
  out.clear();
  EXPECT_FALSE(s.take(&out, 1ms));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<FinishEvent>(out[1]));
  out.clear();
  EXPECT_FALSE(s.take(&out, 1ms));
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace dseek::serve
