// `dseek perplexity` end to end on a random-weight MLA + MoE model (`dseek init --test-init`,
// so the logits are far from uniform) with a tokenizer from `dseek tokenizer-train`: the JSON
// loss equals an independent computation in this test, which scores every token by its own
// last-token forward pass over exactly the context the window rule gives it (no all_logits,
// no shared window code) and takes the log-softmax in long double; plus the text summary and
// one-line errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "model/deepseek.h"
#include "tokenizer/tokenizer.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;

struct Fixture {
  fs::path dir;
  std::string model, text;
  std::vector<std::string> documents;
};

const Fixture& fixture() {
  static const ScratchDir scratch("perplexity-cli");
  static const Fixture made = [] {
    Fixture f;
    f.dir = scratch.path();
    const char* words[] = {"the", "cat", "le", "chat", "sees", "voit", "a", "river", "une", "maison", "old", "vieux"};
    std::mt19937 rng(11);
    std::ofstream text(f.dir / "text.txt");
    // Three documents separated by blank lines (one of them two), lines inside documents.
    for (int d = 0; d < 3; ++d) {
      std::string doc;
      for (int line = 0; line < 2; ++line) {
        if (line) doc += "\n";
        for (int w = 0; w < 14; ++w) doc += std::string(w ? " " : "") + words[rng() % 12];
        doc += ".";
      }
      f.documents.push_back(doc);
      text << doc << (d == 1 ? "\n\n \n" : "\n\n");
    }
    text.close();
    f.text = (f.dir / "text.txt").string();
    const std::string tok = (f.dir / "tok").string();
    auto r = run_dseek("tokenizer-train " + f.text + " --vocab 300 -o " + tok);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::string config = (f.dir / "config.json").string();
    std::ofstream(config) << tiny_train_config(64);
    f.model = (f.dir / "model").string();
    r = run_dseek("init " + config + " " + f.model + " --seed 4 --test-init --dtype f32 --tokenizer " + tok);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return f;
  }();
  return made;
}

// The file's tokens as dseek train makes them: each document, then EOS.
std::vector<int32_t> expected_tokens(const Fixture& f, const tokenizer::Tokenizer& tok) {
  std::vector<int32_t> ids;
  for (const std::string& d : f.documents) {
    const auto e = tok.encode(d);
    EXPECT_TRUE(e.ok());
    ids.insert(ids.end(), e->begin(), e->end());
    ids.push_back(tok.eos_id());
  }
  return ids;
}

// Mean -log p(token t | its window's context), each token from its own forward pass. Token t
// (t >= 1) belongs to window k = the first with k * stride + ctx > t, whose context starts at
// k * stride; with stride == ctx the first token of each window (t % ctx == 0) is not scored.
double independent_nll(const model::Model& m, const std::vector<int32_t>& ids, int64_t ctx, int64_t stride,
                       int64_t* scored) {
  const int64_t n = static_cast<int64_t>(ids.size()), V = m.config().vocab_size;
  long double sum = 0;
  *scored = 0;
  for (int64_t t = 1; t < n; ++t) {
    const int64_t k = t < ctx ? 0 : (t - ctx) / stride + 1;
    const int64_t begin = k * stride;
    if (begin == t) continue;  // first token of a non-overlapping window
    auto session = m.new_session(ctx);
    std::vector<float> logits;
    const auto s = m.forward(*session, std::span(ids.data() + begin, t - begin), {}, &logits);
    EXPECT_TRUE(s.ok()) << s.message();
    long double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<long double>(logits[v]));
    sum += std::log(z) - logits[ids[t]];
    ++*scored;
  }
  return static_cast<double>(sum / *scored);
}

nlohmann::json run_json(const std::string& args) {
  const auto r = run_dseek("perplexity " + args + " --json -t 2");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
}

TEST(PerplexityCli, MatchesAnIndependentComputation) {
  const Fixture& f = fixture();
  auto tok = tokenizer::Tokenizer::load(f.model);
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  auto m = model::Model::load(f.model);
  ASSERT_TRUE(m.ok()) << m.status().message();
  const std::vector<int32_t> ids = expected_tokens(f, *tok);
  ASSERT_GT(ids.size(), 40u);  // several windows of 16

  struct Case {
    int64_t ctx, stride, max_tokens;
    const char* flags;
  };
  // The last case reads the weights from the --no-mmap copy: the same numbers.
  for (const Case c : {Case{16, 16, 0, ""}, Case{16, 5, 0, ""}, Case{64, 64, 0, ""}, Case{16, 16, 37, ""},
                       Case{16, 5, 0, " --no-mmap"}}) {
    SCOPED_TRACE(fmt::format("ctx {} stride {} max-tokens {}{}", c.ctx, c.stride, c.max_tokens, c.flags));
    std::vector<int32_t> used = ids;
    if (c.max_tokens > 0) used.resize(c.max_tokens);
    int64_t scored = 0;
    const double expected = independent_nll(**m, used, c.ctx, c.stride, &scored);
    const auto j = run_json("-m " + f.model + " --file " + f.text + fmt::format(" --ctx {} --stride {} --max-tokens {}{}",
                                                                                c.ctx, c.stride, c.max_tokens, c.flags));
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j["tokens"].get<int64_t>(), static_cast<int64_t>(used.size()));
    EXPECT_EQ(j["scored_tokens"].get<int64_t>(), scored);
    EXPECT_NEAR(j["nll"].get<double>(), expected, 1e-5 * expected);
    EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(expected), 1e-4 * std::exp(expected));
    EXPECT_GT(j["tokens_per_second"].get<double>(), 0);
    // Random test weights are far from uniform: a loss equal to log V would hide a scoring bug.
    EXPECT_GT(std::abs(expected - std::log(300.0)), 0.1);
  }
}

TEST(PerplexityCli, SummaryLineAndOneLineErrors) {
  const Fixture& f = fixture();
  const auto ok = run_dseek("perplexity -m " + f.model + " --file " + f.text + " --ctx 16 -t 1");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out.rfind(f.text + ": nll ", 0), 0u) << ok.out;
  EXPECT_NE(ok.out.find(" nats/token, perplexity "), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("ctx 16, stride 16"), std::string::npos) << ok.out;
  EXPECT_EQ(ok.out.find('\n'), ok.out.size() - 1) << ok.out;

  auto expect_error = [](const std::string& args, const std::string& needle) {
    const auto r = run_dseek("perplexity " + args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_EQ(r.err.rfind("dseek: error: ", 0), 0u) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line expected:\n" << r.err;
  };
  const std::string m = "-m " + f.model;
  expect_error(m + " --file " + (f.dir / "missing.txt").string(), "missing.txt");
  expect_error(m + " --file " + f.text + " --ctx 100", "--ctx 100");
  expect_error(m + " --file " + f.text + " --ctx 16 --stride 17", "--stride 17");
  std::ofstream(f.dir / "empty.txt") << "\n \n";
  expect_error(m + " --file " + (f.dir / "empty.txt").string(), "empty.txt");
  fs::create_directories(f.dir / "no-tokenizer");
  std::filesystem::copy(fs::path(f.model) / "config.json", f.dir / "no-tokenizer" / "config.json");
  expect_error("-m " + (f.dir / "no-tokenizer").string() + " --file " + f.text, "tokenizer.json");
}

}  // namespace
}  // namespace dseek::testing
