// The training loop: AdamW against a hand-computed double-precision reference, the schedule,
// clipping, token files (round trip and refusals), the trainer's in-memory weights against a
// `dseek init`-style checkpoint, and a tiny DeepSeek model (MLA, MoE with noaux_tc routing,
// MTP) trained on a small synthetic text: held-out loss well below the text's unigram entropy,
// identical curves for the same seed, resume == uninterrupted, expert load kept balanced.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "model/checkpoint_writer.h"
#include "model/weights.h"
#include "train/optimizer.h"
#include "train/token_data.h"
#include "train/trainer.h"
#include "scratch_dir.h"

namespace dseek::train {
namespace {

namespace fs = std::filesystem;

// A fresh directory NAME inside this process's scratch directory, which goes when the binary ends.
fs::path temp_dir(const std::string& name) {
  static const testing::ScratchDir scratch("trainer");
  const fs::path d = scratch.path() / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
}

// Byte-level toy tokenizer: byte b -> id 3 + b, EOS = 1 (the layout of tokenizer_writer.h).
TokenizerHooks byte_tokenizer() {
  TokenizerHooks t;
  t.vocab_size = 259;
  t.eos_id = 1;
  t.encode = [](std::string_view s) -> Expected<std::vector<int32_t>> {
    std::vector<int32_t> ids;
    for (unsigned char ch : s) ids.push_back(3 + ch);
    return ids;
  };
  return t;
}

TEST(AdamW, MatchesHandComputedReference) {
  const AdamWHyper h{0.9, 0.95, 1e-8, 0.1};
  std::vector<float> w = {0.5f, -1.0f, 2.0f}, m(3, 0.0f), v(3, 0.0f);
  std::vector<double> rw = {0.5, -1.0, 2.0}, rm(3, 0.0), rv(3, 0.0);
  const std::vector<std::vector<float>> grads = {{0.2f, -0.4f, 1.0f}, {-0.1f, 0.3f, 0.5f}, {0.0f, 0.0f, -2.0f}};
  for (bool decay : {true, false}) {
    for (int step = 1; step <= 3; ++step) {
      const double lr = 0.01 * step, scale = 0.5;
      adamw_update(w, grads[step - 1], m, v, h, lr, scale, step, decay);
      for (int i = 0; i < 3; ++i) {
        const double g = grads[step - 1][i] * scale;
        rm[i] = 0.9 * rm[i] + 0.1 * g;
        rv[i] = 0.95 * rv[i] + 0.05 * g * g;
        const double mhat = rm[i] / (1 - std::pow(0.9, step)), vhat = rv[i] / (1 - std::pow(0.95, step));
        if (decay) rw[i] -= lr * 0.1 * rw[i];
        rw[i] -= lr * mhat / (std::sqrt(vhat) + 1e-8);
        EXPECT_NEAR(w[i], rw[i], 1e-6) << "decay " << decay << " step " << step << " i " << i;
      }
    }
    std::fill(m.begin(), m.end(), 0.0f);
    std::fill(v.begin(), v.end(), 0.0f);
    std::fill(rm.begin(), rm.end(), 0.0);
    std::fill(rv.begin(), rv.end(), 0.0);
  }
  EXPECT_TRUE(decays(model::TensorKind::kLinear));
  EXPECT_TRUE(decays(model::TensorKind::kEmbedding));
  EXPECT_FALSE(decays(model::TensorKind::kNorm));
  EXPECT_FALSE(decays(model::TensorKind::kBias));
}

TEST(LrSchedule, WarmupThenCosineToFloor) {
  const LrSchedule s{1.0, 0.1, 4, 9};  // warm-up steps 0..3, cosine over steps 4..8
  EXPECT_DOUBLE_EQ(s.at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.at(1), 0.5);
  EXPECT_DOUBLE_EQ(s.at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.at(4), 1.0);
  EXPECT_NEAR(s.at(6), 0.55, 1e-12);  // half way: (peak + min) / 2
  EXPECT_NEAR(s.at(8), 0.1, 1e-12);
  EXPECT_NEAR(s.at(100), 0.1, 1e-12);  // past the end: the floor
  EXPECT_GT(s.at(5), s.at(6));
  const LrSchedule flat{2.0, 0.0, 0, 1};
  EXPECT_DOUBLE_EQ(flat.at(0), 2.0);
}

TEST(Clipping, GlobalNormOverAllTensors) {
  const std::vector<float> a = {3.0f}, b = {0.0f, 4.0f};
  EXPECT_DOUBLE_EQ(global_norm({a, b}), 5.0);
  std::vector<float> big(100000, 0.5f);  // chunked path
  EXPECT_NEAR(global_norm({big}), std::sqrt(100000 * 0.25), 1e-9);
  EXPECT_DOUBLE_EQ(clip_factor(5.0, 1.0), 0.2);
  EXPECT_DOUBLE_EQ(clip_factor(0.5, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_factor(5.0, 0.0), 1.0);  // off
}

TEST(TokenFile, RoundTripOfTextAndJsonl) {
  const fs::path d = temp_dir("roundtrip");
  write_file(d / "a.txt", "ab\ncd\n\n\n  \nef\n");
  write_file(d / "b.jsonl", "{\"text\": \"xy\"}\n\n{\"text\": \"z\", \"id\": 3}\n");
  const std::vector<std::string> inputs = {(d / "a.txt").string(), (d / "b.jsonl").string()};
  auto built = build_token_file(inputs, byte_tokenizer(), 42, (d / "t.tok").string());
  ASSERT_TRUE(built.ok()) << built.status().message();
  EXPECT_EQ(built->documents, 4);
  auto data = TokenData::open((d / "t.tok").string());
  ASSERT_TRUE(data.ok()) << data.status().message();
  auto id = [](char c) { return 3 + static_cast<unsigned char>(c); };
  const std::vector<int32_t> expect = {id('a'), id('b'), id('\n'), id('c'), id('d'), 1, id('e'), id('f'), 1,
                                       id('x'), id('y'), 1,        id('z'), 1};
  EXPECT_EQ(std::vector<int32_t>((*data)->tokens().begin(), (*data)->tokens().end()), expect);
  EXPECT_EQ((*data)->fingerprint(), 42u);
  EXPECT_EQ((*data)->eos_id(), 1);
  EXPECT_EQ((*data)->documents(), 4);

  TokenizerHooks whole = byte_tokenizer();
  whole.split_blank_lines = false;
  ASSERT_TRUE(build_token_file({(d / "a.txt").string()}, whole, 0, (d / "w.tok").string()).ok());
  auto w = TokenData::open((d / "w.tok").string());
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->documents(), 1);
  EXPECT_EQ((*w)->tokens().size(), std::string("ab\ncd\n\n\n  \nef\n").size() + 1);
}

TEST(TokenFile, BadFilesAreOneLineErrors) {
  const fs::path d = temp_dir("bad");
  write_file(d / "bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
  auto e = build_token_file({(d / "bad.jsonl").string()}, byte_tokenizer(), 0, (d / "x.tok").string());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("bad.jsonl:2"), std::string::npos) << e.status().message();
  EXPECT_NE(e.status().message().find("'text'"), std::string::npos);
  write_file(d / "notjson.jsonl", "{oops\n");
  EXPECT_FALSE(build_token_file({(d / "notjson.jsonl").string()}, byte_tokenizer(), 0, (d / "x.tok").string()).ok());
  auto missing = build_token_file({(d / "nope.txt").string()}, byte_tokenizer(), 0, (d / "x.tok").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope.txt"), std::string::npos);
  write_file(d / "empty.txt", "\n\n");
  EXPECT_FALSE(build_token_file({(d / "empty.txt").string()}, byte_tokenizer(), 0, (d / "x.tok").string()).ok());

  write_file(d / "good.txt", "hello world");
  ASSERT_TRUE(build_token_file({(d / "good.txt").string()}, byte_tokenizer(), 0, (d / "g.tok").string()).ok());
  std::string bytes;
  {
    std::ifstream f(d / "g.tok", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto expect_error = [&](const std::string& contents, const std::string& needle) {
    write_file(d / "b.tok", contents);
    auto r = TokenData::open((d / "b.tok").string());
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("b.tok"), std::string::npos);
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  };
  expect_error(bytes.substr(0, bytes.size() - 2), "bytes");                 // truncated
  expect_error("XSEEKTOK" + bytes.substr(8), "not a dseek token file");     // magic
  std::string out_of_range = bytes;
  const int32_t bad_id = 300;
  std::memcpy(out_of_range.data() + 64 + 4 * 3, &bad_id, 4);
  expect_error(out_of_range, "token 3 has id 300");
  expect_error("short", "not a dseek token file");

  auto data = TokenData::open((d / "g.tok").string());
  ASSERT_TRUE(data.ok());
  EXPECT_FALSE(WindowSampler::make(**data, 8, 0.1, 0).ok());  // 12 tokens: too few for 8-token windows
  EXPECT_TRUE(WindowSampler::make(**data, 2, 0.1, 0).ok());
}

// A tiny model: byte vocabulary, MLA with q LoRA, one dense and one MoE layer (8 experts,
// top-2 of 2 groups, sigmoid + noaux_tc bias), one MTP layer.
std::string tiny_config(int mtp_layers) {
  return R"({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 259,
    "hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16, "num_hidden_layers": 2,
    "num_nextn_predict_layers": )" +
         std::to_string(mtp_layers) + R"(, "first_k_dense_replace": 1, "num_attention_heads": 2,
    "num_key_value_heads": 2, "q_lora_rank": 24, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
    "v_head_dim": 8, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 2,
    "n_shared_experts": 1, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
    "norm_topk_prob": true, "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 10000,
    "max_position_embeddings": 256, "tie_word_embeddings": false, "initializer_range": 0.02,
    "bos_token_id": 0, "eos_token_id": 1})";
}

// A small text with structure a model can learn: sentences from a tiny grammar.
std::string synthetic_text() {
  const std::vector<std::string> subj = {"the cat", "a dog", "my friend", "the old man", "our teacher", "she"};
  const std::vector<std::string> verb = {"sees", "likes", "walks to", "talks about", "finds"};
  const std::vector<std::string> obj = {"the park", "a red ball", "the river", "some bread", "the house"};
  std::mt19937 rng(7);
  std::string text;
  for (int doc = 0; doc < 120; ++doc) {
    for (int s = 0; s < 4; ++s) {
      text += subj[rng() % subj.size()] + " " + verb[rng() % verb.size()] + " " + obj[rng() % obj.size()] + ". ";
    }
    text += "\n\n";
  }
  return text;
}

struct Fixture {
  fs::path dir;
  std::unique_ptr<TokenData> data;
  WindowSampler sampler;
};

Fixture make_data(const std::string& name, int64_t seq_len, uint64_t seed) {
  Fixture f;
  f.dir = temp_dir(name);
  write_file(f.dir / "text.txt", synthetic_text());
  auto built = build_token_file({(f.dir / "text.txt").string()}, byte_tokenizer(), 0, (f.dir / "t.tok").string());
  EXPECT_TRUE(built.ok());
  f.data = std::move(TokenData::open((f.dir / "t.tok").string())).value();
  f.sampler = WindowSampler::make(*f.data, seq_len, 0.1, seed).value();
  return f;
}

TrainOptions small_options(int64_t steps) {
  TrainOptions o;
  o.steps = steps;
  o.batch = 8;
  o.grad_accum = 2;
  o.seq_len = 48;
  o.lr = 1e-2;
  o.min_lr = 1e-3;
  o.warmup = 10;
  o.seed = 5;
  o.bias_update_speed = 0.001f;
  o.seq_aux_alpha = 0.0001f;
  return o;
}

TEST(Trainer, InMemoryWeightsEqualAWrittenCheckpoint) {
  Fixture f = make_data("bind", 16, 0);
  TrainOptions o = small_options(1);
  o.seq_len = 16;
  auto t = Trainer::create(tiny_config(0), o, f.sampler);
  ASSERT_TRUE(t.ok()) << t.status().message();
  model::RandomCheckpointOptions ro;
  ro.dtype = model::StoredDType::kF32;
  ro.init = model::InitStyle::kTraining;
  ro.seed = o.seed;
  ASSERT_TRUE(model::write_random_checkpoint(tiny_config(0), (f.dir / "ckpt").string(), ro).ok());
  auto loaded = model::load_weights((f.dir / "ckpt").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  const auto window = f.sampler.train_window(0);
  const Activations a = train_forward((*t)->weights(), window), b = train_forward(**loaded, window);
  ASSERT_EQ(a.logits.size(), b.logits.size());
  EXPECT_EQ(a.logits, b.logits);  // bit-equal: same initial values, same kernels

  // A saved checkpoint loads back as an ordinary model with the same logits.
  ASSERT_TRUE((*t)->save((f.dir / "saved").string(), "").ok());
  auto reloaded = model::load_weights((f.dir / "saved").string());
  ASSERT_TRUE(reloaded.ok()) << reloaded.status().message();
  EXPECT_EQ(train_forward(**reloaded, window).logits, a.logits);
}

double unigram_entropy(std::span<const int32_t> tokens) {
  std::map<int32_t, int64_t> counts;
  for (int32_t t : tokens) ++counts[t];
  double h = 0;
  for (const auto& [id, n] : counts) {
    const double p = static_cast<double>(n) / static_cast<double>(tokens.size());
    h -= p * std::log(p);
  }
  return h;
}

TEST(Trainer, LearnsWellBelowTheUnigramBaselineAndBalancesExperts) {
  Fixture f = make_data("learn", 48, 5);
  const int64_t steps = 200;
  TrainOptions o = small_options(steps);
  // DeepSeek's 0.001 is tuned for ~10^6 steps; over 200 steps at this learning rate it only
  // halves the imbalance (measured: max/mean 3.85 with no rule, 1.98 at 0.001, 1.16 at 0.003).
  o.bias_update_speed = 0.003f;
  auto t = Trainer::create(tiny_config(1), o, f.sampler);
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_TRUE((*t)->trains_mtp());
  const double unigram = unigram_entropy(f.data->tokens());
  const double initial = (*t)->heldout_loss(16);
  double late_load = 0, first_load = 0;
  StepStats last;
  for (int64_t s = 0; s < steps; ++s) {
    last = (*t)->train_step();
    ASSERT_TRUE(std::isfinite(last.loss));
    if (s < 10) first_load += last.max_over_mean_load / 10;
    if (s >= steps - 20) late_load += last.max_over_mean_load / 20;
  }
  const double heldout = (*t)->heldout_loss(16);
  std::printf("[ trainer  ] unigram entropy %.3f nats, held-out loss %.3f -> %.3f after %lld steps (train %.3f, "
              "mtp %.3f), expert max/mean load: first 10 steps %.3f, last 20 steps %.3f\n",
              unigram, initial, heldout, static_cast<long long>(steps), last.loss, last.mtp_loss, first_load, late_load);
  EXPECT_NEAR(initial, std::log(259.0), 0.1);  // untrained: uniform over the vocabulary
  EXPECT_LT(heldout, 0.6 * unigram);
  EXPECT_GT(last.mtp_loss, 0.0);
  EXPECT_GT(late_load, 1.0);
  EXPECT_LT(late_load, 1.4);  // 8 experts, top-2: at most 4.0 (all tokens on 2 experts)
}

TEST(Trainer, SameSeedSameCurveAndResumeIsExact) {
  Fixture f = make_data("resume", 48, 5);
  const int64_t steps = 12, stop = 5;
  TrainOptions o = small_options(steps);
  o.warmup = 3;
  for (model::StoredDType dtype : {model::StoredDType::kF32, model::StoredDType::kBF16}) {
    o.dtype = dtype;
    auto curve = [&](Trainer& t, int64_t n) {
      std::vector<double> out;
      for (int64_t s = 0; s < n; ++s) out.push_back(t.train_step().loss);
      return out;
    };
    auto a = Trainer::create(tiny_config(1), o, f.sampler);
    auto b = Trainer::create(tiny_config(1), o, f.sampler);
    ASSERT_TRUE(a.ok() && b.ok());
    const std::vector<double> full = curve(**a, steps);
    std::vector<double> resumed = curve(**b, stop);
    const std::string ckpt = (f.dir / "step-5").string();
    ASSERT_TRUE((*b)->save(ckpt, "").ok());
    b->reset();
    auto c = Trainer::resume(ckpt, o, f.sampler);
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_EQ((*c)->steps_done(), stop);
    for (double l : curve(**c, steps - stop)) resumed.push_back(l);
    EXPECT_EQ(full, resumed) << "dtype " << static_cast<int>(dtype);  // bit-exact
    EXPECT_LT(full.back(), full.front());
    EXPECT_EQ((*a)->heldout_loss(4), (*c)->heldout_loss(4));

    auto again = Trainer::create(tiny_config(1), o, f.sampler);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(curve(**again, 3), std::vector<double>(full.begin(), full.begin() + 3));  // same seed, same curve
  }
  o.dtype = model::StoredDType::kF32;
  auto wrong = Trainer::resume((f.dir / "step-5").string(), o, f.sampler);  // saved by the bf16 run
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("--dtype bf16"), std::string::npos) << wrong.status().message();
  auto none = Trainer::resume((f.dir / "nowhere").string(), o, f.sampler);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("nowhere"), std::string::npos);
}

}  // namespace
}  // namespace dseek::train
