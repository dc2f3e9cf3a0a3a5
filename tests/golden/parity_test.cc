// Parity with DeepSeek's reference implementation on the four golden checkpoints
// (tests/data/golden, made by DeepSeek's inference/model.py in float32): every logits tensor
// within 1e-3 x max|reference| and identical greedy continuations, for each MLA form, for
// one prefill, prefill + decode steps, and chunked prefill.
#include <omp.h>

#include <cstdio>
#include <memory>
#include <span>

#include "cpu/compute_type.h"
#include "io/json_file.h"
#include "model/deepseek.h"
#include "model/mla.h"
#include "ops/ops.h"
#include "near_tie.h"
#include "test_util.h"

namespace dseek::testing {
namespace {

using model::AttentionForm;

struct Prompt {
  std::vector<int32_t> tokens;
  int64_t prefill, greedy;
};

std::vector<Prompt> golden_prompts() {
  auto j = io::read_json_file(golden_dir() + "/prompts.json");
  EXPECT_TRUE(j.ok()) << j.status().message();
  std::vector<Prompt> out;
  for (const auto& p : j.value())
    out.push_back({p["tokens"].get<std::vector<int32_t>>(), p["prefill"].get<int64_t>(), p["greedy"].get<int64_t>()});
  return out;
}

struct Fixture {
  std::string name;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<io::SafetensorsFile> expected;
};

Fixture load_fixture(const std::string& name) {
  Fixture f{name, nullptr, nullptr};
  auto m = model::Model::load(golden_dir() + "/models/" + name);
  EXPECT_TRUE(m.ok()) << m.status().message();
  if (m.ok()) f.model = std::move(m.value());
  auto e = io::SafetensorsFile::open(golden_dir() + "/expected/" + name + ".safetensors");
  EXPECT_TRUE(e.ok()) << e.status().message();
  if (e.ok()) f.expected = std::move(e.value());
  return f;
}

std::vector<float> prefill_logits(const model::Model& m, const std::vector<int32_t>& tokens, AttentionForm form,
                                  const std::vector<int64_t>& chunks = {}) {
  auto session = m.new_session(static_cast<int64_t>(tokens.size()));
  std::vector<float> all, part;
  size_t pos = 0;
  size_t chunk_index = 0;
  while (pos < tokens.size()) {
    size_t n = chunks.empty() ? tokens.size() : static_cast<size_t>(chunks[chunk_index++ % chunks.size()]);
    n = std::min(n, tokens.size() - pos);
    Status s = m.forward(*session, std::span(tokens.data() + pos, n), {form, true}, &part);
    EXPECT_TRUE(s.ok()) << s.message();
    all.insert(all.end(), part.begin(), part.end());
    pos += n;
  }
  return all;
}

class GoldenParity : public ::testing::TestWithParam<std::tuple<std::string, AttentionForm>> {};

// What one prompt gives: the logits of one prefill, of prefill + one-token steps, and the
// greedy continuation (argmax after the whole prompt, fed back one token at a time).
struct PromptRun {
  std::vector<float> prefill, steps;
  std::vector<int32_t> greedy;
};

PromptRun run_prompt(const model::Model& m, const Prompt& p, AttentionForm form) {
  const int64_t V = m.config().vocab_size;
  PromptRun r;
  r.prefill = prefill_logits(m, p.tokens, form);
  auto session = m.new_session(static_cast<int64_t>(p.tokens.size()));
  std::vector<float> logits;
  EXPECT_TRUE(m.forward(*session, std::span(p.tokens.data(), p.prefill), {form, false}, &logits).ok());
  r.steps = logits;
  for (size_t t = p.prefill; t < p.tokens.size(); ++t) {
    EXPECT_TRUE(m.forward(*session, std::span(p.tokens.data() + t, 1), {form, false}, &logits).ok());
    r.steps.insert(r.steps.end(), logits.begin(), logits.end());
  }
  std::vector<float> row;
  auto gen = m.new_session(static_cast<int64_t>(p.tokens.size() + p.greedy));
  EXPECT_TRUE(m.forward(*gen, p.tokens, {form, false}, &row).ok());
  for (int64_t g = 0; g < p.greedy && row.size() == static_cast<size_t>(V); ++g) {
    r.greedy.push_back(static_cast<int32_t>(ops::argmax(row.data(), V)));
    EXPECT_TRUE(m.forward(*gen, std::span(&r.greedy.back(), 1), {form, false}, &row).ok());
  }
  return r;
}

bool is_sparse(const model::Model& m) { return m.config().index_topk > 0; }

// Every prompt of a fixture in one attention form: prefill and step logits within the golden
// tolerance, greedy tokens identical.
void expect_prompts_match_reference(const std::string& name, AttentionForm form) {
  Fixture f = load_fixture(name);
  ASSERT_TRUE(f.model && f.expected);
  const auto prompts = golden_prompts();
  ASSERT_EQ(prompts.size(), 3u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const Prompt& p = prompts[i];
    const std::string key = "p" + std::to_string(i) + ".";
    ASSERT_EQ(read_i32(*f.expected, key + "tokens"), p.tokens);
    const auto want_prefill = read_f32(*f.expected, key + "prefill_logits");
    const auto want_steps = read_f32(*f.expected, key + "step_logits");
    const auto want_greedy = read_i32(*f.expected, key + "greedy");

    PromptRun r;
    auto compute = [&] { r = run_prompt(*f.model, p, form); };
    auto matches = [&] {
      return relative_error(r.prefill, want_prefill) <= kGoldenTolerance &&
             relative_error(r.steps, want_steps) <= kGoldenTolerance && r.greedy == want_greedy;
    };
    std::string flips = "none";
    if (is_sparse(*f.model)) {  // V3.2: the reference's side of FP8 near-ties (near_tie.h)
      NearTieSearch search(f.model->config().num_hidden_layers);
      flips = describe(search.run(compute, matches));
    } else {
      compute();
    }
    EXPECT_LE(relative_error(r.prefill, want_prefill), kGoldenTolerance) << name << " " << key << "prefill_logits";
    EXPECT_LE(relative_error(r.steps, want_steps), kGoldenTolerance) << name << " " << key << "step_logits";
    EXPECT_EQ(r.greedy, want_greedy) << name << " " << key << "greedy";
    if (flips != "none") std::printf("%s %s: near-tie flips to follow the reference: %s\n", name.c_str(), key.c_str(), flips.c_str());
  }
}

TEST_P(GoldenParity, PrefillStepAndGreedyMatchReference) {
  const auto [name, form] = GetParam();
  expect_prompts_match_reference(name, form);
}

// The naive (MHA) form is not run on tiny-v32: sparse layers compute in the absorbed form (as
// DeepSeek's sparse kernels do). Naive and absorbed sparse attention are compared layer by
// layer, on one selection, in model_test.
INSTANTIATE_TEST_SUITE_P(
    Fixtures, GoldenParity,
    ::testing::Values(std::make_tuple("tiny-v3", AttentionForm::kAuto), std::make_tuple("tiny-v3", AttentionForm::kNaive),
                      std::make_tuple("tiny-v3", AttentionForm::kAbsorbed),
                      std::make_tuple("tiny-v3-fp8", AttentionForm::kAuto),
                      std::make_tuple("tiny-v3-fp8", AttentionForm::kNaive),
                      std::make_tuple("tiny-v3-fp8", AttentionForm::kAbsorbed),
                      std::make_tuple("tiny-v2lite", AttentionForm::kAuto),
                      std::make_tuple("tiny-v2lite", AttentionForm::kNaive),
                      std::make_tuple("tiny-v2lite", AttentionForm::kAbsorbed),
                      std::make_tuple("tiny-v32", AttentionForm::kAuto),
                      std::make_tuple("tiny-v32", AttentionForm::kAbsorbed)),
    FixtureFormName());

// The naive form's blocked attention core (packed products a block of queries at a time) runs
// from 128 new tokens, longer than any golden prompt: forced onto them here, it is held to the
// same bar in float32 compute.
class GoldenBlockedAttention : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenBlockedAttention, NaiveFormMatchesReference) {
  const int64_t saved = model::blocked_attention_min_tokens();
  model::set_blocked_attention_min_tokens(1);
  expect_prompts_match_reference(GetParam(), AttentionForm::kNaive);
  model::set_blocked_attention_min_tokens(saved);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenBlockedAttention, ::testing::Values("tiny-v3", "tiny-v3-fp8", "tiny-v2lite"),
                         FixtureName());

class GoldenChunked : public ::testing::TestWithParam<std::string> {};

// A prompt fed in several pieces gives the logits of one prefill (and of the reference).
TEST_P(GoldenChunked, ChunkedPrefillEqualsOnePrefill) {
  Fixture f = load_fixture(GetParam());
  ASSERT_TRUE(f.model && f.expected);
  const auto prompts = golden_prompts();
  const Prompt& p = prompts[2];  // 90 tokens
  const auto want = read_f32(*f.expected, "p2.prefill_logits");
  const std::vector<std::vector<int64_t>> splits = {{7, 33, 1, 49}, {1}, {64, 26}, {89, 1}};
  std::vector<float> whole;
  std::vector<std::vector<float>> chunked(splits.size());
  auto compute = [&] {
    whole = prefill_logits(*f.model, p.tokens, AttentionForm::kAuto);
    for (size_t i = 0; i < splits.size(); ++i) chunked[i] = prefill_logits(*f.model, p.tokens, AttentionForm::kAuto, splits[i]);
  };
  auto matches = [&] {
    bool ok = relative_error(whole, want) <= kGoldenTolerance;
    for (const auto& c : chunked) ok = ok && relative_error(c, whole) <= 1e-5;
    return ok;
  };
  if (is_sparse(*f.model)) {  // V3.2: the reference's side of FP8 near-ties (near_tie.h)
    NearTieSearch search(f.model->config().num_hidden_layers);
    const auto flips = search.run(compute, matches);
    if (!flips.empty()) std::printf("near-tie flips to follow the reference: %s\n", describe(flips).c_str());
  } else {
    compute();
  }
  for (size_t i = 0; i < splits.size(); ++i) {
    EXPECT_LE(relative_error(chunked[i], whole), 1e-5) << GetParam() << " chunks of " << splits[i][0];
    EXPECT_LE(relative_error(chunked[i], want), kGoldenTolerance) << GetParam() << " chunks of " << splits[i][0];
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenChunked,
                         ::testing::Values("tiny-v3", "tiny-v3-fp8", "tiny-v2lite", "tiny-v32"),
                         FixtureName());

// BF16-compute mode (--dtype bf16: activations rounded to bfloat16 in every matrix product but
// the router's and the indexer's; on AVX512_BF16 CPUs decode runs vdpbf16ps) gives the
// reference's greedy tokens on every golden checkpoint: the bar the golden README sets for a
// faster mode. The logits error is printed, not bounded: bfloat16 keeps 8 significant bits, and
// where a perturbation that size moves a token's MoE routing across a near-tie, that token's
// logits change by up to 60% of max|reference| on these random-weight fixtures. No near-tie
// search here (near_tie.h): on every fixture, tiny-v32 included, the engine as shipped must give
// the reference's tokens.
class GoldenBf16 : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenBf16, GreedyTokensMatchReference) {
  Fixture f = load_fixture(GetParam());
  ASSERT_TRUE(f.model && f.expected);
  cpu::ScopedComputeType bf16(cpu::ComputeType::kBf16);
  const auto prompts = golden_prompts();
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string key = "p" + std::to_string(i) + ".";
    const PromptRun r = run_prompt(*f.model, prompts[i], AttentionForm::kAuto);
    std::printf("%s %s bf16 compute: logits off by %.2e (prefill), %.2e (steps) of max|reference|\n",
                GetParam().c_str(), key.c_str(), relative_error(r.prefill, read_f32(*f.expected, key + "prefill_logits")),
                relative_error(r.steps, read_f32(*f.expected, key + "step_logits")));
    EXPECT_EQ(r.greedy, read_i32(*f.expected, key + "greedy")) << GetParam() << " " << key << "greedy";
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenBf16, ::testing::Values("tiny-v3", "tiny-v3-fp8", "tiny-v2lite", "tiny-v32"),
                         FixtureName());

// Thread count must not change the result beyond float reassociation.
TEST(GoldenThreads, OneThreadMatchesReference) {
  Fixture f = load_fixture("tiny-v3");
  ASSERT_TRUE(f.model && f.expected);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto logits = prefill_logits(*f.model, golden_prompts()[2].tokens, AttentionForm::kAuto);
  omp_set_num_threads(saved);
  EXPECT_LE(relative_error(logits, read_f32(*f.expected, "p2.prefill_logits")), kGoldenTolerance);
}

}  // namespace
}  // namespace dseek::testing
