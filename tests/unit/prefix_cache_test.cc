// Sessions on one shared page pool (the server's setup): a session whose prompt starts like an
// earlier session's adopts that session's published pages (Session::reuse_prefix) and then
// computes exactly what a fresh private session computes for the whole prompt (logits and
// greedy tokens), without disturbing the session it shares pages with; a full pool fails a
// batch before any work; destroyed sessions give their pages back. On the golden fixtures
// (tiny-v32: the indexer's FP8 keys live in the pages too).
#include <algorithm>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "../golden/test_util.h"
#include "model_fixtures.h"
#include "model/deepseek.h"
#include "ops/ops.h"
#include "runtime/generator.h"

namespace dseek::model {
namespace {

using dseek::testing::golden_dir;
using dseek::testing::relative_error;

constexpr double kTolerance = 1e-5;  // of max |logit| of the fresh private session
constexpr int64_t kPage = 16;

std::unique_ptr<Model> load(const std::string& name) { return dseek::testing::load_golden_model(name); }

// Deterministic token ids in [0, V).
std::vector<int32_t> tokens_for(int64_t seed, int64_t n, int64_t V) {
  return dseek::testing::lcg_tokens(0x2545F4914F6CDD1Dull * static_cast<uint64_t>(seed + 3), n, V);
}

std::span<const int32_t> slice(const std::vector<int32_t>& v, size_t from, size_t n) {
  return std::span<const int32_t>(v).subspan(from, n);
}

// Greedy tokens after `logits` (the last row), feeding each one back: n tokens.
std::vector<int32_t> greedy(const Model& m, Session& s, std::vector<float> logits, int n) {
  const int64_t V = m.config().vocab_size;
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(static_cast<int32_t>(ops::argmax(logits.data() + logits.size() - V, V)));
    EXPECT_TRUE(m.forward(s, std::span(&out.back(), 1), {}, &logits).ok());
  }
  return out;
}

// The last n rows of [T, V] logits.
std::vector<float> last_rows(const std::vector<float>& logits, int64_t n, int64_t V) {
  return std::vector<float>(logits.end() - n * V, logits.end());
}

// What a failed call must leave as it was.
struct PoolState {
  int64_t in_use, cached, available;
  bool operator==(const PoolState&) const = default;
};
PoolState state(const kv::PagePool& pool) { return {pool.usage().in_use, pool.usage().cached, pool.available()}; }

class PrefixCache : public ::testing::TestWithParam<std::string> {};

// Session 1 feeds a 45-token prompt (pages [0, 16) and [16, 32) full and published). Session 2's
// prompt shares its first 40 tokens: it adopts the two full pages (32 tokens) and computes the
// rest; its logits and greedy continuation equal those of a fresh private session fed the
// whole prompt. Session 1, whose pages session 2 reads, keeps computing what it computes
// alone.
TEST_P(PrefixCache, AdoptedPagesGiveTheLogitsOfAFullPrefill) {
  auto m = load(GetParam());
  ASSERT_TRUE(m);
  const int64_t V = m->config().vocab_size;
  const std::vector<int32_t> first = tokens_for(1, 45, V);
  std::vector<int32_t> second(first.begin(), first.begin() + 40);
  for (int32_t t : tokens_for(2, 12, V)) second.push_back(t);
  second[40] = (first[40] + 1) % static_cast<int32_t>(V);  // they really differ at position 40

  auto pool = m->new_page_pool(256, kPage);
  auto s1 = m->new_session(pool, 128);
  auto twin1 = m->new_session(128);  // private: nothing shared
  std::vector<float> got, want;
  ASSERT_TRUE(m->forward(*s1, first, {}, &got).ok());
  ASSERT_TRUE(m->forward(*twin1, first, {}, &want).ok());
  EXPECT_EQ(pool->usage().in_use, 3);

  auto s2 = m->new_session(pool, 128);
  EXPECT_EQ(s2->reuse_prefix(second), 32);
  EXPECT_EQ(s2->length(), 32);
  EXPECT_EQ(s2->tokens(), std::vector<int32_t>(second.begin(), second.begin() + 32));
  EXPECT_EQ(s2->cache().pages()[0], s1->cache().pages()[0]);
  EXPECT_EQ(s2->cache().pages()[1], s1->cache().pages()[1]);
  EXPECT_EQ(pool->usage().in_use, 3);  // shared, not copied

  const ForwardOptions all{AttentionForm::kAuto, true};
  ASSERT_TRUE(m->forward(*s2, slice(second, 32, second.size() - 32), all, &got).ok());
  auto fresh = m->new_session(128);
  ASSERT_TRUE(m->forward(*fresh, second, all, &want).ok());
  EXPECT_LE(relative_error(got, last_rows(want, static_cast<int64_t>(second.size()) - 32, V)), kTolerance);
  EXPECT_EQ(greedy(*m, *s2, got, 8), greedy(*m, *fresh, want, 8));

  // Session 1 continues as if alone.
  const std::vector<int32_t> more = tokens_for(3, 20, V);
  ASSERT_TRUE(m->forward(*s1, more, all, &got).ok());
  ASSERT_TRUE(m->forward(*twin1, more, all, &want).ok());
  EXPECT_LE(relative_error(got, want), kTolerance);
}

// A prompt that is exactly the two published pages: the generator adopts them, then feeds the
// last token again for its logits, which means writing inside the shared second page. It gets
// a private copy (copy-on-write), and the session that published the page is undisturbed.
TEST_P(PrefixCache, GeneratorRefeedsTheLastTokenInACopyOfTheSharedPage) {
  auto m = load(GetParam());
  ASSERT_TRUE(m);
  const int64_t V = m->config().vocab_size;
  const std::vector<int32_t> first = tokens_for(4, 40, V);
  const std::vector<int32_t> prompt(first.begin(), first.begin() + 32);
  auto pool = m->new_page_pool(256, kPage);
  auto s1 = m->new_session(pool, 128);
  auto twin1 = m->new_session(128);
  std::vector<float> got, want;
  ASSERT_TRUE(m->forward(*s1, first, {}, &got).ok());
  ASSERT_TRUE(m->forward(*twin1, first, {}, &want).ok());

  const runtime::Generator gen(*m, nullptr);
  auto s2 = m->new_session(pool, 128);
  int64_t cached = -1;
  ASSERT_TRUE(gen.prefill(*s2, prompt, 512, &got, &cached).ok());
  EXPECT_EQ(cached, 31);
  EXPECT_EQ(s2->cache().pages()[0], s1->cache().pages()[0]);
  EXPECT_NE(s2->cache().pages()[1], s1->cache().pages()[1]);
  auto fresh = m->new_session(128);
  ASSERT_TRUE(gen.prefill(*fresh, prompt, 512, &want, &cached).ok());
  EXPECT_EQ(cached, 0);
  EXPECT_LE(relative_error(got, want), kTolerance);
  EXPECT_EQ(greedy(*m, *s2, got, 8), greedy(*m, *fresh, want, 8));

  const std::vector<int32_t> more = tokens_for(5, 6, V);
  ASSERT_TRUE(m->forward(*s1, more, {AttentionForm::kAuto, true}, &got).ok());
  ASSERT_TRUE(m->forward(*twin1, more, {AttentionForm::kAuto, true}, &want).ok());
  EXPECT_LE(relative_error(got, want), kTolerance);
}

// A batch whose sequences together need more pages than the shared pool has fails before any
// work ("KV cache full"), leaving every session and the pool as they were; a batch that fits
// then gives the logits of private twins that never saw the failed call.
TEST_P(PrefixCache, PoolFullFailsTheBatchAndChangesNothing) {
  auto m = load(GetParam());
  ASSERT_TRUE(m);
  const int64_t V = m->config().vocab_size;
  auto pool = m->new_page_pool(3 * kPage, kPage);  // 3 pages
  const std::vector<int32_t> a = tokens_for(6, 24, V), b = tokens_for(7, 24, V);
  auto sa = m->new_session(pool, 64), sb = m->new_session(pool, 64);
  auto ta = m->new_session(64), tb = m->new_session(64);
  std::vector<float> scratch;
  for (auto [s, t] : {std::pair{sa.get(), &a}, {ta.get(), &a}})
    ASSERT_TRUE(m->forward(*s, slice(*t, 0, 20), {}, &scratch).ok());  // 2 pages
  for (auto [s, t] : {std::pair{sb.get(), &b}, {tb.get(), &b}})
    ASSERT_TRUE(m->forward(*s, slice(*t, 0, 10), {}, &scratch).ok());  // 1 page
  EXPECT_EQ(pool->available(), 0);

  const PoolState before = state(*pool);
  std::vector<Session*> sessions = {sa.get(), sb.get()};
  std::vector<std::vector<float>> out;
  // Sequence a fits in its page (20 -> 21), b needs a second page (10 -> 17).
  Status st = m->forward_batch(sessions, std::vector{slice(a, 20, 1), slice(b, 10, 7)}, {}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("KV cache full: 1 pages needed, 0 available"), std::string::npos) << st.message();
  EXPECT_EQ(sa->length(), 20);
  EXPECT_EQ(sb->length(), 10);
  EXPECT_EQ(sa->tokens(), std::vector<int32_t>(a.begin(), a.begin() + 20));
  EXPECT_EQ(sb->tokens(), std::vector<int32_t>(b.begin(), b.begin() + 10));
  EXPECT_EQ(state(*pool), before);

  const ForwardOptions all{AttentionForm::kAuto, true};
  const std::vector<std::span<const int32_t>> good = {slice(a, 20, 4), slice(b, 10, 6)};
  ASSERT_TRUE(m->forward_batch(sessions, good, all, &out).ok());
  // The twins as the same batch: equal bit for bit (single calls would differ in summation order).
  std::vector<std::vector<float>> want;
  ASSERT_TRUE(m->forward_batch(std::vector<Session*>{ta.get(), tb.get()}, good, all, &want).ok());
  EXPECT_EQ(out[0], want[0]);
  EXPECT_EQ(out[1], want[1]);
}

// Destroying a session returns its pages: the pool's in-use count goes back, its full pages
// stay cached, and a later session adopts them, even after every other user of the pool is
// gone (the sessions keep the pool alive).
TEST_P(PrefixCache, DestroyedSessionsReturnTheirPages) {
  auto m = load(GetParam());
  ASSERT_TRUE(m);
  const int64_t V = m->config().vocab_size;
  auto pool = m->new_page_pool(8 * kPage, kPage);
  const std::vector<int32_t> prompt = tokens_for(8, 40, V);
  auto keep = m->new_session(pool, 64);
  std::vector<float> got, want;
  ASSERT_TRUE(m->forward(*keep, slice(prompt, 0, 5), {}, &got).ok());
  EXPECT_EQ(pool->usage().in_use, 1);
  {
    auto s = m->new_session(pool, 64);
    ASSERT_TRUE(m->forward(*s, prompt, {}, &got).ok());
    EXPECT_EQ(pool->usage().in_use, 4);
  }
  EXPECT_EQ(pool->usage().in_use, 1);
  EXPECT_EQ(pool->usage().cached, 2);  // the two full pages, published
  EXPECT_EQ(pool->available(), 7);

  auto later = m->new_session(pool, 64);
  pool.reset();  // only the sessions hold the pool now
  keep.reset();
  EXPECT_EQ(later->reuse_prefix(prompt), 32);
  ASSERT_TRUE(m->forward(*later, slice(prompt, 32, 8), {}, &got).ok());
  auto fresh = m->new_session(64);
  ASSERT_TRUE(m->forward(*fresh, prompt, {}, &want).ok());
  EXPECT_LE(relative_error(got, want), kTolerance);
  EXPECT_EQ(later->cache().pool().usage().in_use, 3);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PrefixCache, ::testing::Values("tiny-v3", "tiny-v2lite", "tiny-v32"),
                         testing::FixtureName());

}  // namespace
}  // namespace dseek::model
