// The generation loop: prefix reuse gives the logits of a full prefill, greedy decoding
// reproduces DeepSeek's reference tokens, seeds make sampling repeatable, stop strings cut
// text exactly, the context limit ends generation cleanly.
#include <cstring>
#include <random>
#include <span>

#include <gtest/gtest.h>

#include "../golden/test_util.h"
#include "model/deepseek.h"
#include "runtime/generator.h"
#include "runtime/loader.h"

namespace dseek::runtime {
namespace {

using testing::golden_dir;

std::unique_ptr<model::Model> load(const std::string& name) {
  auto m = model::Model::load(golden_dir() + "/models/" + name);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return m.ok() ? std::move(m.value()) : nullptr;
}

const std::vector<int32_t> kPrompt = {26, 39, 422, 276, 50, 189, 300, 31, 467, 261, 111, 21,
                                      46, 224, 216, 37, 125, 48, 284, 219, 32, 425, 291, 65};  // golden p1

TEST(StopStringFilter, HoldsBackPossibleStopPrefixesAndCutsAtTheStop) {
  StopStringFilter f({"</end>", "STOP"});
  bool stopped = false;
  EXPECT_EQ(f.push("hello </e", &stopped), "hello ");  // "</e" may begin "</end>"
  EXPECT_FALSE(stopped);
  EXPECT_EQ(f.push("nd-ish", &stopped), "</end-ish");  // it did not
  EXPECT_FALSE(stopped);
  EXPECT_EQ(f.push(" and ST", &stopped), " and ");
  EXPECT_EQ(f.push("OP more", &stopped), "");
  EXPECT_TRUE(stopped);
  StopStringFilter g({"ab"});
  EXPECT_EQ(g.push("xa", &stopped), "x");
  EXPECT_EQ(g.finish(), "a");
}

TEST(Generator, GreedyReproducesTheReferenceContinuation) {
  auto m = load("tiny-v3");
  ASSERT_TRUE(m);
  auto expected = io::SafetensorsFile::open(golden_dir() + "/expected/tiny-v3.safetensors");
  ASSERT_TRUE(expected.ok());
  Generator gen(*m, nullptr);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_tokens = 12;
  auto session = m->new_session(64);
  auto r = gen.generate(*session, kPrompt, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->tokens, testing::read_i32(*expected.value(), "p1.greedy"));
  EXPECT_EQ(r->finish, FinishReason::kLength);
}

// A second turn reuses the cache of the first (prompt + answer) and only computes the new
// tokens; its logits equal those of prefilling the whole conversation in a fresh session.
TEST(Generator, PrefixReuseGivesTheLogitsOfAFullPrefill) {
  auto m = load("tiny-v3");
  ASSERT_TRUE(m);
  Generator gen(*m, nullptr);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_tokens = 6;
  auto session = m->new_session(128);
  auto first = gen.generate(*session, kPrompt, o, nullptr);
  ASSERT_TRUE(first.ok());
  std::vector<int32_t> conversation = kPrompt;
  conversation.insert(conversation.end(), first->tokens.begin(), first->tokens.end());
  for (int32_t t : {5, 6, 7, 8, 9}) conversation.push_back(t);  // the next user turn

  std::vector<float> reused, fresh;
  int64_t cached = 0;
  ASSERT_TRUE(gen.prefill(*session, conversation, 512, &reused, &cached).ok());
  EXPECT_EQ(cached, static_cast<int64_t>(kPrompt.size() + first->tokens.size() - 1));  // the last answer token was never fed
  auto full = m->new_session(128);
  ASSERT_TRUE(gen.prefill(*full, conversation, 512, &fresh, &cached).ok());
  EXPECT_EQ(cached, 0);
  EXPECT_LE(testing::relative_error(reused, fresh), 1e-5);

  // An edited history (diverging at token 3) recomputes from the divergence on.
  std::vector<int32_t> edited = conversation;
  edited[3] = 7;
  ASSERT_TRUE(gen.prefill(*session, edited, 512, &reused, &cached).ok());
  EXPECT_EQ(cached, 3);
  auto full_edited = m->new_session(128);
  ASSERT_TRUE(gen.prefill(*full_edited, edited, 512, &fresh, &cached).ok());
  EXPECT_LE(testing::relative_error(reused, fresh), 1e-5);
}

TEST(Generator, SameSeedSameTokensOtherSeedOtherTokens) {
  auto m = load("tiny-v2lite");
  ASSERT_TRUE(m);
  Generator gen(*m, nullptr);
  auto sample = [&](uint64_t seed) {
    GenerateOptions o;
    o.sampling.temperature = 1.5f;
    o.sampling.seed = seed;
    o.max_tokens = 24;
    auto s = m->new_session(64);
    auto r = gen.generate(*s, kPrompt, o, nullptr);
    EXPECT_TRUE(r.ok());
    return r->tokens;
  };
  EXPECT_EQ(sample(11), sample(11));
  EXPECT_NE(sample(11), sample(12));
}

TEST(Generator, StopsAtEosAndAtAFullContext) {
  auto m = load("tiny-v3");
  ASSERT_TRUE(m);
  Generator gen(*m, nullptr);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_tokens = -1;
  auto s = m->new_session(static_cast<int64_t>(kPrompt.size()) + 5);
  auto r = gen.generate(*s, kPrompt, o, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->finish, FinishReason::kContextFull);
  EXPECT_EQ(r->tokens.size(), 6u);  // 5 fed + the last one sampled

  // The golden greedy continuation of p1 begins with token g0: make it the EOS.
  auto expected = io::SafetensorsFile::open(golden_dir() + "/expected/tiny-v3.safetensors");
  const int32_t g2 = testing::read_i32(*expected.value(), "p1.greedy")[2];
  o.eos_ids = {g2};
  auto s2 = m->new_session(64);
  auto r2 = gen.generate(*s2, kPrompt, o, nullptr);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->finish, FinishReason::kStop);
  EXPECT_EQ(r2->tokens.size(), 2u);

  auto tiny = m->new_session(4);
  auto too_long = gen.generate(*tiny, kPrompt, o, nullptr);
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.status().message().find("ctx-size"), std::string::npos) << too_long.status().message();
}

// A checked load tells every matrix the forward pass uses that its elements are finite (so the
// FP8 kernels skip their NaN checks); a load without the check tells none.
TEST(LoadModel, OnlyACheckedLoadMarksTheMatricesFinite) {
  for (bool verify : {true, false}) {
    auto m = load_model(golden_dir() + "/models/tiny-v3-fp8", {.verify = verify, .progress = false});
    ASSERT_TRUE(m.ok()) << m.status().message();
    const model::Weights& w = m.value()->weights();
    std::vector<std::pair<std::string, const ops::LinearWeight*>> used = {{"embed_tokens", &w.embed_tokens},
                                                                          {"lm_head", &w.lm_head}};
    for (size_t l = 0; l < w.layers.size(); ++l) {
      const model::LayerWeights& layer = w.layers[l];
      const model::AttentionWeights& a = layer.attn;
      const std::string p = "layer " + std::to_string(l) + " ";
      for (auto [name, lw] : {std::pair{"q_a_proj", &a.q_a_proj}, {"q_b_proj", &a.q_b_proj}, {"q_proj", &a.q_proj},
                              {"kv_a_proj_with_mqa", &a.kv_a_proj_with_mqa}, {"kv_b_proj", &a.kv_b_proj},
                              {"o_proj", &a.o_proj}, {"mlp.gate_proj", &layer.mlp.gate_proj},
                              {"mlp.down_proj", &layer.mlp.down_proj}, {"moe.gate", &layer.moe.gate},
                              {"shared.up_proj", &layer.moe.shared.up_proj}})
        used.emplace_back(p + name, lw);
      for (size_t e = 0; e < layer.moe.experts.size(); ++e)
        used.emplace_back(p + "expert " + std::to_string(e) + " down_proj", &layer.moe.experts[e].down_proj);
    }
    int bound = 0, fp8 = 0;
    for (const auto& [name, lw] : used) {
      if (lw->empty()) continue;
      ++bound;
      fp8 += lw->dtype == DType::kF8E4M3;
      EXPECT_EQ(lw->finite, verify) << name;
    }
    EXPECT_GT(bound, 20);
    EXPECT_GT(fp8, 10);  // the fixture's FP8 matrices are among them
  }
}

// The load check finds the first non-finite element exactly as an element-by-element scan of the
// same bits does: every float type, lengths around its 4096-element chunks, odd addresses, a hit
// at the start, inside, at the end or nowhere, and finite look-alikes (FP8 0x7e, max normals).
TEST(FirstNonFinite, MatchesAnElementByElementScan) {
  struct Type {
    DType dtype;
    size_t size;
    uint32_t mask, finite_max;  // the Inf/NaN exponent bits; the largest finite pattern
  };
  const Type types[] = {{DType::kBF16, 2, 0x7f80, 0x7f7f},
                        {DType::kF16, 2, 0x7c00, 0x7bff},
                        {DType::kF32, 4, 0x7f800000u, 0x7f7fffffu},
                        {DType::kF8E4M3, 1, 0x7f, 0x7e}};
  std::mt19937 rng(3);
  for (const Type& ty : types) {
    for (int64_t n : {0, 1, 7, 4095, 4096, 4097, 9000}) {
      for (int64_t bad : {int64_t{-1}, int64_t{0}, n / 2, n - 1, int64_t{4096}}) {
        if (bad >= n) continue;
        std::vector<uint8_t> buf(static_cast<size_t>(n) * ty.size + 1);
        uint8_t* p = buf.data() + 1;  // odd address
        for (int64_t i = 0; i < n; ++i) {
          // Random finite patterns, often the largest finite one.
          uint32_t v = rng() % 3 == 0 ? ty.finite_max : static_cast<uint32_t>(rng()) & ~ty.mask;
          if (rng() % 2) v |= ty.size == 1 ? 0x80u : ty.size == 2 ? 0x8000u : 0x80000000u;  // either sign
          if (i == bad) v |= ty.mask;
          std::memcpy(p + i * ty.size, &v, ty.size);
        }
        int64_t want = -1;
        for (int64_t i = 0; i < n && want < 0; ++i) {
          uint32_t v = 0;
          std::memcpy(&v, p + i * ty.size, ty.size);
          if ((v & ty.mask) == ty.mask) want = i;
        }
        ASSERT_EQ(want, bad) << "test data";
        io::TensorView t;
        t.dtype = ty.dtype;
        t.shape = {n};
        t.data = p;
        t.nbytes = static_cast<size_t>(n) * ty.size;
        EXPECT_EQ(first_non_finite(t), want) << dtype_name(ty.dtype) << " n " << n << " bad " << bad;
      }
    }
  }
}

}  // namespace
}  // namespace dseek::runtime
