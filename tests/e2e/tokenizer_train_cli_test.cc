// `dseek tokenizer-train` as a user runs it: trains on a small corpus (the texts of
// tests/data/tokenizer/extra-cases.jsonl), checks progress and summary on stderr, the same
// output for any thread count, and that the Hugging Face tokenizers library (Rust core through
// node, .deps/hf-tokenizers) encodes and decodes with the written tokenizer.json exactly as
// dseek does. Bad input: one-line errors naming the file or flag, non-zero exit.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path& tmp_dir() {
  static const ScratchDir d("toktrain-e2e");
  return d.path();
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
}

// Two corpus files: the even and odd rows of extra-cases.jsonl (~600 kB in all).
std::pair<std::string, std::string> corpus_files() {
  static const std::pair<std::string, std::string> files = [] {
    std::ifstream in(std::string(DSEEK_TEST_DATA) + "/tokenizer/extra-cases.jsonl");
    std::string line, a, b;
    for (size_t i = 0; std::getline(in, line); ++i)
      (i % 2 ? b : a) += json::parse(line)["text"].get<std::string>() + "\n";
    write(tmp_dir() / "corpus-a.txt", a);
    write(tmp_dir() / "corpus-b.txt", b);
    return std::make_pair((tmp_dir() / "corpus-a.txt").string(), (tmp_dir() / "corpus-b.txt").string());
  }();
  return files;
}

CommandResult train(const std::string& out, const std::string& extra = "") {
  auto [a, b] = corpus_files();
  return run_dseek("tokenizer-train " + a + " " + b + " --vocab 2000 -o " + out + " " + extra);
}

const std::string& trained_dir() {
  static const std::string dir = [] {
    const std::string d = (tmp_dir() / "tok").string();
    CommandResult r = train(d, "--threads 2");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return d;
  }();
  return dir;
}

TEST(TokenizerTrainCli, WritesFilesWithProgressAndSummary) {
  const std::string d = (tmp_dir() / "progress").string();
  CommandResult r = train(d);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find("counted "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("distinct words"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("merges/s"), std::string::npos) << r.err;
  // The last line is the summary: ids, merges, time, memory.
  std::string last = r.err.substr(r.err.rfind('\n', r.err.size() - 2) + 1);
  EXPECT_NE(last.find("wrote " + d + "/tokenizer.json: 2000 ids"), std::string::npos) << last;
  EXPECT_NE(last.find(" = 256 bytes + "), std::string::npos) << last;
  EXPECT_NE(last.find(" merges + 20 special"), std::string::npos) << last;
  EXPECT_NE(last.find("peak memory"), std::string::npos) << last;
  EXPECT_TRUE(fs::exists(fs::path(d) / "tokenizer_config.json"));
  auto tok = tokenizer::Tokenizer::load(d);
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  EXPECT_EQ(tok->vocab_size(), 2000u);
}

TEST(TokenizerTrainCli, SameOutputForAnyThreadCount) {
  const std::string d1 = (tmp_dir() / "t1").string();
  ASSERT_EQ(train(d1, "--threads 1").exit_code, 0);
  const std::string ref = slurp(fs::path(trained_dir()) / "tokenizer.json");
  ASSERT_FALSE(ref.empty());
  EXPECT_TRUE(slurp(fs::path(d1) / "tokenizer.json") == ref);
  EXPECT_EQ(slurp(fs::path(d1) / "tokenizer_config.json"), slurp(fs::path(trained_dir()) / "tokenizer_config.json"));
}

TEST(TokenizerTrainCli, MinFrequencyLimitsTheVocab) {
  const std::string d = (tmp_dir() / "minfreq").string();
  auto [a, b] = corpus_files();
  CommandResult r = run_dseek("tokenizer-train " + a + " --vocab 100000 --min-frequency 50 -o " + d);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("fewer than --vocab 100000"), std::string::npos) << r.err;
  auto tok = tokenizer::Tokenizer::load(d);
  ASSERT_TRUE(tok.ok());
  EXPECT_LT(tok->vocab_size(), 5000u);
  EXPECT_GT(tok->vocab_size(), 300u);
}

// Sample texts: prose slices of the corpus, mixed scripts, emoji, whitespace, special tokens.
std::vector<std::string> sample_texts() {
  auto [a, b] = corpus_files();
  const std::string corpus = slurp(a);
  std::vector<std::string> texts = {
      "Où est l'hôtel ? Ça, c'est « très » français : élève, naïve, cœur, Noël 1999.",
      "Emoji 😀👍🏽 🇫🇷 👨‍👩‍👧, CJK 漢字かなカタカナ 한국어, Ελληνικά, русский, العربية",
      "  leading spaces\n\n\ttabs\r\nand 1234567 digits  \u00A0\u3000 end ",
      "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜><think>\nhmm</think>\n\n"
      "Hello<｜end▁of▁sentence｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{}<|EOT|>",
  };
  std::mt19937 rng(11);
  for (int i = 0; i < 40; ++i) {
    size_t start = rng() % (corpus.size() - 5000);
    while (start < corpus.size() && (static_cast<unsigned char>(corpus[start]) & 0xC0) == 0x80) ++start;
    size_t end = start + 200 + rng() % 3000;
    while (end < corpus.size() && (static_cast<unsigned char>(corpus[end]) & 0xC0) == 0x80) ++end;
    texts.push_back(corpus.substr(start, end - start));
  }
  for (int i = 0; i < 40; ++i) {
    std::string s;
    for (int k = 0, n = 1 + static_cast<int>(rng() % 60); k < n; ++k) {
      uint32_t cp = rng() % 4 == 0 ? 0x20 + rng() % 0x60 : 1 + rng() % 0x10FFFF;
      if (cp >= 0xD800 && cp < 0xE000) cp = ' ';
      tokenizer::utf8_append(s, cp);
    }
    texts.push_back(s);
  }
  return texts;
}

TEST(TokenizerTrainCli, HuggingFaceEncodesAndDecodesLikeDseek) {
  const fs::path pkg = fs::path(DSEEK_SOURCE_DIR) / ".deps/hf-tokenizers/node_modules/@anush008/tokenizers";
  ASSERT_EQ(std::system("node --version > /dev/null 2>&1"), 0) << "node is not installed: this test needs it";
  ASSERT_TRUE(fs::exists(pkg / "index.js"))
      << pkg << " is missing: run tools/tokenizer/install_hf_tokenizers.sh";
  const std::vector<std::string> texts = sample_texts();
  std::string jsonl;
  for (const std::string& t : texts) jsonl += json({{"text", t}}).dump() + "\n";
  write(tmp_dir() / "texts.jsonl", jsonl);
  // For each line: HF's ids (no special tokens added) and its decode of them.
  write(tmp_dir() / "hf_encode.js", R"JS(
const fs = require('fs');
const {Tokenizer} = require(process.argv[2]);
const tok = Tokenizer.fromFile(process.argv[3]);
const lines = fs.readFileSync(process.argv[4], 'utf8').split('\n').filter((l) => l.length > 0);
(async () => {
  const out = [];
  for (const line of lines) {
    const enc = await tok.encode(JSON.parse(line).text, null, {addSpecialTokens: false});
    const ids = Array.from(enc.getIds());
    out.push(JSON.stringify({ids, text: await tok.decode(ids, false)}));
  }
  fs.writeFileSync(process.argv[5], out.join('\n') + '\n');
})().catch((e) => { console.error(e); process.exit(1); });
)JS");
  const fs::path out = tmp_dir() / "hf_out.jsonl";
  const std::string cmd = "node " + (tmp_dir() / "hf_encode.js").string() + " " + pkg.string() + " " +
                          trained_dir() + "/tokenizer.json " + (tmp_dir() / "texts.jsonl").string() + " " +
                          out.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto tok = tokenizer::Tokenizer::load(trained_dir());
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  std::ifstream in(out);
  std::string line;
  size_t i = 0, total_ids = 0;
  for (; std::getline(in, line) && i < texts.size(); ++i) {
    json hf = json::parse(line);
    auto ids = tok->encode(texts[i]);
    ASSERT_TRUE(ids.ok()) << ids.status().message();
    ASSERT_EQ(hf["ids"].get<std::vector<int32_t>>(), ids.value()) << "text " << i << ": " << texts[i];
    EXPECT_EQ(hf["text"].get<std::string>(), texts[i]);
    EXPECT_EQ(tok->decode(ids.value()).value(), texts[i]);
    total_ids += ids->size();
  }
  EXPECT_EQ(i, texts.size());
  EXPECT_GT(total_ids, 1000u);
}

void expect_one_line_error(const CommandResult& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err.rfind("dseek: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

TEST(TokenizerTrainCli, BadInputIsAOneLineError) {
  auto [a, b] = corpus_files();
  const std::string out = (tmp_dir() / "bad-out").string();
  const std::string missing = (tmp_dir() / "no-such-corpus.txt").string();
  expect_one_line_error(run_dseek("tokenizer-train " + a + " " + missing + " -o " + out), missing);

  const std::string empty = (tmp_dir() / "empty.txt").string();
  write(empty, "");
  expect_one_line_error(run_dseek("tokenizer-train " + empty + " -o " + out), empty + ": empty corpus");

  const std::string bad_utf8 = (tmp_dir() / "latin1.txt").string();
  write(bad_utf8, "caf\xE9 au lait\n");
  expect_one_line_error(run_dseek("tokenizer-train " + bad_utf8 + " -o " + out), bad_utf8 + ": not valid UTF-8");

  expect_one_line_error(run_dseek("tokenizer-train " + a + " --vocab 275 -o " + out), "--vocab 275");
  CommandResult ok_min = run_dseek("tokenizer-train " + a + " --vocab 276 -o " + out);
  EXPECT_EQ(ok_min.exit_code, 0) << ok_min.err;  // 256 bytes + 20 special tokens, no merges

  // -o below a regular file can never be created (also as root).
  const std::string unwritable = a + "/sub";
  expect_one_line_error(run_dseek("tokenizer-train " + a + " -o " + unwritable), "-o " + unwritable);
  EXPECT_FALSE(fs::exists(unwritable));
}

}  // namespace
}  // namespace dseek::testing
