// Batched forward (Model::forward_batch): several independent sequences in one pass give each
// sequence the logits it gets alone, whatever the mix (a prefill chunk at p0 > 0, single
// decode tokens, a fresh prompt, prefills long enough for the naive form beside decodes),
// greedy sequences stepped together (joining and leaving the batch, as continuous batching
// does) produce exactly the tokens they produce one at a time, and an error in any sequence
// leaves every session untouched. On the four golden fixtures, for each attention form.
#include <algorithm>
#include <cmath>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "../golden/test_util.h"
#include "model_fixtures.h"
#include "model/deepseek.h"
#include "ops/ops.h"

namespace dseek::model {
namespace {

using dseek::testing::golden_dir;
using dseek::testing::relative_error;

constexpr double kBatchTolerance = 1e-5;  // of max |logit| of the sequence run alone

std::unique_ptr<Model> load(const std::string& name) { return dseek::testing::load_golden_model(name); }

// Deterministic token ids in [0, V).
std::vector<int32_t> tokens_for(int64_t seed, int64_t n, int64_t V) {
  return dseek::testing::lcg_tokens(0x9E3779B97F4A7C15ull * static_cast<uint64_t>(seed + 1), n, V);
}

std::span<const int32_t> slice(const std::vector<int32_t>& v, size_t from, size_t n) {
  return std::span<const int32_t>(v).subspan(from, n);
}

using Param = std::tuple<std::string, AttentionForm>;

class Batch : public ::testing::TestWithParam<Param> {};

// One batch mixing: a prefill chunk at p0 = 10, two single decode tokens at different
// positions (one past tiny-v32's index_topk of 8, so its indexer really selects), a fresh
// 7-token prompt, and a fresh 70-token prompt (the naive form under kAuto, beside absorbed
// decodes). Each sequence's logits (all rows and last row only) equal those of a twin session
// fed the same tokens alone; a second batched step, on the caches the first one wrote, too.
TEST_P(Batch, MixedBatchEqualsEachSequenceAlone) {
  const auto [name, form] = GetParam();
  auto m = load(name);
  ASSERT_TRUE(m);
  const int64_t V = m->config().vocab_size;
  struct Seq {
    std::vector<int32_t> tokens;
    size_t history;  // fed before the batch
    size_t feed;     // fed in the batch
  };
  const std::vector<Seq> seqs = {{tokens_for(1, 40, V), 10, 20},
                                 {tokens_for(2, 30, V), 23, 1},
                                 {tokens_for(3, 6, V), 4, 1},
                                 {tokens_for(4, 8, V), 0, 7},
                                 {tokens_for(5, 71, V), 0, 70}};
  for (bool all_logits : {true, false}) {
    const ForwardOptions opt{form, all_logits};
    std::vector<std::unique_ptr<Session>> batched, alone;
    std::vector<float> scratch;
    for (const Seq& s : seqs) {
      batched.push_back(m->new_session(128));
      alone.push_back(m->new_session(128));
      if (s.history == 0) continue;
      ASSERT_TRUE(m->forward(*batched.back(), slice(s.tokens, 0, s.history), opt, &scratch).ok());
      ASSERT_TRUE(m->forward(*alone.back(), slice(s.tokens, 0, s.history), opt, &scratch).ok());
    }
    // Step 1: the mixed batch. Step 2: every sequence decodes its next token together.
    for (int step = 0; step < 2; ++step) {
      std::vector<Session*> sessions;
      std::vector<std::span<const int32_t>> feeds;
      for (size_t i = 0; i < seqs.size(); ++i) {
        const Seq& s = seqs[i];
        sessions.push_back(batched[i].get());
        feeds.push_back(step == 0 ? slice(s.tokens, s.history, s.feed) : slice(s.tokens, s.history + s.feed, 1));
      }
      std::vector<std::vector<float>> got;
      const Status st = m->forward_batch(sessions, feeds, opt, &got);
      ASSERT_TRUE(st.ok()) << st.message();
      ASSERT_EQ(got.size(), seqs.size());
      for (size_t i = 0; i < seqs.size(); ++i) {
        std::vector<float> want;
        ASSERT_TRUE(m->forward(*alone[i], feeds[i], opt, &want).ok());
        ASSERT_EQ(got[i].size(), static_cast<size_t>((all_logits ? feeds[i].size() : 1) * V));
        EXPECT_LE(relative_error(got[i], want), kBatchTolerance)
            << name << " sequence " << i << " step " << step << " all_logits " << all_logits;
        EXPECT_EQ(batched[i]->length(), alone[i]->length());
        EXPECT_EQ(batched[i]->tokens(), alone[i]->tokens());
      }
    }
  }
}

// 16 greedy sequences with prompts of 1..31 tokens, run as continuous batching runs them:
// sequence i joins at step i / 3 (its whole prompt prefilled in the same batch as the others'
// decode tokens), generates kSteps tokens, and leaves. Every sequence produces exactly the
// tokens it produces alone.
TEST_P(Batch, SixteenGreedySequencesSteppedTogetherMatchOneAtATime) {
  const auto [name, form] = GetParam();
  auto m = load(name);
  ASSERT_TRUE(m);
  const int64_t V = m->config().vocab_size;
  constexpr int kSeqs = 16, kSteps = 10;
  const ForwardOptions opt{form, false};
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < kSeqs; ++i) prompts.push_back(tokens_for(100 + i, 1 + (i * 7) % 31, V));

  // One at a time.
  std::vector<std::vector<int32_t>> want(kSeqs);
  for (int i = 0; i < kSeqs; ++i) {
    auto s = m->new_session(64);
    std::vector<float> row;
    ASSERT_TRUE(m->forward(*s, prompts[i], opt, &row).ok());
    for (int g = 0; g < kSteps; ++g) {
      want[i].push_back(static_cast<int32_t>(ops::argmax(row.data(), V)));
      if (g + 1 < kSteps) {
        ASSERT_TRUE(m->forward(*s, std::span(&want[i].back(), 1), opt, &row).ok());
      }
    }
  }

  // Together.
  std::vector<std::unique_ptr<Session>> sessions(kSeqs);
  std::vector<std::vector<int32_t>> got(kSeqs);
  size_t max_batch = 0;
  for (int step = 0;; ++step) {
    std::vector<int> active;
    std::vector<Session*> batch;
    std::vector<std::span<const int32_t>> feeds;
    for (int i = 0; i < kSeqs; ++i) {
      if (step < i / 3 || static_cast<int>(got[i].size()) == kSteps) continue;
      if (!sessions[i]) sessions[i] = m->new_session(64);
      active.push_back(i);
      batch.push_back(sessions[i].get());
      feeds.push_back(got[i].empty() ? std::span<const int32_t>(prompts[i]) : std::span(&got[i].back(), 1));
    }
    if (active.empty()) break;
    max_batch = std::max(max_batch, active.size());
    std::vector<std::vector<float>> rows;
    const Status st = m->forward_batch(batch, feeds, opt, &rows);
    ASSERT_TRUE(st.ok()) << st.message();
    for (size_t k = 0; k < active.size(); ++k)
      got[active[k]].push_back(static_cast<int32_t>(ops::argmax(rows[k].data(), V)));
  }
  EXPECT_GE(max_batch, 12u);  // the batch really held many sequences at once
  for (int i = 0; i < kSeqs; ++i) EXPECT_EQ(got[i], want[i]) << name << " sequence " << i;
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, Batch,
    ::testing::Combine(::testing::Values("tiny-v3", "tiny-v3-fp8", "tiny-v2lite", "tiny-v32"),
                       ::testing::Values(AttentionForm::kAuto, AttentionForm::kNaive, AttentionForm::kAbsorbed)),
    testing::FixtureFormName());

// Snapshot of what a session holds, to check that a failed batch changed nothing.
struct Snapshot {
  int64_t length;
  std::vector<int32_t> tokens;
  bool operator==(const Snapshot&) const = default;
};
Snapshot snap(const Session& s) { return {s.length(), s.tokens()}; }

class BatchErrors : public ::testing::TestWithParam<std::string> {};

// A bad token id or a full context in any one sequence fails the whole call before any work:
// every session keeps its length and tokens, and the next good batch gives the logits of twin
// sessions that never saw the failed call (so no cache row was disturbed either).
TEST_P(BatchErrors, AnErrorInOneSequenceLeavesEverySessionUntouched) {
  auto m = load(GetParam());
  ASSERT_TRUE(m);
  const int64_t V = m->config().vocab_size;
  const ForwardOptions opt{AttentionForm::kAuto, true};
  const auto a = tokens_for(7, 12, V), b = tokens_for(8, 12, V), c = tokens_for(9, 12, V);
  std::vector<std::unique_ptr<Session>> s, twin;
  std::vector<float> scratch;
  for (const auto* t : {&a, &b, &c}) {
    s.push_back(m->new_session(12));
    twin.push_back(m->new_session(12));
    ASSERT_TRUE(m->forward(*s.back(), slice(*t, 0, 9), opt, &scratch).ok());
    ASSERT_TRUE(m->forward(*twin.back(), slice(*t, 0, 9), opt, &scratch).ok());
  }
  std::vector<Session*> sessions = {s[0].get(), s[1].get(), s[2].get()};
  std::vector<Snapshot> before;
  for (auto* x : sessions) before.push_back(snap(*x));
  auto expect_untouched = [&](const char* what) {
    for (size_t i = 0; i < sessions.size(); ++i) EXPECT_TRUE(snap(*sessions[i]) == before[i]) << what << " " << i;
  };
  std::vector<std::vector<float>> out;

  // Token id out of range in the last sequence (the others are fine and come first).
  const std::vector<int32_t> bad_id = {5, static_cast<int32_t>(V)}, negative = {-1};
  Status st = m->forward_batch(sessions, std::vector{slice(a, 9, 2), slice(b, 9, 1), std::span<const int32_t>(bad_id)},
                               opt, &out);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("sequence 2"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("outside the vocabulary"), std::string::npos) << st.message();
  expect_untouched("bad token id");
  st = m->forward_batch(sessions, std::vector{std::span<const int32_t>(negative), slice(b, 9, 1), slice(c, 9, 1)}, opt,
                        &out);
  EXPECT_FALSE(st.ok());
  expect_untouched("negative token id");

  // Context full in the middle sequence: 9 cached + 4 new > 12.
  st = m->forward_batch(sessions, std::vector{slice(a, 9, 1), slice(b, 8, 4), slice(c, 9, 1)}, opt, &out);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("context full"), std::string::npos) << st.message();
  expect_untouched("context full");

  // Malformed batches: an empty feed, counts that differ, the same session twice, no sessions.
  st = m->forward_batch(sessions, std::vector{slice(a, 9, 1), slice(b, 9, 0), slice(c, 9, 1)}, opt, &out);
  EXPECT_FALSE(st.ok());
  st = m->forward_batch(sessions, std::vector{slice(a, 9, 1), slice(b, 9, 1)}, opt, &out);
  EXPECT_FALSE(st.ok());
  std::vector<Session*> twice = {s[0].get(), s[1].get(), s[0].get()};
  st = m->forward_batch(twice, std::vector{slice(a, 9, 1), slice(b, 9, 1), slice(a, 10, 1)}, opt, &out);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("same session"), std::string::npos) << st.message();
  st = m->forward_batch({}, {}, opt, &out);
  EXPECT_FALSE(st.ok());
  expect_untouched("malformed batch");

  // The failed calls disturbed nothing: the same good batch on the sessions and on their twins
  // gives the same logits bit for bit. (Both as one batch: the matrix kernels' summation order
  // depends on the number of tokens in a call, so a batch and single calls agree only to ~1e-6.)
  std::vector<std::span<const int32_t>> good = {slice(a, 9, 3), slice(b, 9, 1), slice(c, 9, 2)};
  ASSERT_TRUE(m->forward_batch(sessions, good, opt, &out).ok());
  std::vector<std::vector<float>> want;
  ASSERT_TRUE(m->forward_batch(std::vector<Session*>{twin[0].get(), twin[1].get(), twin[2].get()}, good, opt, &want).ok());
  for (size_t i = 0; i < sessions.size(); ++i) EXPECT_EQ(out[i], want[i]) << "sequence " << i;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BatchErrors, ::testing::Values("tiny-v3", "tiny-v2lite", "tiny-v32"),
                         testing::FixtureName());

// Sessions are not mixable across models: a batch may hold only sessions made for this model's
// shapes (layers, latent width, indexer width). A session of another shape is refused, and the
// call leaves the batch's other sessions untouched.
TEST(BatchErrors, SessionsOfAnotherModelShapeAreRefused) {
  auto v3 = load("tiny-v3");
  auto v32 = load("tiny-v32");
  ASSERT_TRUE(v3 && v32);
  ModelConfig fewer_layers = v3->config();
  fewer_layers.num_hidden_layers -= 1;
  Session shallow(fewer_layers, 16);
  auto own = v3->new_session(16);
  auto foreign = v32->new_session(16);  // V3.2: an indexer key cache that V3 does not have
  const std::vector<int32_t> t = {1, 2, 3};
  std::vector<float> scratch;
  ASSERT_TRUE(v3->forward(*own, t, {}, &scratch).ok());
  std::vector<std::vector<float>> out;
  for (Session* other : {&shallow, foreign.get()}) {
    std::vector<Session*> batch = {own.get(), other};
    const Status st = v3->forward_batch(batch, std::vector{std::span<const int32_t>(t), std::span<const int32_t>(t)},
                                        {}, &out);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("another shape"), std::string::npos) << st.message();
    EXPECT_EQ(own->length(), 3);
    EXPECT_EQ(other->length(), 0);
  }
  // And the single-sequence path refuses them the same way.
  EXPECT_FALSE(v32->forward(*own, t, {}, &scratch).ok());
  EXPECT_EQ(own->length(), 3);
}

}  // namespace
}  // namespace dseek::model
