// LoRA and chat fine-tuning (issue 7): the adapter's forward/backward against central finite
// differences, B = 0 leaves the model unchanged, only the adapters learn, the chat loss mask
// covers exactly the assistant turns, a LoRA fine-tune of a tiny model (F32 and FP8 bases)
// lowers the masked loss, and merged weights give the same logits as base + adapters.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/checkpoint.h"
#include "lora_test_util.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"
#include "train/chat_data.h"
#include "train/finetune.h"
#include "train/lora.h"
#include "train/model_grad.h"

namespace dseek::train {
namespace {

namespace fs = std::filesystem;
using dseek::testing::temp_dir;

struct Fixture {
  std::string dir;
  tokenizer::Tokenizer tok;
  std::vector<ChatExample> chats;
};

const Fixture& fixture(model::StoredDType dtype) {
  static std::map<int, std::unique_ptr<Fixture>> cache;
  auto& f = cache[static_cast<int>(dtype)];
  if (!f) {
    const std::string dir = temp_dir(fmt::format("lora-test-{}", static_cast<int>(dtype)));
    const std::string err = dseek::testing::write_tiny_chat_model(dir, dtype, 11);
    EXPECT_EQ(err, "");
    std::ofstream(dir + "/chats.jsonl") << dseek::testing::tiny_chats_jsonl();
    auto tok = tokenizer::Tokenizer::load(dir);
    EXPECT_TRUE(tok.ok()) << tok.status().message();
    auto chats = load_chat_jsonl(dir + "/chats.jsonl", tok.value(), tokenizer::ChatFormat::kV3);
    EXPECT_TRUE(chats.ok()) << chats.status().message();
    f.reset(new Fixture{dir, std::move(tok.value()), std::move(chats.value())});
  }
  return *f;
}

TEST(LoraLinear, ForwardAndBackwardMatchFiniteDifferences) {
  const Fixture& fx = fixture(model::StoredDType::kF32);
  auto w = model::load_weights(fx.dir);
  ASSERT_TRUE(w.ok()) << w.status().message();
  auto ad = LoraAdapters::create(*w.value(), {.rank = 3, .alpha = 6, .targets = kLoraAll, .seed = 5});
  ASSERT_TRUE(ad.ok()) << ad.status().message();
  LoraAdapters& a = *ad.value();
  const ops::LinearWeight& base = w.value()->layers[0].attn.kv_b_proj;
  size_t idx = 0;
  while (a.tensors()[idx].module != "model.layers.0.self_attn.kv_b_proj") ++idx;
  LoraTensor& t = a.tensors()[idx];
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& b : t.B) b = 0.3f * nd(rng);
  const int64_t T = 3, in = base.in, out = base.out;
  std::vector<float> x(static_cast<size_t>(T * in)), dy(static_cast<size_t>(T * out));
  for (float& v : x) v = nd(rng);
  for (float& v : dy) v = nd(rng);
  // Objective L = sum(dy * y(x, A, B)); its gradients are what backward computes.
  auto objective = [&]() {
    std::vector<float> y(static_cast<size_t>(T * out));
    linear_forward(x.data(), T, base, y.data(), &a);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += static_cast<double>(dy[i]) * y[i];
    return s;
  };
  // Forward: y - base = scale * B A x, computed here in double.
  {
    std::vector<float> y(static_cast<size_t>(T * out)), y0(y.size());
    linear_forward(x.data(), T, base, y.data(), &a);
    linear_forward(x.data(), T, base, y0.data());
    const int64_t r = a.rank();
    for (int64_t i = 0; i < T; ++i)
      for (int64_t o = 0; o < out; ++o) {
        double acc = 0;
        for (int64_t j = 0; j < r; ++j) {
          double u = 0;
          for (int64_t k = 0; k < in; ++k) u += static_cast<double>(t.A[j * in + k]) * x[i * in + k];
          acc += t.B[o * r + j] * u;
        }
        ASSERT_NEAR(y[i * out + o] - y0[i * out + o], a.scale() * acc, 1e-4) << i << "," << o;
      }
  }
  a.zero_grad();
  std::vector<float> dx(x.size(), 0.0f), dx_base(x.size(), 0.0f);
  linear_backward(x.data(), dy.data(), T, base, dx.data(), nullptr, &a);
  linear_backward(x.data(), dy.data(), T, base, dx_base.data(), nullptr);
  auto check = [&](std::vector<float>& p, const std::vector<float>& g, const char* what) {
    for (size_t i = 0; i < p.size(); i += std::max<size_t>(1, p.size() / 17)) {
      const float keep = p[i], h = 1e-2f;
      p[i] = keep + h;
      const double up = objective();
      p[i] = keep - h;
      const double down = objective();
      p[i] = keep;
      const double fd = (up - down) / (2 * h);
      EXPECT_NEAR(g[i], fd, 2e-3 * (1 + std::abs(fd))) << what << "[" << i << "]";
    }
  };
  check(t.A, t.dA, "dA");
  check(t.B, t.dB, "dB");
  std::vector<float> dx_lora(x.size());
  for (size_t i = 0; i < x.size(); ++i) dx_lora[i] = dx[i] - dx_base[i];
  check(x, dx, "dx");
  double extra = 0;
  for (float v : dx_lora) extra += std::abs(v);
  EXPECT_GT(extra, 1e-3) << "dx must include the adapter path";
}

TEST(LoraModel, ZeroBLeavesLogitsAndOnlyAdaptersGetGradients) {
  const Fixture& fx = fixture(model::StoredDType::kF32);
  auto w = model::load_weights(fx.dir);
  ASSERT_TRUE(w.ok());
  auto ad = LoraAdapters::create(*w.value(), {.rank = 4, .alpha = 8, .targets = kLoraAll, .seed = 1});
  ASSERT_TRUE(ad.ok());
  const ChatExample& ex = fx.chats[0];
  const Activations base = train_forward(*w.value(), ex.tokens);
  const Activations adapted = train_forward(*w.value(), ex.tokens, ad.value().get());
  ASSERT_EQ(base.logits.size(), adapted.logits.size());
  for (size_t i = 0; i < base.logits.size(); ++i) ASSERT_EQ(base.logits[i], adapted.logits[i]) << i;

  // Backward with a frozen base: buffers for no weight, gradients in every adapter's B (A's
  // gradient is B^T (...) = 0 while B = 0), and the base's bytes unchanged by a step.
  std::vector<float> dlogits;
  masked_next_token_loss(adapted, ex.loss_mask, w.value()->config().vocab_size, &dlogits);
  Gradients frozen = Gradients::frozen();
  EXPECT_EQ(frozen.find("model.embed_tokens.weight"), nullptr);
  ad.value()->zero_grad();
  model_backward(*w.value(), adapted, {dlogits.data(), nullptr}, &frozen, ad.value().get());
  EXPECT_TRUE(frozen.tensors().empty());
  int with_grad = 0;
  for (const LoraTensor& t : ad.value()->tensors()) {
    double b = 0, a = 0;
    for (float g : t.dB) b += std::abs(g);
    for (float g : t.dA) a += std::abs(g);
    EXPECT_EQ(a, 0.0) << t.module;
    with_grad += b > 0;
  }
  EXPECT_GT(with_grad, static_cast<int>(ad.value()->tensors().size()) / 2);
}

TEST(ChatData, LossMaskCoversExactlyTheAssistantTurns) {
  const Fixture& fx = fixture(model::StoredDType::kF32);
  auto reqs = std::ifstream(fx.dir + "/chats.jsonl");
  std::string line;
  size_t n = 0;
  for (; std::getline(reqs, line); ++n) {
    const auto j = tokenizer::OrderedJson::parse(line);
    const auto req = tokenizer::chat_request_from_json(j).value();
    const ChatExample& ex = fx.chats.at(n);
    ASSERT_EQ(ex.tokens.size(), ex.loss_mask.size());
    // The whole conversation tokenizes to the rendered text.
    tokenizer::ChatRequest all = req;
    all.add_generation_prompt = false;
    const std::string text = tokenizer::render_chat(tokenizer::ChatFormat::kV3, all).value();
    EXPECT_EQ(fx.tok.decode(ex.tokens).value(), text);
    // Runs of mask 1, decoded, are each assistant's content + EOS, split out of that text by
    // hand: what follows each "<｜Assistant｜>" up to and including the next EOS.
    std::vector<std::string> expected, got;
    for (size_t at = 0; (at = text.find(tokenizer::kAssistant, at)) != std::string::npos;) {
      at += std::strlen(tokenizer::kAssistant);
      const size_t end = text.find(tokenizer::kEos, at) + std::strlen(tokenizer::kEos);
      expected.push_back(text.substr(at, end - at));
    }
    for (size_t i = 0; i < ex.tokens.size();) {
      if (!ex.loss_mask[i]) {
        ++i;
        continue;
      }
      size_t e = i;
      while (e < ex.tokens.size() && ex.loss_mask[e]) ++e;
      got.push_back(fx.tok.decode(std::span(ex.tokens).subspan(i, e - i)).value());
      i = e;
    }
    EXPECT_EQ(got, expected) << line;
    EXPECT_EQ(ex.line, static_cast<int64_t>(n + 1));
  }
  EXPECT_EQ(n, fx.chats.size());
}

TEST(ChatData, ErrorsNameFileLineAndField) {
  const Fixture& fx = fixture(model::StoredDType::kF32);
  const std::string path = fx.dir + "/bad.jsonl";
  auto load = [&](const std::string& content) {
    std::ofstream(path) << content;
    return load_chat_jsonl(path, fx.tok, tokenizer::ChatFormat::kV3).status().message();
  };
  const std::string good = R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})";
  EXPECT_EQ(load(good + "\n{oops\n"), path + ":2: not a valid JSON value");
  EXPECT_NE(load(good + "\n" + R"({"messages": [{"role": "robot", "content": "a"}]})").find(path + ":2: messages[0].role: unknown role 'robot'"),
            std::string::npos);
  EXPECT_NE(load(R"({"messages": [{"role": "user", "content": "a"}]})").find(path + ":1: messages: no assistant message"),
            std::string::npos);
}

double mean_loss(Finetuner& ft, const std::vector<ChatExample>& chats) {
  double s = 0;
  for (const ChatExample& ex : chats) s += ft.loss(ex).value();
  return s / static_cast<double>(chats.size());
}

void finetune_lowers_loss_and_merges_exactly(model::StoredDType dtype) {
  const Fixture& fx = fixture(dtype);
  FinetuneOptions o;
  o.lora_rank = 4;
  o.lr = 1e-2;
  o.seed = 3;
  auto ft = Finetuner::create(fx.dir, o);
  ASSERT_TRUE(ft.ok()) << ft.status().message();
  Finetuner& f = *ft.value();
  const std::string base_bytes = dseek::testing::slurp_for_test(fx.dir + "/model.safetensors");
  const double before = mean_loss(f, fx.chats);
  ASSERT_TRUE(run_finetune(f, fx.chats, 40, 3, nullptr).ok());
  const double after = mean_loss(f, fx.chats);
  std::printf("[ LoRA ] %s base: masked loss %.4f -> %.4f after 40 steps\n",
              dtype == model::StoredDType::kFP8 ? "FP8" : "F32", before, after);
  EXPECT_LT(after, 0.6 * before);
  EXPECT_EQ(dseek::testing::slurp_for_test(fx.dir + "/model.safetensors"), base_bytes) << "the base must stay frozen";

  // Merged weights (W + scale B A, float32) against base + adapters on the fly.
  std::vector<std::vector<float>> merged;
  auto views = merged_views(f.weights(), *f.adapters(), &merged);
  auto mw = model::Weights::bind(f.weights().config(), io::Checkpoint::from_memory("<merged>", std::move(views)));
  ASSERT_TRUE(mw.ok()) << mw.status().message();
  for (const ChatExample& ex : fx.chats) {
    const Activations on_the_fly = train_forward(f.weights(), ex.tokens, f.adapters());
    const Activations merged_act = train_forward(*mw.value(), ex.tokens);
    double max_diff = 0, max_abs = 0;
    for (size_t i = 0; i < on_the_fly.logits.size(); ++i) {
      max_diff = std::max(max_diff, static_cast<double>(std::abs(on_the_fly.logits[i] - merged_act.logits[i])));
      max_abs = std::max(max_abs, static_cast<double>(std::abs(on_the_fly.logits[i])));
    }
    EXPECT_LE(max_diff, 1e-5 * max_abs) << "line " << ex.line;
  }

  // The adapter files round-trip: loaded back, the same logits.
  const std::string out = fx.dir + "-adapter";
  ASSERT_TRUE(f.save(out, false).ok());
  auto loaded = LoraAdapters::load(out, f.weights());
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  const Activations a1 = train_forward(f.weights(), fx.chats[0].tokens, f.adapters());
  const Activations a2 = train_forward(f.weights(), fx.chats[0].tokens, loaded.value().get());
  EXPECT_EQ(a1.logits, a2.logits);
  fs::remove_all(out);
}

TEST(LoraFinetune, LowersMaskedLossAndMergesExactlyF32) { finetune_lowers_loss_and_merges_exactly(model::StoredDType::kF32); }
TEST(LoraFinetune, LowersMaskedLossAndMergesExactlyFP8) { finetune_lowers_loss_and_merges_exactly(model::StoredDType::kFP8); }

TEST(FullFinetune, LowersMaskedLoss) {
  const Fixture& fx = fixture(model::StoredDType::kF32);
  FinetuneOptions o;
  o.lr = 3e-3;
  auto ft = Finetuner::create(fx.dir, o);
  ASSERT_TRUE(ft.ok()) << ft.status().message();
  const double before = mean_loss(*ft.value(), fx.chats);
  ASSERT_TRUE(run_finetune(*ft.value(), fx.chats, 12, 0, nullptr).ok());
  const double after = mean_loss(*ft.value(), fx.chats);
  std::printf("[ full ] F32 base: masked loss %.4f -> %.4f after 12 steps\n", before, after);
  EXPECT_LT(after, 0.8 * before);
}

}  // namespace
}  // namespace dseek::train
