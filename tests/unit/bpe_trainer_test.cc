// BPE training (bpe_trainer.h) against a naive trainer written here (all pair counts recounted
// after every merge), word counting against the PCRE2 pre-tokenizer on whole texts, and the
// written tokenizer.json / tokenizer_config.json loaded back by dseek's Tokenizer.
#include "tokenizer/bpe_trainer.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>

#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_writer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"
#include "scratch_dir.h"

namespace dseek::tokenizer {
namespace {

namespace fs = std::filesystem;

// ---- the naive reference trainer ------------------------------------------------------------

struct NaiveResult {
  std::vector<std::string> tokens;                    // id -> bytes
  std::vector<std::pair<std::string, std::string>> merges;  // as byte strings
  std::map<std::string, std::vector<int32_t>> segmentation;  // word -> final token ids
};

// Same rules as bpe_trainer.h, the slow obvious way: every step recounts all pairs.
NaiveResult naive_train(const std::vector<WordCount>& words, size_t max_tokens, uint64_t min_frequency) {
  NaiveResult r;
  std::map<std::string, int32_t> ids;
  for (int b = 0; b < 256; ++b) {
    r.tokens.push_back(std::string(1, static_cast<char>(b)));
    ids[r.tokens.back()] = b;
  }
  std::vector<std::vector<int32_t>> segs;
  for (const WordCount& w : words) {
    segs.emplace_back();
    for (unsigned char c : w.bytes) segs.back().push_back(c);
  }
  while (r.tokens.size() < max_tokens) {
    std::map<std::pair<int32_t, int32_t>, uint64_t> counts;
    for (size_t i = 0; i < segs.size(); ++i)
      for (size_t k = 0; k + 1 < segs[i].size(); ++k) counts[{segs[i][k], segs[i][k + 1]}] += words[i].count;
    std::pair<int32_t, int32_t> best{-1, -1};
    uint64_t best_count = 0;
    for (const auto& [p, n] : counts)  // ascending pairs: the first maximum is the smallest pair
      if (n > best_count) best_count = n, best = p;
    if (best_count == 0 || best_count < min_frequency) break;
    const std::string merged = r.tokens[best.first] + r.tokens[best.second];
    int32_t id;
    if (auto it = ids.find(merged); it != ids.end()) {
      id = it->second;
    } else {
      id = static_cast<int32_t>(r.tokens.size());
      r.tokens.push_back(merged);
      ids[merged] = id;
    }
    r.merges.push_back({r.tokens[best.first], r.tokens[best.second]});
    for (auto& s : segs) {
      std::vector<int32_t> out;
      for (size_t k = 0; k < s.size(); ++k) {
        if (k + 1 < s.size() && s[k] == best.first && s[k + 1] == best.second) {
          out.push_back(id);
          ++k;
        } else {
          out.push_back(s[k]);
        }
      }
      s = std::move(out);
    }
  }
  for (size_t i = 0; i < words.size(); ++i) r.segmentation[words[i].bytes] = segs[i];
  return r;
}

std::vector<std::pair<std::string, std::string>> merge_strings(const BpeTrainResult& r) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [a, b] : r.merges) out.push_back({r.tokens[a], r.tokens[b]});
  return out;
}

const PreTokenizer& deepseek_pre() {
  static const PreTokenizer pre = [] {
    auto p = PreTokenizer::from_json(nlohmann::json::parse(deepseek_v3_pre_tokenizer_json().dump()));
    EXPECT_TRUE(p.ok()) << p.status().message();
    return std::move(p.value());
  }();
  return pre;
}

// The texts of tests/data/tokenizer/extra-cases.jsonl (novels, mixed scripts, whitespace,
// special-token strings, random code points), joined by newlines.
const std::string& test_corpus() {
  static const std::string text = [] {
    std::string s;
    for (const auto& row : testing::read_jsonl(std::string(DSEEK_TEST_DATA) + "/tokenizer/extra-cases.jsonl"))
      s += row["text"].get<std::string>() + "\n";
    return s;
  }();
  return text;
}

std::vector<WordCount> count_words(std::string_view text, int threads, size_t chunk) {
  WordCounter c(deepseek_pre(), threads, chunk);
  Status s = c.add_text(text);
  EXPECT_TRUE(s.ok()) << s.message();
  return c.words();
}

// Random words over a tiny alphabet: many equal counts (tie-breaking) and long runs of one
// symbol (overlapping pairs).
std::vector<WordCount> random_words(uint32_t seed, int n, const std::string& alphabet) {
  std::mt19937 rng(seed);
  std::map<std::string, uint64_t> m;
  for (int i = 0; i < n; ++i) {
    std::string w;
    int len = 1 + static_cast<int>(rng() % 9);
    for (int k = 0; k < len; ++k) w += alphabet[rng() % alphabet.size()];
    m[w] += 1 + rng() % 4;
  }
  std::vector<WordCount> out;
  for (auto& [w, n2] : m) out.push_back({w, n2});
  return out;
}

// ---- merge learning -------------------------------------------------------------------------

TEST(BpeTrainer, MatchesNaiveTrainerOnRandomWords) {
  for (uint32_t seed = 1; seed <= 12; ++seed) {
    const auto words = random_words(seed, 300, seed % 2 ? "ab" : "abc ");
    for (size_t max_tokens : {256, 257, 270, 300, 400}) {
      for (uint64_t min_freq : {1, 2, 5}) {
        BpeTrainOptions opt;
        opt.max_tokens = max_tokens;
        opt.min_frequency = min_freq;
        auto fast = learn_bpe(words, opt);
        ASSERT_TRUE(fast.ok());
        NaiveResult ref = naive_train(words, max_tokens, min_freq);
        ASSERT_EQ(merge_strings(fast.value()), ref.merges) << "seed " << seed << " max " << max_tokens;
        ASSERT_EQ(fast->tokens, ref.tokens);
        EXPECT_EQ(fast->reached_max_tokens, ref.tokens.size() >= max_tokens);
        EXPECT_EQ(ref.merges.size(), ref.tokens.size() - 256) << "a merge repeated a token";
      }
    }
  }
}

TEST(BpeTrainer, MatchesNaiveTrainerOnText) {
  // A slice of the corpus (naive training is slow): ~60 kB of novel text and mixed scripts.
  const std::string& corpus = test_corpus();
  const std::string_view slice = std::string_view(corpus).substr(0, corpus.find('\n', 60000) + 1);
  const auto words = count_words(slice, 2, 1 << 12);
  ASSERT_GT(words.size(), 1000u);
  for (size_t max_tokens : {256, 300, 450, 700}) {
    BpeTrainOptions opt;
    opt.max_tokens = max_tokens;
    auto fast = learn_bpe(words, opt);
    ASSERT_TRUE(fast.ok());
    NaiveResult ref = naive_train(words, max_tokens, 2);
    EXPECT_EQ(merge_strings(fast.value()), ref.merges) << "max_tokens " << max_tokens;
    EXPECT_EQ(fast->tokens, ref.tokens);
  }
}

TEST(BpeTrainer, StopsAtMinFrequencyAndRejectsTinyVocab) {
  std::vector<WordCount> words{{"hello", 3}, {"help", 1}};
  BpeTrainOptions opt;
  opt.max_tokens = 1000;
  opt.min_frequency = 3;
  auto r = learn_bpe(words, opt);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->reached_max_tokens);
  // h-e (4), then he-l (4), then hel-l (3), hell-o (3); nothing else reaches 3.
  ASSERT_EQ(r->merges.size(), 4u);
  EXPECT_EQ(r->tokens.back(), "hello");
  EXPECT_EQ(r->last_count, 3u);
  opt.max_tokens = 255;
  EXPECT_FALSE(learn_bpe(words, opt).ok());
}

TEST(BpeTrainer, ProgressIsReported) {
  const auto words = random_words(7, 300, "abc ");
  BpeTrainOptions opt;
  opt.max_tokens = 300;
  opt.progress_every = 10;
  std::vector<BpeProgress> seen;
  opt.on_progress = [&](const BpeProgress& p) { seen.push_back(p); };
  auto r = learn_bpe(words, opt);
  ASSERT_TRUE(r.ok());
  ASSERT_GE(seen.size(), 2u);
  EXPECT_TRUE(seen.back().finished);
  EXPECT_EQ(seen.back().merges, r->merges.size());
  EXPECT_EQ(seen.back().tokens, r->tokens.size());
  for (size_t i = 0; i + 1 < seen.size(); ++i) EXPECT_FALSE(seen[i].finished);
}

// ---- word counting --------------------------------------------------------------------------

// Text built to put every kind of character around line ends (where chunks are cut).
std::string tricky_newline_text(uint32_t seed) {
  static const char* kParts[] = {"\n", "\r\n", "\n\n", " \n", "\t\n ", "  ", " ", "a", "Zé", "42", "1234",
                                 ".", "!?", "«", "»", "—", "l'", "漢字", "カタ", "😀", "\u00A0", "\u2028",
                                 "\u3000", "x\u0301", "\"", "(", ")", "'s", "-", "#"};
  std::mt19937 rng(seed);
  std::string s;
  for (int i = 0; i < 20000; ++i) s += kParts[rng() % std::size(kParts)];
  return s;
}

std::map<std::string, uint64_t> pcre2_counts(std::string_view text) {
  PreTokenizer slow = deepseek_pre();
  slow.set_fast_path(false);
  std::vector<Span> pieces;
  slow.split(text, &pieces);
  std::map<std::string, uint64_t> m;
  for (const Span& p : pieces) ++m[std::string(text.substr(p.begin, p.end - p.begin))];
  return m;
}

std::map<std::string, uint64_t> as_map(const std::vector<WordCount>& words) {
  std::map<std::string, uint64_t> m;
  for (const WordCount& w : words) m[w.bytes] = w.count;
  return m;
}

TEST(WordCounter, ChunkedCountsEqualWholeTextPcre2) {
  ASSERT_TRUE(deepseek_pre().fast_path());
  std::vector<std::string> texts = {tricky_newline_text(1), tricky_newline_text(2),
                                    test_corpus().substr(0, 300000)};
  for (const std::string& text : texts) {
    const auto expected = pcre2_counts(text);
    for (size_t chunk : {size_t{1}, size_t{7}, size_t{64}, size_t{4096}, size_t{1} << 30})
      for (int threads : {1, 2, 3})
        EXPECT_EQ(as_map(count_words(text, threads, chunk)), expected) << "chunk " << chunk;
  }
}

TEST(WordCounter, ChunkEndsAreValidCutPoints) {
  const std::string text = tricky_newline_text(3);
  const auto ends = chunk_ends(text, 100);
  ASSERT_GT(ends.size(), 10u);
  EXPECT_EQ(ends.back(), text.size());
  for (size_t i = 0; i + 1 < ends.size(); ++i) {
    EXPECT_EQ(text[ends[i] - 1], '\n');
    EXPECT_LT(ends[i], ends[i + 1]);
  }
}

TEST(WordCounter, ErrorsNameTheFile) {
  WordCounter c(deepseek_pre(), 1);
  Status s = c.add_file("/nonexistent/corpus.txt");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent/corpus.txt"), std::string::npos);
  s = c.add_text("ok \xC3\x28 bad", "bad.txt");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("bad.txt"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("offset 3"), std::string::npos) << s.message();
}

// ---- writing and loading --------------------------------------------------------------------

struct TrainedDir {
  fs::path dir;
  BpeTrainResult bpe;
  NaiveResult ref;
  std::vector<WordCount> words;
};

const TrainedDir& trained() {
  static const dseek::testing::ScratchDir scratch("bpe-trainer");
  static const TrainedDir t = [] {
    TrainedDir d;
    d.dir = scratch.path() / "tokenizer";
    const std::string& corpus = test_corpus();
    d.words = count_words(std::string_view(corpus).substr(0, corpus.find('\n', 60000) + 1), 2, 1 << 14);
    BpeTrainOptions opt;
    opt.max_tokens = 600;
    d.bpe = learn_bpe(d.words, opt).value();
    d.ref = naive_train(d.words, 600, 2);
    Status s = write_tokenizer_files(d.dir.string(), make_tokenizer_files(d.bpe, 4096));
    EXPECT_TRUE(s.ok()) << s.message();
    return d;
  }();
  return t;
}

const Tokenizer& trained_tokenizer() {
  static const Tokenizer tok = [] {
    auto t = Tokenizer::load(trained().dir.string());
    EXPECT_TRUE(t.ok()) << t.status().message();
    return std::move(t.value());
  }();
  return tok;
}

TEST(TokenizerWriter, LoadsWithTheDocumentedIdLayout) {
  const Tokenizer& tok = trained_tokenizer();
  const auto& specials = deepseek_special_tokens();
  const size_t n = trained().bpe.tokens.size();
  EXPECT_EQ(tok.vocab_size(), n + specials.size());
  EXPECT_EQ(tok.vocab_size(), trained_vocab_size(trained().bpe));
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_TRUE(tok.add_bos_by_default());
  EXPECT_TRUE(tok.chat_template().empty());
  for (int b = 0; b < 256; ++b) {
    ASSERT_NE(tok.token_bytes(3 + b), nullptr);
    EXPECT_EQ(*tok.token_bytes(3 + b), std::string(1, static_cast<char>(b)));
  }
  for (size_t k = 256; k < n; ++k) EXPECT_EQ(*tok.token_bytes(static_cast<int32_t>(3 + k)), trained().bpe.tokens[k]);
  for (size_t i = 0; i < specials.size(); ++i) {
    const int32_t id = i < 3 ? static_cast<int32_t>(i) : static_cast<int32_t>(n + i);
    EXPECT_EQ(tok.token_to_id(specials[i].content), id) << specials[i].content;
    EXPECT_EQ(tok.is_special(id), specials[i].special);
    // A special token inside text encodes as its single id.
    auto ids = tok.encode("Bonjour" + specials[i].content + "là").value();
    EXPECT_NE(std::find(ids.begin(), ids.end(), id), ids.end()) << specials[i].content;
    EXPECT_EQ(tok.decode(ids).value(), "Bonjour" + specials[i].content + "là");
  }
}

TEST(TokenizerWriter, SpecialTokensAndPreTokenizerAreDeepSeekV3s) {
  nlohmann::json v3 = nlohmann::json::parse(testing::read_file(testing::kTokenizerDir + "/tokenizer.json"));
  nlohmann::json ours = nlohmann::json::parse(testing::read_file((trained().dir / "tokenizer.json").string()));
  EXPECT_EQ(ours["pre_tokenizer"], v3["pre_tokenizer"]);
  EXPECT_EQ(ours["normalizer"], v3["normalizer"]);
  EXPECT_EQ(ours["decoder"], v3["decoder"]);
  EXPECT_EQ(ours["post_processor"], v3["post_processor"]);
  std::map<std::string, nlohmann::json> v3_added;
  for (auto a : v3["added_tokens"]) v3_added[a["content"].get<std::string>()] = a;
  size_t matched = 0;
  for (auto a : ours["added_tokens"]) {
    const std::string c = a["content"].get<std::string>();
    if (c == kThinkStart || c == kThinkEnd) continue;  // R1's, not in the V3 file
    ASSERT_TRUE(v3_added.count(c)) << c;
    nlohmann::json expected = v3_added[c];
    if (a["id"].get<int>() >= 3) expected["id"] = a["id"];  // only BOS/EOS/pad keep V3's ids
    EXPECT_EQ(a, expected);
    ++matched;
  }
  EXPECT_EQ(matched, deepseek_special_tokens().size() - 2);
  nlohmann::json v3cfg = nlohmann::json::parse(testing::read_file(testing::kTokenizerDir + "/tokenizer_config.json"));
  nlohmann::json cfg = nlohmann::json::parse(testing::read_file((trained().dir / "tokenizer_config.json").string()));
  EXPECT_FALSE(cfg.contains("chat_template"));
  for (const char* key : {"add_bos_token", "add_eos_token", "bos_token", "eos_token", "pad_token",
                          "tokenizer_class", "legacy", "clean_up_tokenization_spaces"})
    EXPECT_EQ(cfg[key], v3cfg[key]) << key;
  EXPECT_EQ(cfg["model_max_length"], 4096);
}

TEST(TokenizerWriter, TrainingWordsEncodeToTheTrainerSegmentation) {
  // The naive trainer's final split of every training word is what BPE encoding with the
  // written merges must give (ids shifted by the 3 leading special tokens).
  const Tokenizer& tok = trained_tokenizer();
  ASSERT_EQ(trained().ref.tokens, trained().bpe.tokens);
  size_t checked = 0;
  for (const auto& [word, seg] : trained().ref.segmentation) {
    std::vector<int32_t> expected;
    for (int32_t id : seg) expected.push_back(id + kLeadingSpecials);
    auto ids = tok.encode(word);
    ASSERT_TRUE(ids.ok());
    // Words containing added-token text are split out by the tokenizer; the trainer saw raw text.
    if (tok.token_to_id(word) >= 0 || word.find("<") != std::string::npos) continue;
    ASSERT_EQ(ids.value(), expected) << word;
    ++checked;
  }
  EXPECT_GT(checked, 1000u);
}

TEST(TokenizerWriter, RoundTripsArbitraryUtf8) {
  const Tokenizer& tok = trained_tokenizer();
  std::vector<std::string> texts = {
      "Où est l'hôtel ? Ça, c'est « très » français : élève, naïve, cœur, Noël.",
      "Emoji 😀👍🏽 🇫🇷 and ZWJ 👨‍👩‍👧, CJK 漢字かなカタカナ 한국어, Ελληνικά, русский, עברית, العربية",
      "  leading spaces\n\n\ttabs\r\nand 1234567 digits  ",
      "<｜User｜>Hi<｜Assistant｜><think>\nhmm</think>\n\nHello<｜end▁of▁sentence｜>",
      "",
  };
  std::mt19937 rng(5);
  for (int i = 0; i < 300; ++i) {
    std::string s;
    int n = 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) {
      uint32_t cp;
      switch (rng() % 4) {
        case 0: cp = 0x20 + rng() % 0x60; break;
        case 1: cp = 0x80 + rng() % 0x780; break;
        case 2: cp = 0x800 + rng() % 0xF800; break;
        default: cp = 0x10000 + rng() % 0x100000; break;
      }
      if (cp >= 0xD800 && cp < 0xE000) cp = 'x';
      utf8_append(s, cp);
    }
    texts.push_back(s);
  }
  for (const std::string& t : texts) {
    auto ids = tok.encode(t);
    ASSERT_TRUE(ids.ok()) << ids.status().message();
    EXPECT_EQ(tok.decode(ids.value()).value(), t);
  }
  // Learned merges compress: clearly fewer tokens than bytes on novel text.
  const std::string& corpus = test_corpus();
  const std::string prose = corpus.substr(0, corpus.find('\n', 20000));
  EXPECT_LT(tok.encode(prose).value().size(), prose.size() * 6 / 10);
}

TEST(TokenizerWriter, ModelDirectoryGetsTheV3ChatFormat) {
  const fs::path dir = trained().dir;
  {
    std::ofstream f(dir / "config.json");
    f << R"({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3"})";
  }
  auto f = detect_chat_format(dir.string());
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f.value(), ChatFormat::kV3);
  ChatRequest req;
  req.messages.push_back(text_message("user", "Bonjour"));
  auto prompt = render_chat(f.value(), req);
  ASSERT_TRUE(prompt.ok());
  auto ids = trained_tokenizer().encode(prompt.value()).value();
  const Tokenizer& tok = trained_tokenizer();
  EXPECT_EQ(ids.front(), tok.bos_id());
  EXPECT_NE(std::find(ids.begin(), ids.end(), tok.token_to_id(kUser)), ids.end());
  EXPECT_EQ(ids.back(), tok.token_to_id(kAssistant));
  fs::remove(dir / "config.json");
}

TEST(TokenizerWriter, OutputDirErrorsNameTheDirectory) {
  const fs::path file = trained().dir / "tokenizer.json";
  Status s = check_output_dir((file / "sub").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find((file / "sub").string()), std::string::npos) << s.message();
  EXPECT_FALSE(check_output_dir(file.string()).ok());
}

}  // namespace
}  // namespace dseek::tokenizer
